#!/usr/bin/env bash
# Benchmark of fleet-safe rollouts: NODES (default 8) `bosun daemon` processes, each with its
# own root and node name, follow one repo served by `git daemon` on 127.0.0.1 and coordinate
# through one stand-in Kubernetes API server (`daemon/examples/kube_standin.rs`: the fleet
# tests' own stand-in, tests/integration/support/kube.rs, as a program; K3s and kube-apiserver
# cannot run here). Measures:
#   1. the time for the fleet to converge on one commit that changes the k3s config of every
#      node (each node: wait for a slot, cordon + drain, restart k3s (recorded, not run: the
#      roots are not /), health gate against a stand-in kubelet, uncordon, release) with
#      rollout.max_unavailable 1 and 2, median of REPS commits each, and their ratio;
#   2. the API requests per node per minute while the fleet is idle (goal: none), and while
#      every node waits for a maintenance window that is closed (goal: none);
#   3. from the API server's own request log: the most nodes ever cordoned at once.
#
#   bench/fleet/run.sh                                   # builds the release binaries first
#   BOSUN=… STANDIN=… bench/fleet/run.sh                 # use existing binaries
#   NODES=8 REPS=3 INTERVAL=2s IDLE_SECS=60 bench/fleet/run.sh
#   KEEP=/tmp/fleet bench/fleet/run.sh                   # keep the work dir (logs, requests.log)
#
# Needs: git, python3. Everything listens on 127.0.0.1 only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
NODES=${NODES:-8}
REPS=${REPS:-3}
INTERVAL=${INTERVAL:-2s}
IDLE_SECS=${IDLE_SECS:-60}
target="${CARGO_TARGET_DIR:-$top/target}"
if [ -z "${BOSUN:-}" ] || [ -z "${STANDIN:-}" ]; then
  (cd "$top" && cargo build --release --locked -q --bin bosun --example kube_standin)
fi
BOSUN=${BOSUN:-$target/release/bosun}
STANDIN=${STANDIN:-$target/release/examples/kube_standin}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then rm -rf "$KEEP"; cp -r "$work" "$KEEP"; fi
  rm -rf "$work"
}
trap cleanup EXIT

export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
# shellcheck source=../lib.sh
. "$here/../lib.sh"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The stand-in kubelet /healthz every node's health gate checks (K3s cannot run here).
start_standin_kubelet

# The stand-in API server: NODES Nodes, each with one evictable pod and one DaemonSet pod.
mkdir -p "$work/api"
"$STANDIN" "$work/api" "$NODES" &
pids+=($!)
for _ in $(seq 200); do [ -e "$work/api/kubeconfig" ] && break; sleep 0.05; done
requests="$work/api/requests.log"

repo="$work/base/fleet"
mkdir -p "$repo"
git -C "$repo" init -q -b main
# config TIER MAX_UNAVAILABLE [WINDOW_LINE]: a k3s label change for every node.
config() {
  cat > "$repo/config.yaml" <<YAML
k3os:
  labels:
    tier: "$1"
health:
  timeout: 60s
  interval: 200ms
  successes: 1
  checks:
  - type: kubelet
    url: http://127.0.0.1:$hport/healthz
rollout:
  group: bench
  max_unavailable: $2
  drain_on_restart: true
  lock_ttl: 1m
${3:-}
YAML
  git -C "$repo" add -A
  git -C "$repo" commit -q -m "tier $1, max_unavailable $2"
  git -C "$repo" rev-parse HEAD
}

gport=$(free_port)
"$(git --exec-path)/git-daemon" --listen=127.0.0.1 --port="$gport" --export-all --reuseaddr \
  --base-path="$work/base" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$gport") 2>/dev/null && break; sleep 0.05; done

applied() { # how many nodes have applied commit $1
  grep -l "\"last_applied_commit\": *\"$1\"" "$work"/node-*/state/status.json 2>/dev/null | wc -l
}
wait_applied() { # commit, timeout s
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(applied "$1")" -lt "$NODES" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "the fleet did not converge on $1 within $2 s" >&2
      tail -n 20 "$work"/node-*/daemon.log >&2
      exit 1
    fi
    sleep 0.05
  done
}
max_cordoned_since() { awk -v t="$1" '$1 >= t && $5 > m {m = $5} END {print m + 0}' "$requests"; }
requests_between() { awk -v a="$1" -v b="$2" '$1 >= a && $1 < b' "$requests" | wc -l; }

