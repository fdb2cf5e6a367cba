#!/usr/bin/env bash
# End-to-end A/B test in a real VM: real SeaBIOS, real GRUB running boot/grub.cfg, a real
# Debian kernel, real partitions on a virtio disk, real reboots, and bosun inside the guest.
# See tests/vm/README.md. Driven by tests/integration/vm_ab.rs; runnable alone:
#
#   BOSUN=target/debug/bosun tests/vm/run.sh [SCENARIO...]      (default: every scenario)
#
# Environment:
#   BOSUN      the bosun binary to put into the guest (required)
#   VM_CACHE   where kernel .debs are cached, keyed by version (default: ${TMPDIR:-/tmp}/bosun-vm-cache)
#   VM_WORK    work directory (default: a fresh temp dir, removed on success)
#   VM_TIMEOUT seconds one qemu run may take (default: 420)
#   VM_DRIVER  daemon (default) or step: see below
#
# No root, no loop devices: partitions are written into the disk image file at fixed offsets
# (sfdisk, mke2fs -d -E offset=, dd), and read back with debugfs.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
: "${BOSUN:?set BOSUN to the bosun binary to boot in the guest}"
BOSUN="$(realpath "$BOSUN")"
VM_CACHE="${VM_CACHE:-${TMPDIR:-/tmp}/bosun-vm-cache}"
VM_TIMEOUT="${VM_TIMEOUT:-420}"
# Who drives the upgrade in the guest: "daemon" (`bosun daemon`'s upgrade pass) or "step" (the
# init calls bosun's one-shot `upgrade step` and `health` once a second, next to the daemon).
VM_DRIVER="${VM_DRIVER:-daemon}"
# The config's health block: a short timeout so the bad image is rolled back quickly.
HEALTH_TIMEOUT=15
HEALTH_SUCCESSES=2

# Disk layout, in 512-byte sectors (MBR; GRUB's core.img lives in sectors 1..2047).
BOOT_START=2048;   BOOT_SIZE=16384      # 8 MiB   ext2 "bosun-boot": grub.cfg, bosun.cfg, bosun.env
A_START=18432;     SLOT_SIZE=131072     # 64 MiB  slot a (/dev/vda2)
B_START=149504                          # 64 MiB  slot b (/dev/vda3)
DATA_START=280576; DATA_SIZE=524288     # 256 MiB ext2 "bosun-data": config repo, images, state
DISK_SECTORS=$((DATA_START + DATA_SIZE))

log() { echo "vm: $*" >&2; }
die() { echo "vm: FAIL: $*" >&2; exit 1; }

need() {
  local tool pkg
  for spec in "$@"; do
    tool="${spec%%:*}"; pkg="${spec#*:}"
    command -v "$tool" >/dev/null || die "$tool not found: install the Debian package $pkg (listed in .ci/packages.txt)"
  done
}

# --- kernel ---------------------------------------------------------------------------------

# Downloads (once per version, into VM_CACHE) and unpacks Debian's kernel; sets KVER and KDIR.
fetch_kernel() {
  need apt-cache:apt apt-get:apt dpkg:dpkg
  local pkg
  pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)"
  [ -n "$pkg" ] || die "apt-cache cannot resolve linux-image-amd64 (run apt-get update)"
  KVER="${pkg#linux-image-}"
  KDIR="$VM_CACHE/$pkg"
  if [ ! -e "$KDIR/.unpacked" ]; then
    mkdir -p "$VM_CACHE"
    local deb
    deb="$(ls "$VM_CACHE/${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
    if [ -z "$deb" ]; then
      log "downloading $pkg into $VM_CACHE"
      (cd "$VM_CACHE" && apt-get download "$pkg" >&2) || die "apt-get download $pkg failed"
      deb="$(ls "$VM_CACHE/${pkg}"_*.deb | head -n1)"
    fi
    rm -rf "$KDIR.tmp" && mkdir -p "$KDIR.tmp"
    dpkg -x "$deb" "$KDIR.tmp"
    rm -rf "$KDIR" && mv "$KDIR.tmp" "$KDIR" && touch "$KDIR/.unpacked"
  fi
  [ -f "$KDIR/boot/vmlinuz-$KVER" ] || die "no kernel in $KDIR"
}

# Modules the initramfs insmods, in dependency order (Debian builds virtio and ext4 as modules).
MODULES="drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko
drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko
drivers/virtio/virtio_pci.ko drivers/block/virtio_blk.ko lib/crc16.ko fs/mbcache.ko
fs/jbd2/jbd2.ko crypto/crc32c_generic.ko fs/ext4/ext4.ko"

