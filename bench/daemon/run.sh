#!/usr/bin/env bash
# Benchmark of `bosun daemon` against example-repo served by a local `git daemon`:
#   1. idle RSS (VmRSS from /proc) after the first reconcile (goal: <= 8 MiB),
#   2. CPU per idle poll (utime+stime from /proc/<pid>/stat over POLLS polls),
#   3. commit-to-applied latency: with the poll interval, and with SIGHUP right after the
#      commit (which isolates fetch + verify + plan + apply from the wait for the next poll);
#   4. RSS right after those 2 x COMMITS applies (all within 5 minutes), and IDLE_WAIT seconds
#      later (default 360: the held-back code page-out must have happened; goal <= 8 MiB).
# VERIFY=ssh or VERIFY=openpgp signs every commit and turns verification on (default: off).
# DRIFT=off turns drift detection off (default: on, with its inotify watcher thread).
# Peers in the same run: `git ls-remote` (CPU of an idle check) and `git pull --ff-only`
# (fetch + checkout of the same commits); the script prints bosun/peer ratios.
# K3s is replaced by a stand-in kubelet /healthz (python3 http.server on 127.0.0.1), so the
# first apply takes the real health-gated path.
#
#   bench/daemon/run.sh                       # builds the release binary first
#   BOSUN=/path/to/bosun bench/daemon/run.sh  # use an existing binary
#   POLLS=50 INTERVAL_MS=100 COMMITS=10 bench/daemon/run.sh
#   DAEMON_LOG=/tmp/d.log SMAPS=/tmp/smaps bench/daemon/run.sh  # keep the log / smaps copies
#     (SMAPS after the first apply, SMAPS.burst after the applies, SMAPS.idle after IDLE_WAIT)
#   VERIFY=ssh IDLE_WAIT=0 bench/daemon/run.sh  # signed commits, skip the 6-minute idle wait
#
# Needs: git, curl, python3 (ssh-keygen for VERIFY=ssh, gpg for VERIFY=openpgp). Everything
# listens on 127.0.0.1 only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
POLLS=${POLLS:-30}
INTERVAL_MS=${INTERVAL_MS:-200}
COMMITS=${COMMITS:-5}
IDLE_WAIT=${IDLE_WAIT:-360}
VERIFY=${VERIFY:-off}
DRIFT=${DRIFT:-on}
case "$DRIFT" in
  on) drift="" ;;
  off) drift="drift: {enabled: false}" ;;
  *) echo "DRIFT must be on or off" >&2; exit 1 ;;
esac
if [ -z "${BOSUN:-}" ]; then
  (cd "$top" && cargo build --release --locked -q)
  BOSUN="${CARGO_TARGET_DIR:-$top/target}/release/bosun"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${DAEMON_LOG:-}" ]; then cp "$work/daemon.log" "$DAEMON_LOG" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
# shellcheck source=../lib.sh
. "$here/../lib.sh"
now() { date +%s%N; }

# K3s cannot run here; a stand-in kubelet /healthz on loopback lets the first reconcile take the
# real health-gated path (example-repo changes the k3s configuration, so its apply is gated).
start_standin_kubelet

repo="$work/base/fleet"
mkdir -p "$repo" "$work/root"
cp -r "$top/example-repo/." "$repo/"
cat > "$repo/groups/zz-bench-health.yaml" <<YAML
match: ["*"]
health:
  interval: 100ms
  successes: 1
  checks:
  - type: kubelet
    url: http://127.0.0.1:$hport/healthz