first=$(config v0 2)
for i in $(seq 0 $((NODES - 1))); do
  d="$work/node-$i"
  mkdir -p "$d/root/etc/bosun"
  cp "$work/api/kubeconfig" "$d/root/etc/bosun/kubeconfig"
  cat > "$d/agent.yaml" <<YAML
source:
  url: git://127.0.0.1:$gport/fleet
  ref: main
interval: $INTERVAL
node_name: node-$i
root: $d/root
state_dir: $d/state
metrics:
  enabled: false
coordination:
  backend: kubernetes
  kubeconfig: /etc/bosun/kubeconfig
YAML
  env -u JOURNAL_STREAM -u NOTIFY_SOCKET "$BOSUN" daemon --config "$d/agent.yaml" 2>"$d/daemon.log" &
  pids+=($!)
done
# The first commit restarts k3s everywhere too (and drains the pods); not measured.
wait_applied "$first" 300

declare -A times max_cordoned
for mu in 1 2; do
  runs=()
  max_cordoned[$mu]=0
  for r in $(seq "$REPS"); do
    t0=$(now_ms)
    c=$(config "mu$mu-$r" "$mu")
    wait_applied "$c" 600
    t1=$(now_ms)
    runs+=($((t1 - t0)))
    sleep 1 # the last Node patches land in the log
    m=$(max_cordoned_since "$t0")
    [ "$m" -gt "${max_cordoned[$mu]}" ] && max_cordoned[$mu]=$m
  done
  times[$mu]=$(printf '%s\n' "${runs[@]}" | median)
  echo "max_unavailable $mu: converged in ${runs[*]} ms (median ${times[$mu]} ms); at most ${max_cordoned[$mu]} nodes cordoned at once" >&2
done

# Idle: nothing pending; the last Node patches of the rollout are over.
sleep 3
t0=$(now_ms); sleep "$IDLE_SECS"; t1=$(now_ms)
idle=$(requests_between "$t0" "$t1")

# Waiting for a window that opens in 6 hours (every node: waiting-window).
start=$(date -u -d '+6 hours' +%H:%M)
c=$(config "window" 1 "  window: {days: [mon, tue, wed, thu, fri, sat, sun], start: \"$start\", length: 1h, timezone: UTC}")
deadline=$(( $(date +%s) + 120 ))
while [ "$(grep -l '"rollout_state": *"waiting-window"' "$work"/node-*/state/status.json 2>/dev/null | wc -l)" -lt "$NODES" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the nodes did not reach waiting-window" >&2; exit 1; }
  sleep 0.1
done
sleep 3
t2=$(now_ms); sleep "$IDLE_SECS"; t3=$(now_ms)
waiting=$(requests_between "$t2" "$t3")

per_node_min() { awk -v n="$1" -v k="$NODES" -v ms="$2" 'BEGIN {printf "%.2f", n / k / (ms / 60000)}'; }
echo "binary:                        $BOSUN"
echo "fleet:                         $NODES daemons, poll interval $INTERVAL (+10 % jitter), drain_on_restart, health gate against a stand-in kubelet"
echo "converge, max_unavailable 1:   median ${times[1]} ms over $REPS commits (at most ${max_cordoned[1]} cordoned at once)"
echo "converge, max_unavailable 2:   median ${times[2]} ms over $REPS commits (at most ${max_cordoned[2]} cordoned at once)"
echo "ratio (2 slots / 1 slot):      $(awk -v a="${times[2]}" -v b="${times[1]}" 'BEGIN {printf "%.2f", a / b}')"
echo "API requests, idle:            $idle in $(( (t1 - t0) / 1000 )) s = $(per_node_min "$idle" $((t1 - t0))) per node per minute"
echo "API requests, waiting-window:  $waiting in $(( (t3 - t2) / 1000 )) s = $(per_node_min "$waiting" $((t3 - t2))) per node per minute"
