#!/bin/busybox sh
# /init of the test guest's OS images (tests/vm/run.sh builds them). The whole OS lives in the
# initramfs: busybox, bosun and its shared libraries, kernel modules. Lines starting with VM-
# are the markers the test asserts on.
#
# Disk (made by `bosun image disk`): /dev/vda1 BIOS boot partition, /dev/vda2 ESP (GRUB,
# grub/bosun.env; mounted at /boot), /dev/vda3 slot a, /dev/vda4 slot b, /dev/vda5 data
# partition (config repo, upgrade images, bosun's agent config and state, this test's counters).
/bin/busybox --install -s /bin
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" || echo "VM-ERROR insmod $m"; done

cat >/bin/vm-reboot <<'EOF'
#!/bin/sh
sync
umount /boot /data 2>/dev/null || { mount -o remount,ro /boot; mount -o remount,ro /data; }
sync
reboot -f
EOF
cat >/bin/vm-poweroff <<'EOF'
#!/bin/sh
sync
umount /boot /data 2>/dev/null || { mount -o remount,ro /boot; mount -o remount,ro /data; }
sync
echo "VM-POWEROFF"
poweroff -f
EOF
chmod 755 /bin/vm-reboot /bin/vm-poweroff

fail() { echo "VM-ERROR $*"; /bin/vm-poweroff; }

