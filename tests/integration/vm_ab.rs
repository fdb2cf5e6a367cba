//! End to end in a real VM: `tests/vm/run.sh` builds each OS version (Debian kernel plus a
//! busybox + bosun initramfs) as an OCI archive, makes slot images with `bosun image slot` and
//! one disk per scenario with `bosun image disk` (GPT, GRUB for BIOS and UEFI running
//! `boot/grub.cfg`, slots a and b, a data partition with the node's bare config repo and the
//! upgrade image), and boots it in qemu (TCG) with real reboots inside the guest, one qemu per
//! scenario:
//!
//! * `good`: v2-good is installed into slot b, trial-booted by GRUB, found healthy (kubelet
//!   stand-in), committed, and booted again;
//! * `bad`: v3-bad (no kubelet endpoint) times out on trial, is marked bad, GRUB boots a, and
//!   bosun reports it rolled back and quarantined without installing it again;
//! * `panic`: v4-panic never reaches userspace, GRUB's tries run out, and bosun on a detects the
//!   fallback and quarantines it;
//! * `readme` (UEFI, OVMF): the README's "From zero to an upgradable node" commands as written;
//!   the node follows a git:// repo on the host, the test pushes the upgrade, v2 is committed.
//!
//! In the guest `bosun daemon` fetches the repo, applies the node config and runs the
//! upgrade (install, trial, health gate, commit or rollback, fallback detection). The script
//! asserts on the guest's serial markers and on the GRUB environment and bosun state read back
//! from the image; on failure it prints the tail of the serial log, which this test passes on.
//! See `tests/vm/README.md`.
//!
//! Needs qemu-system-x86, seabios, ovmf, grub-pc-bin, grub-efi-amd64-bin, grub-common,
//! busybox-static, e2fsprogs, fdisk, dosfstools, mtools, zstd, binutils, git and apt-get access
//! to Debian's `linux-image-amd64` (downloaded once per kernel version into
//! `<target dir>/vm-cache`). A missing piece fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Scenarios run in one script invocation so the images are built once.
const SCENARIOS: &[&str] = &["good", "bad", "panic", "readme"];

fn target_dir() -> PathBuf {
    // <target>/debug/bosun
    Path::new(env!("CARGO_BIN_EXE_bosun"))
        .parent()
        .and_then(Path::parent)
        .expect("bosun binary lives in <target>/<profile>/")
        .to_path_buf()
}

#[test]
fn vm_ab_scenarios_boot_through_real_grub() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vm/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(SCENARIOS)
        .env("BOSUN", env!("CARGO_BIN_EXE_bosun"))
        .env("VM_CACHE", target_dir().join("vm-cache"))
        .env_remove("VM_WORK")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{} {:?} failed ({}):\n{stderr}",
        script.display(),
        SCENARIOS,
        out.status
    );
    for s in SCENARIOS {
        assert!(
            stderr.contains(&format!("vm: scenario {s} passed")),
            "scenario {s} did not report passing:\n{stderr}"
        );
    }
}