# --- guest OS images ------------------------------------------------------------------------

# Builds the initramfs tree shared by every OS version into $1: busybox, kernel modules, bosun
# with its shared libraries, the init script.
base_tree() {
  local t="$1" m lib
  mkdir -p "$t"/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc/bosun,proc,sys,dev,data,boot,tmp,run,var/lib,www}
  cp /bin/busybox "$t/bin/busybox"
  for m in $MODULES; do
    cp "$KDIR/lib/modules/$KVER/kernel/$m" "$t/lib/modules/"
    echo "$(basename "$m")" >>"$t/lib/modules/order"
  done
  objcopy --strip-all "$BOSUN" "$t/usr/bin/bosun"
  for lib in $(ldd "$BOSUN" | grep -o '/[^ ]*'); do
    mkdir -p "$t$(dirname "$lib")"
    cp -L "$lib" "$t$lib"
  done
  # The guest has no systemd: bosun's default reboot command (`systemctl reboot`) lands here.
  cat >"$t/usr/bin/systemctl" <<'EOF'
#!/bin/sh
case "$1" in
  reboot)
    # Counted on the data partition: the init prints the count on every boot (VM-BOOT).
    echo $(( $(cat /data/vm/bosun-reboots 2>/dev/null || echo 0) + 1 )) >/data/vm/bosun-reboots
    echo "VM-REBOOT requested by bosun" >/dev/console
    /bin/vm-reboot ;;
  *) echo "systemctl stand-in: $* (no systemd in the test guest)"; exit 0 ;;
esac
EOF
  chmod 755 "$t/usr/bin/systemctl"
  cp "$HERE/init.sh" "$t/init"
  chmod 755 "$t/init"
}

# Builds one OS version as an ext2 slot filesystem image: $1 name, $2 health (good|none|panic), $3 out.
os_image() {
  local name="$1" health="$2" out="$3" t="$WORK/os-$1"
  rm -rf "$t" && mkdir -p "$t/root/boot"
  if [ "$health" = panic ]; then
    # A kernel that never reaches bosun: its init exits at once, so the kernel panics
    # ("Attempted to kill init") and panic=1 reboots.
    mkdir -p "$t/initrd/bin"
    cp /bin/busybox "$t/initrd/bin/busybox"
    printf '#!/bin/busybox sh\necho "VM-PANIC-IMAGE version=%s: init exits"\nexit 1\n' "$name" >"$t/initrd/init"
    chmod 755 "$t/initrd/init"
  else
    cp -a "$WORK/base" "$t/initrd"
    echo "$name" >"$t/initrd/etc/os-version"
    echo "$health" >"$t/initrd/etc/vm-health"
  fi
  (cd "$t/initrd" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) >"$t/root/boot/initrd.img"
  cp "$KDIR/boot/vmlinuz-$KVER" "$t/root/boot/vmlinuz"
  echo "$name" >"$t/root/os-version"
  local kib=$(( $(du -sk "$t/root" | cut -f1) + 2048 ))
  rm -f "$out"
  mke2fs -q -F -t ext2 -b 4096 -L "os-$name" -d "$t/root" "$out" "${kib}k" >/dev/null
  rm -rf "$t"
  [ "$(stat -c %s "$out")" -le $((SLOT_SIZE * 512)) ] || die "image $name ($(stat -c %s "$out") bytes) does not fit a slot"
}

# --- disk -----------------------------------------------------------------------------------

# GRUB's boot.img and core.img (i386-pc), built once into $WORK.
grub_images() {
  need grub-mkimage:grub-pc-bin
  [ -f /usr/lib/grub/i386-pc/boot.img ] || die "/usr/lib/grub/i386-pc/boot.img missing: install grub-pc-bin"
  cat >"$WORK/early.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
search --no-floppy --label --set=root bosun-boot
set prefix=($root)/grub
EOF
  grub-mkimage -O i386-pc -o "$WORK/core.img" -c "$WORK/early.cfg" -p "(hd0,msdos1)/grub" \
    biosdisk part_msdos ext2 search search_label loadenv test linux serial terminal echo sleep \
    reboot halt normal configfile
  [ "$(stat -c %s "$WORK/core.img")" -lt $(( (BOOT_START - 1) * 512 )) ] || die "core.img does not fit before sector $BOOT_START"
}