YAML
# Commits, signed as VERIFY asks; the agent config's trust roots to match.
sign=()
verification=""
case "$VERIFY" in
  off) ;;
  ssh)
    ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/signer"
    echo "bench@example.invalid namespaces=\"git\" $(cat "$work/signer.pub")" >"$work/allowed_signers"
    sign=(-c gpg.format=ssh -c "user.signingkey=$work/signer")
    verification="verification: {mode: head, allowed_signers: $work/allowed_signers}"
    ;;
  openpgp)
    export GNUPGHOME="$work/gpg"
    mkdir -m 700 "$GNUPGHOME"
    gpg --batch --quiet --passphrase '' --quick-gen-key 'bench <bench@example.invalid>' ed25519 sign never
    gpg --batch --quiet --armor --export bench@example.invalid >"$work/ops.asc"
    sign=(-c gpg.program=gpg -c user.signingkey=bench@example.invalid)
    verification="verification: {mode: head, openpgp_keys: [$work/ops.asc]}"
    ;;
  *) echo "VERIFY must be off, ssh or openpgp" >&2; exit 1 ;;
esac
commit() { # $1 = message
  git -C "$repo" add -A
  if [ "$VERIFY" = off ]; then git -C "$repo" commit -q -m "$1"; else git -C "$repo" "${sign[@]}" commit -q -S -m "$1"; fi
}
git -C "$repo" init -q -b main
commit "example-repo"

gport=$(free_port)
"$(git --exec-path)/git-daemon" --listen=127.0.0.1 --port="$gport" --export-all --reuseaddr \
  --base-path="$work/base" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$gport") 2>/dev/null && break; sleep 0.05; done

mport=$(free_port)
cat > "$work/agent.yaml" <<YAML
source:
  url: git://127.0.0.1:$gport/fleet
  ref: main
interval: ${INTERVAL_MS}ms
jitter_percent: 0
node_name: edge-01
root: $work/root
state_dir: $work/state
metrics:
  listen: 127.0.0.1:$mport
$verification
$drift
YAML

metric() { curl -fsS "http://127.0.0.1:$mport/metrics" | awk -v k="$1" '$1 == k {print $2}'; }
env -u JOURNAL_STREAM -u NOTIFY_SOCKET "$BOSUN" daemon --config "$work/agent.yaml" 2>"$work/daemon.log" &
pid=$!
pids+=("$pid")
for _ in $(seq 400); do
  [ "$(metric 'bosun_reconcile_total{result="success"}' 2>/dev/null || echo 0)" = 1 ] && break
  sleep 0.05
done
[ "$(metric 'bosun_reconcile_total{result="success"}')" = 1 ] || { cat "$work/daemon.log"; echo "first reconcile did not happen" >&2; exit 1; }
sleep 2
# SMAPS=FILE keeps a copy of /proc/<pid>/smaps for a per-mapping breakdown.
if [ -n "${SMAPS:-}" ]; then cp "/proc/$pid/smaps" "$SMAPS"; fi

rss_kib=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
hwm_kib=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
anon_kib=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status)
file_kib=$(awk '/^RssFile/ {print $2}' /proc/$pid/status)
threads=$(awk '/^Threads/ {print $2}' /proc/$pid/status)

tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
p0=$(metric bosun_polls_total); c0=$(cpu); b0=$(metric bosun_fetch_bytes_total)
while [ "$(metric bosun_polls_total)" -lt $((p0 + POLLS)) ]; do sleep 0.1; done
p1=$(metric bosun_polls_total); c1=$(cpu); b1=$(metric bosun_fetch_bytes_total)
cpu_ms_per_poll=$(awk -v c=$((c1 - c0)) -v p=$((p1 - p0)) -v t="$tck" 'BEGIN {printf "%.2f", c * 1000 / t / p}')

lat_poll=(); lat_hup=(); pull_ms=()
git clone -q "git://127.0.0.1:$gport/fleet" "$work/peer"
for i in $(seq "$COMMITS"); do
  for mode in poll hup; do
    f="etc/bench/$mode-$i"
    printf 'write_files:\n- path: /%s\n  content: "%s"\n' "$f" "$i" > "$repo/groups/zz-bench.yaml"
    printf 'match: ["*"]\n' >> "$repo/groups/zz-bench.yaml"
    commit "bench $mode $i"
    t0=$(now)
    [ "$mode" = hup ] && kill -HUP "$pid"
    while [ ! -e "$work/root/$f" ]; do sleep 0.005; done
    t1=$(now)
    if [ "$mode" = poll ]; then lat_poll+=($(( (t1 - t0) / 1000000 ))); else lat_hup+=($(( (t1 - t0) / 1000000 ))); fi
  done
  # The peer catches up with the same two commits.
  t0=$(now); git -C "$work/peer" pull -q --ff-only; t1=$(now)
  pull_ms+=($(( (t1 - t0) / 1000000 )))
