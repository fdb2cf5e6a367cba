#!/usr/bin/env bash
# End-to-end A/B test in a real VM: real firmware (SeaBIOS, or OVMF for UEFI), real GRUB running
# boot/grub.cfg, a real Debian kernel, real partitions on a virtio disk, real reboots, and bosun
# inside the guest. The disks are built by bosun itself: each OS version is packed as an OCI
# archive (tests/vm/oci-archive.sh), turned into a slot image by `bosun image slot`, and the
# node's disk is made by `bosun image disk`. See tests/vm/README.md. Driven by
# tests/integration/vm_ab.rs; runnable alone:
#
#   BOSUN=target/debug/bosun tests/vm/run.sh [SCENARIO...]      (default: good bad panic readme)
#   BOSUN=target/debug/bosun tests/vm/run.sh oci-archive VERSION OUT.tar   (the test OS as an OCI archive)
#
# Environment:
#   BOSUN      the bosun binary to put into the guest and to build the images with (required)
#   VM_CACHE   where kernel .debs are cached, keyed by version (default: ${TMPDIR:-/tmp}/bosun-vm-cache)
#   VM_WORK    work directory (default: a fresh temp dir, removed on success)
#   VM_TIMEOUT seconds one qemu run may take (default: 420)
#   VM_DRIVER  daemon (default) or step: see below
#
# No root, no loop devices: `bosun image disk` writes the partitions into the disk image file;
# results are read back with mtools (the ESP) and debugfs (the data partition).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
BOSUN="${BOSUN:-$(command -v bosun || true)}"
: "${BOSUN:?set BOSUN to the bosun binary to boot in the guest (or put bosun on PATH)}"
BOSUN="$(realpath "$BOSUN")"
VM_CACHE="${VM_CACHE:-${TMPDIR:-/tmp}/bosun-vm-cache}"
VM_TIMEOUT="${VM_TIMEOUT:-420}"
# Who drives the upgrade in the guest: "daemon" (`bosun daemon`'s upgrade pass) or "step" (the
# init calls bosun's one-shot `upgrade step` and `health` once a second, next to the daemon).
VM_DRIVER="${VM_DRIVER:-daemon}"
# The config's health block: a short timeout so the bad image is rolled back quickly.
HEALTH_TIMEOUT=15
HEALTH_SUCCESSES=2
# Every scenario's disk has the same slots (every image must fit one) and data partition.
IMAGE_SIZE=64M
SLOT_SIZE=96M
DATA_SIZE=256M
# Extra kernel arguments (bosun_cmdline): serial console, reboot 1 s after a panic.
CMDLINE="console=ttyS0 loglevel=4 panic=1"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

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
fs/jbd2/jbd2.ko crypto/crc32c_generic.ko fs/ext4/ext4.ko fs/fat/fat.ko fs/fat/vfat.ko
fs/nls/nls_cp437.ko fs/nls/nls_ascii.ko fs/nls/nls_utf8.ko net/core/failover.ko
drivers/net/net_failover.ko drivers/net/virtio_net.ko"

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

# Builds one OS version's root filesystem as two OCI layer directories under $3: base/ (the
# kernel, os-release) and bosun/ (the initramfs holding the whole test OS, bosun and its
# enabled unit, which `bosun image slot` checks for). $1 name, $2 health (good|none|panic).
os_layers() {
  local name="$1" health="$2" t="$3"
  rm -rf "$t" && mkdir -p "$t/base/boot" "$t/base/etc" "$t/bosun/boot" "$t/bosun/usr/bin" \
    "$t/bosun/lib/systemd/system" "$t/bosun/etc/systemd/system/multi-user.target.wants"
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
  (cd "$t/initrd" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) >"$t/bosun/boot/initrd.img"
  rm -rf "$t/initrd"
  cp "$KDIR/boot/vmlinuz-$KVER" "$t/base/boot/vmlinuz"
  printf 'NAME="bosun test OS"\nID=bosun-test\n' >"$t/base/etc/os-release"
  echo "$name" >"$t/base/os-version"
  cp "$WORK/base/usr/bin/bosun" "$t/bosun/usr/bin/bosun"
  cp "$REPO_ROOT/systemd/bosun.service" "$t/bosun/lib/systemd/system/bosun.service"
  ln -s /lib/systemd/system/bosun.service "$t/bosun/etc/systemd/system/multi-user.target.wants/bosun.service"
}

