#!/usr/bin/env bash
# Benchmark: installing the same zstd OS image into a slot file with bosun's streaming,
# verified install (`bosun upgrade install-image`) against plain shell pipelines, in the same
# run:
#   local: bosun --image PATH        vs  zstd -d -c IMAGE | dd of=SLOT bs=4M conv=fsync
#   http:  bosun --image URL         vs  curl -s URL | zstd -d | dd of=SLOT bs=4M conv=fsync
# (HTTP server: python3 -m http.server on 127.0.0.1.) Prints the best-of-ROUNDS throughput
# (uncompressed MB/s) of each, the ratio bosun/peer (goal >= 0.9) and bosun's peak RSS from
# GNU time ("Maximum resident set size").
#
#   bench/install/run.sh                        # 1024 MiB image, 3 rounds
#   SIZE_MIB=256 ROUNDS=5 bench/install/run.sh
#   BOSUN=target/release/bosun bench/install/run.sh   # use an existing binary
#
# Needs: zstd, curl, python3, GNU time (Debian packages zstd curl python3 time), openssl.
# bosun also checks the SHA-256 and fsyncs every 64 MiB; the peers check nothing and sync once
# at the end (conv=fsync), so the comparison favours the peers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-3}
if [ -z "${BOSUN:-}" ]; then
  (cd "$top" && cargo build --release --locked -q -p bosun)
  BOSUN="${CARGO_TARGET_DIR:-$top/target}/release/bosun"
fi
for t in zstd curl python3 openssl /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t (see the header of $0)" >&2; exit 1; }
done

work=$(mktemp -d)
srv_pid=
cleanup() { if [ -n "$srv_pid" ]; then kill "$srv_pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

# Deterministic image: per 64 MiB, 16 MiB pseudo-random (AES-CTR of zeros), 24 MiB zeros,
# 24 MiB base64 text of pseudo-random bytes (compressible, not trivial).
set +o pipefail # head closes the generators' pipes early
prng() { openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv "$1" </dev/zero 2>/dev/null; }
{
  for i in $(seq 0 $((SIZE_MIB / 64 - 1))); do
    iv=$(printf '%032x' "$i")
    prng "$iv" | head -c $((16 << 20))
    head -c $((24 << 20)) /dev/zero
    prng "${iv%?}f" | base64 -w 76 | head -c $((24 << 20))
  done
} >"$work/os.img"
set -o pipefail
zstd -q -3 -T0 "$work/os.img" -o "$work/os.img.zst"
raw_bytes=$(stat -c %s "$work/os.img")
zst_bytes=$(stat -c %s "$work/os.img.zst")
sha=$(sha256sum "$work/os.img.zst" | cut -d' ' -f1)
raw_sha=$(sha256sum "$work/os.img" | cut -d' ' -f1)
echo "image: $raw_bytes bytes, zstd -3: $zst_bytes bytes"

port=$((20000 + RANDOM % 20000))
(cd "$work" && exec python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
srv_pid=$!
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
url="http://127.0.0.1:$port/os.img.zst"

now() { date +%s%N; }
fresh_slot() { rm -f "$work/slot" "$work/state/install-progress.json"; : >"$work/slot"; mkdir -p "$work/state"; sync; }
check_slot() {
  [ "$(sha256sum "$work/slot" | cut -d' ' -f1)" = "$raw_sha" ] || { echo "$1: slot content is wrong" >&2; exit 1; }
}
best() { sort -n | head -1; }
mbps() { awk -v b="$raw_bytes" -v ns="$1" 'BEGIN {printf "%.0f", b / 1e6 / (ns / 1e9)}'; }

run_bosun() { # $1 = image; sets t (ns) and rss (KiB)
  fresh_slot
  local t0 t1
  t0=$(now)
  /usr/bin/time -v -o "$work/time.txt" "$BOSUN" upgrade install-image --image "$1" --sha256 "$sha" \
    --slot "$work/slot" --state-dir "$work/state" >/dev/null
  t1=$(now)
  t=$((t1 - t0))
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  check_slot bosun
}
run_peer() { # $1 = local|http
  fresh_slot
  local t0 t1
  t0=$(now)
  if [ "$1" = local ]; then
    zstd -q -d -c "$work/os.img.zst" | dd of="$work/slot" bs=4M conv=fsync status=none
  else
    curl -s "$url" | zstd -q -d | dd of="$work/slot" bs=4M iflag=fullblock conv=fsync status=none
  fi
  t1=$(now)
  t=$((t1 - t0))
  check_slot "$1 peer"
}

for mode in local http; do
  b=(); p=(); r=()
  src="$work/os.img.zst"; [ "$mode" = http ] && src="$url"
  for _ in $(seq "$ROUNDS"); do
    run_bosun "$src"; b+=("$t"); r+=("$rss")
    run_peer "$mode"; p+=("$t")
  done
  bt=$(printf '%s\n' "${b[@]}" | best)
  pt=$(printf '%s\n' "${p[@]}" | best)
  peak=$(printf '%s\n' "${r[@]}" | sort -n | tail -1)
  peer_name="zstd -d | dd"; [ "$mode" = http ] && peer_name="curl | zstd -d | dd"
  printf '%-5s bosun %5s MB/s   %-20s %5s MB/s   ratio %.2f   bosun peak RSS %s KiB\n' \
    "$mode" "$(mbps "$bt")" "$peer_name" "$(mbps "$pt")" \
    "$(awk -v a="$pt" -v b="$bt" 'BEGIN {print a / b}')" "$peak"
done