n=0
while [ ! -b /dev/vda5 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
mount -t ext4 /dev/vda5 /data || fail "cannot mount the data partition /dev/vda5"
mount -t vfat /dev/vda2 /boot || fail "cannot mount the ESP /dev/vda2"
mkdir -p /data/vm
ip link set lo up
# With a network card (qemu user networking, the README scenario): the guest's only peer is
# the host's git daemon on 127.0.0.1, forwarded by qemu to 10.0.2.100:9418.
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && echo "VM-NET eth0 up"
fi
hostname vm-node

slot="$(sed -n 's/.*bosun\.slot=\([ab]\).*/\1/p' /proc/cmdline)"
version="$(cat /etc/os-version)"
boots=$(( $(cat /data/vm/boots 2>/dev/null || echo 0) + 1 ))
echo "$boots" >/data/vm/boots
sync
echo "VM-BOOT $boots slot=$slot version=$version bosun-reboots=$(cat /data/vm/bosun-reboots 2>/dev/null || echo 0)"

if [ "$(cat /etc/vm-health)" = good ]; then
  # Stands in for K3s's kubelet: the real kubelet cannot run in this guest, so busybox httpd
  # serves the same endpoint (GET 127.0.0.1:10248/healthz → 200 "ok").
  printf ok >/www/healthz
  httpd -p 127.0.0.1:10248 -h /www && echo "VM-HEALTH kubelet stand-in up"
else
  echo "VM-HEALTH no kubelet endpoint in this image"
fi

# The upgrade lifecycle state bosun persisted (idle, downloading, staged, trial, committed,
# rolled_back, failed, …), read through `bosun upgrade status --json`.
upgrade_state() {
  bosun upgrade status --json --state-dir /data/bosun/state --grub-env /boot/grub/bosun.env \
      --slot-a /dev/vda3 --slot-b /dev/vda4 >/tmp/status.json 2>/tmp/status.err ||
    { echo "VM-ERROR bosun upgrade status: $(cat /tmp/status.err)"; return; }
  sed -n 's/^ *"state": "\([a-z_]*\)",*$/\1/p' /tmp/status.json | head -n1
}

BOSUN_NODE="--state-dir /data/bosun/state --grub-env /boot/grub/bosun.env --slot-a /dev/vda3 --slot-b /dev/vda4"

# Driver "step": the init plays the daemon's loop with bosun's one-shot commands, once a
# second: `bosun health` (the config's checks, one round) gives the verdict while the state is
# trial (healthy after `successes` passes in a row, unhealthy once the trial is older than
# health.timeout), and `bosun upgrade step` advances the lifecycle (install, trial, reboot,
# commit, mark bad, fallback detection, quarantine) exactly as the daemon's upgrade pass does.
health_passes=0
trial_since=""
uptime_s() { cut -d. -f1 /proc/uptime; }
step_once() {
  verdict=pending
  if [ "$1" = trial ]; then
    [ -n "$trial_since" ] || trial_since=$(uptime_s)
    if bosun health --repo /data/vm/config --hostname vm-node --state-dir /data/bosun/state \
        >/tmp/health.out 2>&1; then
      health_passes=$((health_passes + 1))
    else
      health_passes=0
    fi
    if [ $health_passes -ge "$(cat /data/vm/health-successes)" ]; then
      verdict=healthy
    elif [ $(( $(uptime_s) - trial_since )) -ge "$(cat /data/vm/health-timeout)" ]; then
      verdict=unhealthy
      echo "VM-HEALTH timed out after $(( $(uptime_s) - trial_since ))s: $(tr '\n' ' ' </tmp/health.out)"
    fi
  fi
  # shellcheck disable=SC2086
  # Straight to the console: a step that reboots leaves no pipe to flush.
  bosun upgrade step $BOSUN_NODE --config /data/vm/config/config.yaml --health "$verdict" \
      --reason "health checks failed for $(cat /data/vm/health-timeout)s" ||
    echo "VM-ERROR bosun upgrade step failed"
}

# Watches the upgrade until it settles (committed, rolled back or failed), then lets bosun run
# a few more passes (a retry would show as a VM-STATE change) and, once the daemon applied the
# node config on this boot, powers off. With
# /data/vm/confirm-boot, the guest first reboots once more when it settles, to show which slot
# GRUB boots next. $1: the driver, "daemon" (bosun daemon with the agent config) or "step"
# (above).
watch_upgrade() {
  # Both drivers run the GitOps loop: it fetches the bare repo on the data partition and
  # applies the node config (write_files) to this guest.
  echo "VM-DAEMON start"
  bosun daemon --config /data/bosun/agent.yaml --log-format plain >/dev/console 2>&1 &
  last=""
  applied=""
  settled_polls=0
  t=0
  while [ $t -lt "${VM_BOOT_BOUND:-150}" ]; do
    st="$(upgrade_state)"
    # The node config reached this boot's root: the test scenarios' configs write
    # /etc/vm-config/from-git, the README's writes /etc/motd.
    if [ -z "$applied" ]; then
      for f in /etc/vm-config/from-git /etc/motd; do
        if [ -z "$applied" ] && [ -f "$f" ]; then
          applied=1
          echo "VM-CONFIG applied by bosun daemon: $(head -n1 "$f")"
        fi
      done
    fi
    if [ "$st" != "$last" ]; then echo "VM-STATE $st slot=$slot t=${t}s"; last="$st"; fi
    case "$st" in
      committed|rolled_back|failed)
        settled_polls=$((settled_polls + 1))
        if [ ! -e /data/vm/settled ]; then
          echo "VM-SETTLED state=$st slot=$slot version=$version"
          cp /tmp/status.json /data/vm/settled
          sync
          if [ -e /data/vm/confirm-boot ]; then
            echo "VM-REBOOT by the test init (confirm the next boot)"
            /bin/vm-reboot
          fi
        elif [ $settled_polls -gt "${VM_CONFIRM_POLLS:-4}" ] && [ -n "$applied" ]; then
          cp /tmp/status.json /data/vm/final
          echo "VM-FINAL state=$st slot=$slot version=$version"
          /bin/vm-poweroff
        fi
        ;;
      *) settled_polls=0 ;;
    esac
    [ "$1" = step ] && step_once "$st"
    sleep 1
    t=$((t + 1))
  done
  echo "VM-TIMEOUT no settled upgrade state after ${t}s on slot $slot"
  cp /tmp/status.json /data/vm/final 2>/dev/null
  /bin/vm-poweroff
}

# No mode file (the README scenario's disk): the daemon drives, as on a real node.
mode="$(cat /data/vm/mode 2>/dev/null || echo daemon)"
case "$mode" in
smoke)
  # bosun runs in the guest (its libraries were found) and applies the node config from the
  # data partition under a scratch root; the host reads the result back.
  if bosun apply --repo /data/vm/config --hostname vm-node --root /data/vm/root \
      --state-dir /data/vm/state; then
    echo "VM-SMOKE bosun apply ok"
  else
    echo "VM-SMOKE bosun apply failed"
  fi
  if [ "$boots" -ge 2 ]; then /bin/vm-poweroff; fi
  echo "VM-REBOOT by the test init"
  /bin/vm-reboot
  ;;
daemon|step)
  watch_upgrade "$mode"
  ;;
esac

fail "unknown mode $mode"