# The test OS version $1 (health $3, default good) as an OCI archive $2: what `docker save` of
# a Dockerfile-built image gives (the README's no-Docker path).
oci_archive() {
  local name="$1" out="$2"
  os_layers "$name" "${3:-good}" "$WORK/layers-$name"
  "$HERE/oci-archive.sh" "$out" "$WORK/layers-$name/base" "$WORK/layers-$name/bosun"
  rm -rf "$WORK/layers-$name"
}

# Builds one OS version's slot image $WORK/$1.img.zst with `bosun image slot` from its OCI
# archive, and its raw bytes $WORK/$1.raw (what bosun must write into a slot).
os_image() {
  local name="$1" health="$2"
  oci_archive "$name" "$WORK/$name.oci.tar" "$health"
  # 64 MiB: the tree (~48 MiB) plus room; what bosun writes into a slot on every upgrade.
  "$BOSUN" image slot --oci "$WORK/$name.oci.tar" --version "$name" --out "$WORK/$name.img.zst" \
    --size "$IMAGE_SIZE" --zstd-level 1 >"$WORK/$name.slot.txt" || die "bosun image slot $name failed"
  rm -f "$WORK/$name.oci.tar"
  zstd -dqf "$WORK/$name.img.zst" -o "$WORK/$name.raw"
}

# --- disk -----------------------------------------------------------------------------------

# Assembles a scenario's disk $1/disk.img with `bosun image disk` from slot image v1 and the
# data partition staged in $1/data.
assemble_disk() {
  local d="$1"
  "$BOSUN" image disk --slot "$WORK/v1.img.zst" --out "$d/disk.img" --slot-size "$SLOT_SIZE" \
    --data-size "$DATA_SIZE" --data-dir "$d/data" --serial --cmdline "$CMDLINE" --no-qcow2 \
    >"$d/disk.txt" || die "bosun image disk failed"
}

# Start sector and length of partition $2 of disk $1 (from sfdisk's dump).
part_geom() {
  sfdisk -d "$1" | sed -n "s|^$1$2 : start= *\([0-9]*\), size= *\([0-9]*\),.*|\1 \2|p"
}

# Reads a file back from disk $1: partition esp (FAT, mtools) or data (ext4, debugfs), path
# $3 → host file $4.
read_back() {
  local disk="$1" path="$3" out="$4" geom start size part
  rm -f "$out"
  case "$2" in
    esp)
      geom="$(part_geom "$disk" 2)"; start="${geom% *}"
      MTOOLS_SKIP_CHECK=1 mcopy -n -i "$disk@@$((start * 512))" "::$path" "$out" 2>/dev/null || true ;;
    data)
      geom="$(part_geom "$disk" 5)"; start="${geom% *}"; size="${geom#* }"
      part="$(dirname "$disk")/partition.img"
      dd if="$disk" of="$part" bs=1M skip=$((start * 512)) count=$((size * 512)) iflag=skip_bytes,count_bytes status=none
      debugfs -R "dump $path $out" "$part" 2>/dev/null
      rm -f "$part" ;;
  esac
  [ -f "$out" ]
}

# Replaces file $2 on the ESP of disk $1 with host file $3.
write_esp() {
  local geom start
  geom="$(part_geom "$1" 2)"; start="${geom% *}"
  MTOOLS_SKIP_CHECK=1 mcopy -o -i "$1@@$((start * 512))" "$3" "::$2"
}

# --- one scenario ---------------------------------------------------------------------------

# Boots disk $1/disk.img until the guest powers off. Firmware: SeaBIOS, or OVMF (UEFI) when
# $1/firmware says uefi. Extra qemu arguments: $1/qemu-args (one per line), e.g. a network.
run_qemu() {
  local d="$1" fw=() extra=()
  : >"$d/serial.log"
  if [ "$(cat "$d/firmware" 2>/dev/null)" = uefi ]; then
    cp "$OVMF_VARS" "$d/ovmf-vars.fd"
    fw=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
        -drive "if=pflash,format=raw,unit=1,file=$d/ovmf-vars.fd")
  fi
  if [ -f "$d/qemu-args" ]; then mapfile -t extra <"$d/qemu-args"; fi
  set +e
  timeout --kill-after=5 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -m 512 -smp 1 \
    -display none -monitor none -nodefaults -serial "file:$d/serial.log" "${fw[@]}" "${extra[@]}" \
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