done
rss_after_kib=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
if [ -n "${SMAPS:-}" ]; then cp "/proc/$pid/smaps" "$SMAPS.burst"; fi
if [ "$IDLE_WAIT" -gt 0 ]; then
  sleep "$IDLE_WAIT"
  kill -0 "$pid" || { cat "$work/daemon.log"; echo "daemon died while idle" >&2; exit 1; }
  rss_idle_kib=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
  if [ -n "${SMAPS:-}" ]; then cp "/proc/$pid/smaps" "$SMAPS.idle"; fi
  releases=$(metric bosun_code_page_releases_total)
fi

# Peers, same machine, same run, same server:
# - idle check: `git ls-remote` of the ref (what a cron job running git does each poll), CPU of
#   the whole process (children's utime+stime, via bash's `times`);
# - update: `git pull --ff-only` of the same commits into a clone (no verify, no apply).
peer_times=$(
  for _ in $(seq "$POLLS"); do git ls-remote "git://127.0.0.1:$gport/fleet" refs/heads/main >/dev/null; done
  times
)
peer_cpu_ms=$(echo "$peer_times" | awk -v p="$POLLS" 'NR == 2 {
  split($1, u, "m"); split($2, s, "m"); sub("s", "", u[2]); sub("s", "", s[2])
  printf "%.2f", ((u[1] * 60 + u[2]) + (s[1] * 60 + s[2])) * 1000 / p }')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
hup_median=$(printf '%s\n' "${lat_hup[@]}" | median)
pull_median=$(printf '%s\n' "${pull_ms[@]}" | median)

echo "binary:                      $BOSUN (verification: $VERIFY, drift: $DRIFT)"
echo "idle RSS after first apply:  $((rss_kib / 1024)).$(( (rss_kib % 1024) * 10 / 1024 )) MiB ($rss_kib KiB: anonymous $anon_kib KiB, file-backed $file_kib KiB; peak $hwm_kib KiB; $threads threads)"
echo "idle CPU per poll:           $cpu_ms_per_poll ms (over $((p1 - p0)) polls at ${INTERVAL_MS} ms; pack bytes fetched meanwhile: $((b1 - b0)))"
echo "  peer: git ls-remote:       $peer_cpu_ms ms CPU per call; ratio bosun/peer $(ratio "$cpu_ms_per_poll" "$peer_cpu_ms")"
echo "commit to applied (poll):    median $(printf '%s\n' "${lat_poll[@]}" | median) ms, max $(printf '%s\n' "${lat_poll[@]}" | sort -n | tail -1) ms (interval ${INTERVAL_MS} ms, $COMMITS commits)"
echo "commit to applied (SIGHUP):  median $hup_median ms, max $(printf '%s\n' "${lat_hup[@]}" | sort -n | tail -1) ms"
echo "  peer: git pull --ff-only:  median $pull_median ms (fetch + checkout of the same 2 commits, no verify/apply); ratio bosun/peer $(ratio "$hup_median" "$pull_median")"
echo "RSS after $((2 * COMMITS)) applies:      $rss_after_kib KiB"
if [ "$IDLE_WAIT" -gt 0 ]; then
  echo "idle RSS ${IDLE_WAIT} s after $((2 * COMMITS)) applies: $((rss_idle_kib / 1024)).$(( (rss_idle_kib % 1024) * 10 / 1024 )) MiB ($rss_idle_kib KiB; code page releases so far: $releases; goal <= 8 MiB)"
fi