# Assembles a scenario's disk: $1 dir holding boot/ and data/ staging trees. Writes $1/disk.img.
assemble_disk() {
  local d="$1" disk="$1/disk.img"
  rm -f "$disk"
  truncate -s $((DISK_SECTORS * 512)) "$disk"
  sfdisk -q "$disk" >/dev/null <<EOF
label: dos
start=$BOOT_START, size=$BOOT_SIZE, type=83, bootable
start=$A_START, size=$SLOT_SIZE, type=83
start=$B_START, size=$SLOT_SIZE, type=83
start=$DATA_START, size=$DATA_SIZE, type=83
EOF
  # boot.img's code (not the partition table), then core.img right after the MBR.
  dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
  dd if="$WORK/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
  mke2fs -q -F -t ext2 -L bosun-boot -d "$d/boot" -E offset=$((BOOT_START * 512)) "$disk" $((BOOT_SIZE / 2))k >/dev/null
  dd if="$WORK/v1.img" of="$disk" bs=1M seek=$((A_START * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
  mke2fs -q -F -t ext2 -L bosun-data -d "$d/data" -E offset=$((DATA_START * 512)) "$disk" $((DATA_SIZE / 2))k >/dev/null
}

# Reads a file from an ext2 partition of disk $1 (boot|data): path $3 → host file $4.
read_back() {
  local disk="$1" start size path="$3" out="$4" part
  part="$(dirname "$disk")/partition.img"
  case "$2" in
    boot) start=$BOOT_START; size=$BOOT_SIZE ;;
    data) start=$DATA_START; size=$DATA_SIZE ;;
  esac
  dd if="$disk" of="$part" bs=1M skip=$((start * 512)) count=$((size * 512)) iflag=skip_bytes,count_bytes status=none
  rm -f "$out"
  debugfs -R "dump $path $out" "$part" 2>/dev/null
  rm -f "$part"
  [ -f "$out" ]
}

# --- one scenario ---------------------------------------------------------------------------

run_qemu() {
  local d="$1"
  : >"$d/serial.log"
  set +e
  timeout --kill-after=5 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -m 512 -smp 1 \
    -display none -monitor none -nodefaults -serial "file:$d/serial.log" \
    -drive "file=$d/disk.img,format=raw,if=virtio" >"$d/qemu.out" 2>&1
  local rc=$?
  set -e
  if [ $rc -ne 0 ]; then
    tail_log "$d"
    [ $rc -eq 124 ] && die "qemu did not power off within ${VM_TIMEOUT}s (see serial log above)"
    die "qemu exited with $rc: $(cat "$d/qemu.out")"
  fi
}

tail_log() {
  echo "----- serial log tail ($1/serial.log) -----" >&2
  clean_log "$1" | tail -n 80 >&2
  echo "----- end of serial log -----" >&2
}