# Stages a scenario dir $1 with config-repo contents from stdin (config.yaml) and image $2 (or
# ""): the data partition's tree ($1/data) with the bare config repo, the image and the agent
# config. The boot side (GRUB, grub.cfg, the environment) comes from `bosun image disk`.
stage_scenario() {
  local d="$1" image="$2"
  rm -rf "$d" && mkdir -p "$d/data/images" "$d/data/vm/root" "$d/data/bosun"
  if [ -n "$image" ]; then ln "$WORK/$image.img.zst" "$d/data/images/$image.img.zst"; fi
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
  stage_scenario "$d" "" <<'EOF2'
hostname: vm-node
write_files:
  - path: /etc/vm-smoke
    content: "rendered by bosun in the guest\n"
EOF2
  echo smoke >"$d/data/vm/mode"
  assemble_disk "$d"
  # A trial of b with one try, set from the host, and v1 in slot b too.
  read_back "$d/disk.img" esp /grub/bosun.env "$d/bosun.env" || die "cannot read bosun.env"
  grub-editenv "$d/bosun.env" set bosun_primary=a bosun_good_a=1 bosun_trial=b bosun_tries=1 bosun_good_b=0
  write_esp "$d/disk.img" /grub/bosun.env "$d/bosun.env"
  local geom; geom="$(part_geom "$d/disk.img" 4)"
  dd if="$WORK/v1.raw" of="$d/disk.img" bs=1M seek=$((${geom% *} * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
  run_qemu "$d"
  read_back "$d/disk.img" esp /grub/bosun.env "$d/bosun.env" || die "cannot read bosun.env back"
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
  image: /data/images/$image.img.zst
  sha256: $(sha "$WORK/$image.img.zst")
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
# $3 tries; $4 "confirm": reboot once more after the upgrade settled; $5 firmware (bios|uefi).
upgrade_run() {
  local d="$1" image="$2" tries="$3"
  upgrade_config "$image" "$tries" | stage_scenario "$d" "$image"
  if [ "${4:-}" = confirm ]; then touch "$d/data/vm/confirm-boot"; fi
  echo "${5:-bios}" >"$d/firmware"
  echo "$VM_DRIVER" >"$d/data/vm/mode"
  # The step driver plays the daemon's health wait with the config's numbers.
  echo "$HEALTH_TIMEOUT" >"$d/data/vm/health-timeout"
  echo "$HEALTH_SUCCESSES" >"$d/data/vm/health-successes"
  assemble_disk "$d"
  run_qemu "$d"
  collect_state "$d"
}

# Reads the GRUB environment, the guest's final status and bosun's state back from $1/disk.img.
collect_state() {
  local d="$1"
  read_back "$d/disk.img" esp /grub/bosun.env "$d/bosun.env" || die "cannot read bosun.env back"
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

# Slot b (/dev/vda4) holds exactly the image's (decompressed) bytes.
expect_slot_b() {
  local d="$1" image="$2" size got geom
  size="$(stat -c %s "$WORK/$image.raw")"
  geom="$(part_geom "$d/disk.img" 4)"
  got="$(dd if="$d/disk.img" bs=1M skip=$((${geom% *} * 512)) count="$size" iflag=skip_bytes,count_bytes status=none | sha256sum | cut -d' ' -f1)"
  [ "$got" = "$(sha "$WORK/$image.raw")" ] || die "slot b does not hold $image (sha256 $got)"
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

# The README's "From zero to an upgradable node", run as written: its two marked shell blocks
# from README.md, in a scratch dir, with `bosun` on PATH. Only qemu-system-x86_64 is wrapped
# (a shell function): TCG, the serial console to a file instead of the terminal, in the
# background under `timeout`, so the test can push the upgrade once the node is up.
scenario_readme() {
  local d="$WORK/readme"
  rm -rf "$d" && mkdir -p "$d/tmp"
  readme_block build >"$d/build.sh"
  readme_block push >"$d/push.sh"
  [ -s "$d/build.sh" ] && [ -s "$d/push.sh" ] || die "README.md has no marked zero-to-node blocks"
  : >"$d/serial.log"
  set +e
  (
    set -e
    # Whatever happens, no git daemon or qemu outlives the scenario.
    trap '[ -f "$d/qemu.pid" ] && kill "$(cat "$d/qemu.pid")" 2>/dev/null; true' EXIT
    cd "$REPO_ROOT"
    export PATH="$(dirname "$BOSUN"):$PATH" TMPDIR="$d/tmp"
    export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=vm GIT_AUTHOR_EMAIL=vm@localhost \
      GIT_COMMITTER_NAME=vm GIT_COMMITTER_EMAIL=vm@localhost
    qemu-system-x86_64() {
      local args=() a
      for a in "$@"; do [ "$a" = -nographic ] || args+=("$a"); done
      timeout --kill-after=5 "$VM_TIMEOUT" "$(type -P qemu-system-x86_64)" -accel tcg -display none \
        -monitor none -serial "file:$d/serial.log" "${args[@]}" >"$d/qemu.out" 2>&1 &
      echo $! >"$d/qemu.pid"
      echo "$PWD" >"$d/scratch"
    }
    # shellcheck disable=SC1090
    source "$d/build.sh"
    wait_log "$d" 'VM-CONFIG applied by bosun daemon' 240 || { kill "$(cat "$d/qemu.pid")" 2>/dev/null; exit 1; }
    # shellcheck disable=SC1090
    source "$d/push.sh"
    rc=0
    wait "$(cat "$d/qemu.pid")" || rc=$?
    rm -f "$d/qemu.pid"
    [ $rc -eq 0 ] || { cat "$d/qemu.out" >&2; exit $rc; }
  )
  local rc=$?
  set -e
  [ $rc -eq 0 ] || { tail_log "$d"; die "the README's commands failed (exit $rc, see above)"; }
  expect_sequence "$d" \
    'VM-NET eth0 up' 'VM-BOOT 1 slot=a version=v1 ' 'VM-CONFIG applied by bosun daemon: managed by bosun' \
    'bosun: booting slot b' 'VM-BOOT 2 slot=b version=v2 ' 'VM-SETTLED state=committed slot=b version=v2' \
    'VM-FINAL state=committed slot=b version=v2' 'VM-POWEROFF'
  local scratch; scratch="$(cat "$d/scratch")"
  mv "$scratch/node.img" "$d/disk.img"
  read_back "$d/disk.img" esp /grub/bosun.env "$d/bosun.env" || die "cannot read bosun.env back"
  expect_env "$d" bosun_primary b
  expect_env "$d" bosun_good_b 1
  expect_env "$d" bosun_trial ""
  zstd -dqf "$scratch/os-v2.img.zst" -o "$WORK/readme-v2.raw"
  expect_slot_b "$d" readme-v2
}

# The shell block of README.md that follows the line `<!-- zero-to-node: $1 -->`.
readme_block() {
  awk -v tag="<!-- zero-to-node: $1 -->" '
    $0 == tag { armed = 1; next }
    armed && /^```sh$/ { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }' "$REPO_ROOT/README.md"
}

# Waits up to $3 seconds for a line matching $2 in the serial log of $1.
wait_log() {
  local i
  for ((i = 0; i < $3; i++)); do
    clean_log "$1" | grep -qE "$2" && return 0
    sleep 1
  done
  echo "vm: no /$2/ in the serial log after $3 s" >&2
  return 1
}

# --- main -----------------------------------------------------------------------------------

# Prepares $WORK with the kernel and the shared initramfs tree.
prepare() {
  WORK="${VM_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/bosun-vm.XXXXXX")}"
  mkdir -p "$WORK"
  fetch_kernel
  rm -rf "$WORK/base" && base_tree "$WORK/base"
}

main() {
  need qemu-system-x86_64:qemu-system-x86 sfdisk:fdisk mke2fs:e2fsprogs debugfs:e2fsprogs \
    grub-editenv:grub-common busybox:busybox-static git:git objcopy:binutils timeout:coreutils \
    mcopy:mtools mkfs.vfat:dosfstools grub-mkimage:grub-common zstd:zstd
  [ -f /usr/share/seabios/bios-256k.bin ] || die "SeaBIOS missing: install the Debian package seabios"
  [ -f /usr/lib/grub/i386-pc/boot.img ] || die "GRUB for BIOS missing: install the Debian package grub-pc-bin"
  [ -d /usr/lib/grub/x86_64-efi ] || die "GRUB for UEFI missing: install the Debian package grub-efi-amd64-bin"
  [ -f "$OVMF_CODE" ] || die "OVMF missing: install the Debian package ovmf"
  local keep="${VM_WORK:+1}"
  if [ "${1:-}" = oci-archive ]; then
    [ $# -eq 3 ] || die "usage: tests/vm/run.sh oci-archive VERSION OUT.tar"
    local out; out="$(realpath -m "$3")"
    prepare
    oci_archive "$2" "$out"
    [ -n "$keep" ] || rm -rf "$WORK"
    return
  fi
  local scenarios=("$@")
  [ ${#scenarios[@]} -gt 0 ] || scenarios=(good bad panic readme)
  local t0=$SECONDS
  prepare
  os_image v1 good
  os_image v2-good good
  os_image v3-bad none
  os_image v4-panic panic
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
    if [ "${VM_JOBS:-4}" = 1 ]; then wait "${pids[-1]}" || true; fi
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
