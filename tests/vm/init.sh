#!/bin/busybox sh
# /init of the test guest's OS images (tests/vm/run.sh builds them). The whole OS lives in the
# initramfs: busybox, bosun and its shared libraries, kernel modules. Lines starting with VM-
# are the markers the test asserts on.
#
# Disk: /dev/vda1 boot partition (GRUB, bosun.env), /dev/vda2 slot a, /dev/vda3 slot b,
# /dev/vda4 data partition (config repo, upgrade images, bosun's state, this test's counters).
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
while [ ! -b /dev/vda4 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
mount -t ext4 /dev/vda4 /data || fail "cannot mount the data partition /dev/vda4"
mount -t ext4 /dev/vda1 /boot || fail "cannot mount the boot partition /dev/vda1"
ip link set lo up
hostname vm-node

slot="$(sed -n 's/.*bosun\.slot=\([ab]\).*/\1/p' /proc/cmdline)"
version="$(cat /etc/os-version)"
boots=$(( $(cat /data/vm/boots 2>/dev/null || echo 0) + 1 ))
echo "$boots" >/data/vm/boots
sync
echo "VM-BOOT $boots slot=$slot version=$version"

if [ "$(cat /etc/vm-health)" = good ]; then
  # Stands in for K3s's kubelet: the real kubelet cannot run in this guest, so busybox httpd
  # serves the same endpoint (GET 127.0.0.1:10248/healthz → 200 "ok").
  printf ok >/www/healthz
  httpd -p 127.0.0.1:10248 -h /www && echo "VM-HEALTH kubelet stand-in up"
else
  echo "VM-HEALTH no kubelet endpoint in this image"
fi

mode="$(cat /data/vm/mode 2>/dev/null || echo upgrade)"
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
esac

fail "unknown mode $mode"