# Stages a scenario dir $1 with config-repo contents from stdin (config.yaml) and image $2 (or "").
stage_scenario() {
  local d="$1" image="$2"
  rm -rf "$d" && mkdir -p "$d/boot/grub" "$d/data/images" "$d/data/vm/root" "$d/data/bosun"
  cp "$REPO_ROOT/boot/grub.cfg" "$d/boot/grub/bosun.cfg"
  # The image's grub.cfg: slots by partition (images are written to either slot, so their
  # filesystem labels say nothing about the slot), a short panic delay, serial console.
  cat >"$d/boot/grub/grub.cfg" <<'EOF'
set bosun_dev_a=hd0,msdos2
set bosun_dev_b=hd0,msdos3
set bosun_root_a=/dev/vda2
set bosun_root_b=/dev/vda3
set bosun_cmdline="console=ttyS0 loglevel=4 panic=1"
set bosun_reboot_delay=0
source ${prefix}/bosun.cfg
EOF
  grub-editenv "$d/boot/grub/bosun.env" create
  if [ -n "$image" ]; then ln "$WORK/$image.img" "$d/data/images/$image.img"; fi
  mkdir -p "$d/config"
  cat >"$d/config/config.yaml"
  cp -a "$d/config" "$d/data/vm/config"
  git init -q -b main "$d/config"
  git -C "$d/config" add -A
  git -C "$d/config" -c user.name=vm -c user.email=vm@localhost -c commit.gpgsign=false commit -q -m "node config"
  git clone -q --bare "$d/config" "$d/data/repo.git"
  cp "$HERE/agent.yaml" "$d/data/bosun/agent.yaml"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# The serial log without GRUB's terminal escapes and carriage returns.
clean_log() { tr -d '\r' <"$1/serial.log" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

expect_log() {
  local d="$1" pattern="$2" what="$3"
  clean_log "$d" | grep -qE "$pattern" || { tail_log "$d"; die "$what: no line matching /$pattern/ in the serial log"; }
}

count_log() { clean_log "$1" | grep -cE "$2" || true; }

expect_env() {
  local d="$1" var="$2" want="$3" got
  got="$(grub-editenv "$d/bosun.env" list | sed -n "s/^$var=//p")"
  [ "$got" = "$want" ] || { tail_log "$d"; grub-editenv "$d/bosun.env" list >&2; die "grubenv after the run: $var='$got', expected '$want'"; }
}

# --- scenarios ------------------------------------------------------------------------------

# GRUB honours a trial set from the host and falls back when the tries run out; bosun runs in
# the guest on both slots and renders the node config from the data partition's repo.
scenario_smoke() {
  local d="$WORK/smoke"
  stage_scenario "$d" "" <<'EOF'
hostname: vm-node
write_files:
  - path: /etc/vm-smoke
    content: "rendered by bosun in the guest\n"
EOF
  echo smoke >"$d/data/vm/mode"
  grub-editenv "$d/boot/grub/bosun.env" set bosun_primary=a bosun_good_a=1 bosun_trial=b bosun_tries=1 bosun_good_b=0
  assemble_disk "$d"
  dd if="$WORK/v1.img" of="$d/disk.img" bs=1M seek=$((B_START * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
  run_qemu "$d"
  read_back "$d/disk.img" boot /grub/bosun.env "$d/bosun.env" || die "cannot read bosun.env back"
  expect_log "$d" '^bosun: booting slot b' "GRUB boots the trial slot"
  expect_log "$d" '^VM-BOOT 1 slot=b version=v1' "the trial kernel reaches the init on slot b"
  expect_log "$d" '^VM-SMOKE bosun apply ok' "bosun applies the config in the guest"
  expect_log "$d" '^VM-BOOT 2 slot=a version=v1' "after the trial's one try, GRUB boots the primary"
  expect_log "$d" '^VM-POWEROFF' "the guest powers off"
  expect_env "$d" bosun_tries 0
  expect_env "$d" bosun_trial b
  expect_env "$d" bosun_primary a
  read_back "$d/disk.img" data /vm/root/etc/vm-smoke "$d/smoke-file" || die "the guest did not record the applied file"
  grep -q "rendered by bosun in the guest" "$d/smoke-file" || die "applied file has the wrong content: $(cat "$d/smoke-file")"
}

upgrade_config() {
  local image="$1" tries="$2"
  cat <<EOF
write_files:
  - path: /etc/vm-config/from-git
    content: "config commit naming $image"
upgrade:
  version: "$image"
  image: /data/images/$image.img
  sha256: $(sha "$WORK/$image.img")
  tries: $tries
health:
  timeout: ${HEALTH_TIMEOUT}s
  interval: 1s
  successes: $HEALTH_SUCCESSES
  checks:
    - type: kubelet
EOF
}

# Stages and boots an upgrade scenario: node on slot a running v1, config naming image $2 with
# $3 tries; $4 "confirm": reboot once more after the upgrade settled.
upgrade_run() {
  local d="$1" image="$2" tries="$3"
  upgrade_config "$image" "$tries" | stage_scenario "$d" "$image"
  if [ "${4:-}" = confirm ]; then touch "$d/data/vm/confirm-boot"; fi
  echo "$VM_DRIVER" >"$d/data/vm/mode"
  # The step driver plays the daemon's health wait with the config's numbers.
  echo "$HEALTH_TIMEOUT" >"$d/data/vm/health-timeout"
  echo "$HEALTH_SUCCESSES" >"$d/data/vm/health-successes"
  assemble_disk "$d"
  run_qemu "$d"
  read_back "$d/disk.img" boot /grub/bosun.env "$d/bosun.env" || die "cannot read bosun.env back"
  read_back "$d/disk.img" data /vm/final "$d/final.json" || { tail_log "$d"; die "the guest wrote no final upgrade status"; }
  # bosun's persisted state, read back from the data partition and reported by bosun on the host.
  mkdir -p "$d/state"
  read_back "$d/disk.img" data /bosun/state/upgrade.json "$d/state/upgrade.json" || { tail_log "$d"; die "no /bosun/state/upgrade.json on the data partition"; }
  # The command line of the guest's last boot.
  echo "bosun.slot=$(clean_log "$d" | sed -n 's/^VM-FINAL .* slot=\([ab]\) .*/\1/p' | tail -n1 | grep . || echo a)" >"$d/cmdline"
  "$BOSUN" upgrade status --json --state-dir "$d/state" --grub-env "$d/bosun.env" --cmdline "$d/cmdline" \
    --slot-a "$d/disk.img" --slot-b "$d/disk.img" >"$d/state.json" || die "bosun upgrade status on the read-back state failed"
  log "$(basename "$d"): $(grub-editenv "$d/bosun.env" list | tr '\n' ' ')"
}

# The log must hold these lines in this order (other lines may come between).
expect_sequence() {
  local d="$1"; shift
  local rest; rest="$(clean_log "$d")"
  for pattern in "$@"; do
    local line
    line="$(printf '%s\n' "$rest" | grep -nE "$pattern" | head -n1 | cut -d: -f1 || true)"
    [ -n "$line" ] || { tail_log "$d"; die "expected, in order: $*; missing /$pattern/ after the previous marker"; }
    rest="$(printf '%s\n' "$rest" | tail -n +$((line + 1)))"
  done
}

# The status the guest printed last, and the state read back from the disk, both match.
expect_final() {
  local d="$1" pattern="$2" what="$3" f
  for f in final.json state.json; do
    grep -qE "$pattern" "$d/$f" || { tail_log "$d"; cat "$d/$f" >&2; die "$what: $f has no /$pattern/"; }
  done
}

# Slot b (/dev/vda3) holds exactly the image's bytes.
expect_slot_b() {
  local d="$1" image="$2" size got
  size="$(stat -c %s "$WORK/$image.img")"
  got="$(dd if="$d/disk.img" bs=1M skip=$((B_START * 512)) count="$size" iflag=skip_bytes,count_bytes status=none | sha256sum | cut -d' ' -f1)"
  [ "$got" = "$(sha "$WORK/$image.img")" ] || die "slot b does not hold $image (sha256 $got)"
}

# 1. The good image: installed to b, trial boot of b, health passes, committed, b boots next.
scenario_good() {
  local d="$WORK/good"
  upgrade_run "$d" v2-good 3 confirm
  expect_sequence "$d" \
    'VM-BOOT 1 slot=a version=v1 bosun-reboots=0' 'VM-STATE idle' 'bosun: booting slot b' \
    'VM-BOOT 2 slot=b version=v2-good bosun-reboots=1' 'VM-HEALTH kubelet stand-in up' \
    'VM-SETTLED state=committed slot=b version=v2-good' \
    'bosun: booting slot b' 'VM-BOOT 3 slot=b version=v2-good bosun-reboots=1' \
    'VM-CONFIG applied by bosun daemon: config commit naming v2-good' 'VM-FINAL state=committed slot=b version=v2-good' 'VM-POWEROFF'
  expect_slot_b "$d" v2-good
  expect_env "$d" bosun_primary b
  expect_env "$d" bosun_good_b 1
  expect_env "$d" bosun_trial ""
  expect_final "$d" '"state": "committed"' "committed"
  expect_final "$d" 'v2-good' "runs v2-good"
}

# 2. The bad image (no kubelet endpoint): trial boot of b, health times out, bosun marks b bad
#    and reboots, GRUB boots a, bosun reports rolled back and does not install again.
scenario_bad() {
  local d="$WORK/bad"
  upgrade_run "$d" v3-bad 3
  expect_sequence "$d" \
    'VM-BOOT 1 slot=a version=v1 bosun-reboots=0' 'VM-STATE idle' 'bosun: booting slot b' \
    'VM-BOOT 2 slot=b version=v3-bad bosun-reboots=1' 'VM-HEALTH no kubelet endpoint' \
    'bosun: booting slot a' 'VM-BOOT 3 slot=a version=v1 bosun-reboots=2' \
    'VM-SETTLED state=rolled_back slot=a version=v1' \
    'VM-FINAL state=rolled_back slot=a version=v1' 'VM-POWEROFF'
  expect_sequence "$d" 'VM-BOOT 3 slot=a' 'VM-CONFIG applied by bosun daemon: config commit naming v3-bad' 'VM-FINAL'
  # The trial is recorded before the health wait, so status says `trial` while it is judged.
  expect_sequence "$d" 'VM-BOOT 2 slot=b' 'VM-STATE trial slot=b' 'bosun: booting slot a'
  [ "$(count_log "$d" 'slot=b version=')" = 1 ] || die "slot b booted more than once"
  expect_slot_b "$d" v3-bad
  expect_env "$d" bosun_primary a
  expect_env "$d" bosun_good_b 0
  expect_env "$d" bosun_trial ""
  expect_final "$d" '"state": "rolled_back"' "rolled back"
  expect_final "$d" 'v3-bad' "names the quarantined image"
  expect_final "$d" '"kind": "unhealthy"' "the reason is the failed health check"
  expect_final "$d" '"refused": [1-9]' "bosun refused the quarantined image on later passes (no retry)"
  expect_final "$d" '"state": "rolled_back"' "still rolled back after those passes"
}

# 3. The image whose kernel never reaches bosun: GRUB's tries run out on b, GRUB boots a, bosun
#    sees the fallback and quarantines the image.
scenario_panic() {
  local d="$WORK/panic"
  upgrade_run "$d" v4-panic 2
  expect_sequence "$d" \
    'VM-BOOT 1 slot=a version=v1 bosun-reboots=0' 'VM-STATE idle' \
    'bosun: booting slot b' 'VM-PANIC-IMAGE' 'bosun: booting slot b' 'VM-PANIC-IMAGE' \
    'bosun: booting slot a' 'VM-BOOT 2 slot=a version=v1 bosun-reboots=1' \
    'VM-SETTLED state=rolled_back slot=a version=v1' \
    'VM-FINAL state=rolled_back slot=a version=v1' 'VM-POWEROFF'
  expect_sequence "$d" 'VM-BOOT 2 slot=a' 'VM-CONFIG applied by bosun daemon: config commit naming v4-panic' 'VM-FINAL'
  [ "$(count_log "$d" 'VM-PANIC-IMAGE')" = 2 ] || die "the panicking image booted other than twice (tries: 2)"
  expect_env "$d" bosun_primary a
  expect_env "$d" bosun_good_b 0
  expect_final "$d" '"state": "rolled_back"' "rolled back"
  expect_final "$d" 'fallback' "the reason is the bootloader fallback"
  expect_final "$d" 'v4-panic' "names the quarantined image"
  expect_final "$d" '"refused": [1-9]' "bosun refused the quarantined image on later passes (no retry)"
}

# --- main -----------------------------------------------------------------------------------

main() {
  need qemu-system-x86_64:qemu-system-x86 sfdisk:fdisk mke2fs:e2fsprogs debugfs:e2fsprogs \
    grub-editenv:grub-common busybox:busybox-static git:git objcopy:binutils timeout:coreutils
  [ -f /usr/share/seabios/bios-256k.bin ] || die "SeaBIOS missing: install the Debian package seabios"
  local keep="${VM_WORK:+1}"
  WORK="${VM_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/bosun-vm.XXXXXX")}"
  mkdir -p "$WORK"
  local scenarios=("$@")
  [ ${#scenarios[@]} -gt 0 ] || scenarios=(good bad panic)
  local t0=$SECONDS
  fetch_kernel
  grub_images
  rm -rf "$WORK/base" && base_tree "$WORK/base"
  os_image v1 good "$WORK/v1.img"
  os_image v2-good good "$WORK/v2-good.img"
  os_image v3-bad none "$WORK/v3-bad.img"
  os_image v4-panic panic "$WORK/v4-panic.img"
  log "images built in $((SECONDS - t0))s (kernel $KVER)"
  # Scenarios run side by side (one qemu each, single-threaded TCG); VM_JOBS=1 runs them in turn.
  local s pids=() failed=()
  for s in "${scenarios[@]}"; do
    declare -F "scenario_$s" >/dev/null || die "unknown scenario $s"
  done
  for s in "${scenarios[@]}"; do
    (
      t1=$SECONDS
      log "scenario $s"
      "scenario_$s"
      log "scenario $s passed in $((SECONDS - t1))s"
    ) >"$WORK/$s.out" 2>&1 &
    pids+=($!)
    if [ "${VM_JOBS:-3}" = 1 ]; then wait "${pids[-1]}" || true; fi
  done
  local i
  for i in "${!scenarios[@]}"; do
    wait "${pids[$i]}" || failed+=("${scenarios[$i]}")
    cat "$WORK/${scenarios[$i]}.out" >&2
  done
  [ ${#failed[@]} -eq 0 ] || die "scenarios failed: ${failed[*]} (work dir: $WORK)"
  log "all passed in $((SECONDS - t0))s"
  [ -n "$keep" ] || rm -rf "$WORK"
}

main "$@"
exit
