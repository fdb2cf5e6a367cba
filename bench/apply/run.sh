#!/usr/bin/env bash
# Benchmark: N write_files entries applied into an empty root by bosun, against Debian's
# cloud-init write_files module on the same input, in the same run. Also times bosun's no-op
# re-plan of the same N files. Prints medians and ratios.
#
#   bench/apply/run.sh            # N=1000, 5 rounds
#   N=5000 ROUNDS=3 bench/apply/run.sh
#   BOSUN=target/release/bosun bench/apply/run.sh   # use an existing binary
#
# Needs: python3 and the Debian package cloud-init (apt-get install cloud-init).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
N=${N:-1000}
ROUNDS=${ROUNDS:-5}
if [ -z "${BOSUN:-}" ]; then
  (cd "$top" && cargo build --release --locked -q)
  BOSUN="${CARGO_TARGET_DIR:-$top/target}/release/bosun"
fi
/usr/bin/python3 -c 'import cloudinit' 2>/dev/null || { echo "cloud-init is not installed (apt-get install cloud-init)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$here/gen.py" "$N" "$work"

now() { date +%s%N; }
# shellcheck source=../lib.sh
. "$here/../lib.sh"
ms() { awk -v ns="$1" 'BEGIN {printf "%.1f", ns/1e6}'; }

bosun_t=(); syncfs_t=(); ci_t=(); noop_t=()
for r in $(seq "$ROUNDS"); do
  rm -rf "$work/b" "$work/s" "$work/c"; mkdir -p "$work/b" "$work/s" "$work/c"
  sync
  t0=$(now); "$BOSUN" apply --repo "$work/repo" --hostname bench --root "$work/s" --durability syncfs >/dev/null 2>&1; t1=$(now)
  syncfs_t+=($((t1 - t0)))
  sync
  t0=$(now); "$BOSUN" apply --repo "$work/repo" --hostname bench --root "$work/b" --durability fsync >/dev/null 2>&1; t1=$(now)
  bosun_t+=($((t1 - t0)))
  t0=$(now); "$BOSUN" plan --repo "$work/repo" --hostname bench --root "$work/b" >/dev/null 2>&1; t1=$(now)
  noop_t+=($((t1 - t0)))
  sync
  t0=$(now); /usr/bin/python3 "$here/cloud_init_peer.py" "$work/cloud-init.json" "$work/c" 2>/dev/null; t1=$(now)
  ci_t+=($((t1 - t0)))
done
count=$(find "$work/c/bench" -type f | wc -l)
[ "$count" = "$N" ] || { echo "cloud-init wrote $count files, expected $N" >&2; exit 1; }
b=$(printf '%s\n' "${bosun_t[@]}" | median)
sf=$(printf '%s\n' "${syncfs_t[@]}" | median)
c=$(printf '%s\n' "${ci_t[@]}" | median)
n=$(printf '%s\n' "${noop_t[@]}" | median)
echo "files: $N, rounds: $ROUNDS (medians, whole processes)"
echo "bosun apply (fsync per file, journaled): $(ms "$b") ms"
echo "bosun apply (one syncfs, journaled):     $(ms "$sf") ms"
echo "cloud-init write_files (no fsync):       $(ms "$c") ms"
awk -v b="$b" -v c="$c" 'BEGIN {printf "ratio bosun(fsync)/cloud-init: %.2f\n", b/c}'
awk -v b="$sf" -v c="$c" 'BEGIN {printf "ratio bosun(syncfs)/cloud-init: %.2f\n", b/c}'
echo "bosun no-op re-plan:                     $(ms "$n") ms"
awk -v n="$n" -v c="$c" 'BEGIN {printf "ratio no-op plan/cloud-init write: %.2f\n", n/c}'
