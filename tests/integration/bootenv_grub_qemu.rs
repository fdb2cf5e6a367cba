//! `boot/grub.cfg` run by real GRUB (i386-pc, in qemu with TCG) against environments bosun
//! wrote, then the environment GRUB saved read back by bosun: the bootloader half of the
//! contract, end to end.
//!
//! The slot filesystems (ext2, labelled bosun-a / bosun-b) hold a file that is not a kernel,
//! so every `linux` fails: the serial log shows which slots GRUB tried in which order, and
//! that it then reboots (qemu runs with -no-reboot, so a reboot ends the run; sitting at a
//! prompt would hit the timeout). Needs grub-common, grub-pc-bin, qemu-system-x86, e2fsprogs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bosun::bootenv::{BootEnv, BootState, GrubEnv, Slot, Trial};

use super::bootenv_interop::tool;

const LNXBOOT: &str = "/usr/lib/grub/i386-pc/lnxboot.img";

struct GrubVm {
    dir: tempfile::TempDir,
    /// GRUB core image in Linux boot format (lnxboot.img + core.img), for qemu -kernel.
    grub: PathBuf,
    /// Contents of the boot filesystem: grub/grub.cfg and grub/bosun.env.
    staging: PathBuf,
}

impl GrubVm {
    fn new() -> GrubVm {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(
            Path::new(LNXBOOT).exists(),
            "{LNXBOOT} missing: install the Debian package grub-pc-bin (listed in .ci/packages.txt)"
        );
        let early = d.join("early.cfg");
        std::fs::write(
            &early,
            "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
             search --no-floppy --label --set=root bosun-boot\nset prefix=($root)/grub\n",
        )
        .unwrap();
        let core = d.join("core.img");
        tool(
            "grub-mkimage",
            &[
                "-O",
                "i386-pc",
                "-o",
                p(&core),
                "-c",
                p(&early),
                "-p",
                "(hd0)/grub",
                "biosdisk",
                "ext2",
                "search",
                "search_label",
                "loadenv",
                "test",
                "linux",
                "serial",
                "terminal",
                "echo",
                "sleep",
                "reboot",
                "halt",
                "normal",
            ],
        );
        let mut grub = std::fs::read(LNXBOOT).unwrap();
        grub.extend(std::fs::read(&core).unwrap());
        let grub_path = d.join("grub.lnx");
        std::fs::write(&grub_path, grub).unwrap();

        for slot in ["a", "b"] {
            let root = d.join(format!("root-{slot}"));
            std::fs::create_dir_all(root.join("boot")).unwrap();
            std::fs::write(root.join("boot/vmlinuz"), "not a kernel\n").unwrap();
            mkfs(
                &root,
                &format!("bosun-{slot}"),
                &d.join(format!("{slot}.img")),
            );
        }
        let staging = d.join("boot");
        std::fs::create_dir_all(staging.join("grub")).unwrap();
        let fragment =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../boot/grub.cfg"))
                .unwrap();
        std::fs::write(
            staging.join("grub/grub.cfg"),
            format!("set bosun_env=($root)/grub/bosun.env\nset bosun_reboot_delay=0\n{fragment}"),
        )
        .unwrap();
        GrubVm {
            dir,
            grub: grub_path,
            staging,
        }
    }

    fn env(&self) -> GrubEnv {
        GrubEnv::new(self.staging.join("grub/bosun.env"))
    }

    /// Boots GRUB once on a fresh boot filesystem holding the current env, copies the env
    /// GRUB saved back into the staging dir, and returns the slots GRUB tried, in order.
    fn boot(&self) -> Vec<Slot> {
        let d = self.dir.path();
        let boot_img = d.join("boot.img");
        mkfs(&self.staging, "bosun-boot", &boot_img);
        let serial = d.join("serial.txt");
        let _ = std::fs::remove_file(&serial);
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-machine", "accel=tcg", "-m", "128", "-display", "none"])
            .args(["-monitor", "none", "-no-reboot", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(&self.grub)
            .args(drive(&boot_img, 0))
            .args(drive(&d.join("a.img"), 1))
            .args(drive(&d.join("b.img"), 2))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let log = crate::support::run_qemu(qemu, &serial, "a GRUB reboot");
        assert!(
            log.contains("bosun: no bootable slot; rebooting"),
            "GRUB did not reach the reboot fallback; serial log:\n{log}"
        );
        let saved = self.staging.join("grub/bosun.env");
        tool(
            "debugfs",
            &[
                "-R",
                &format!("dump /grub/bosun.env {}", p(&saved)),
                p(&boot_img),
            ],
        );
        log.lines()
            .filter_map(|l| l.trim().rsplit_once("bosun: booting slot "))
            .map(|(_, s)| s.trim().parse().unwrap())
            .collect()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn drive(img: &Path, index: u32) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=ide,index={index}", img.display()),
    ]
}

fn mkfs(root: &Path, label: &str, img: &Path) {
    let _ = std::fs::remove_file(img);
    tool(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext2",
            "-L",
            label,
            "-d",
            p(root),
            p(img),
            "4M",
        ],
    );
}

#[test]
fn grub_cfg_runs_the_contract_under_real_grub() {
    use Slot::{A, B};
    let vm = GrubVm::new();
    let env = vm.env();
    let trial = |tries_left| {
        Some(Trial {
            slot: B,
            tries_left,
        })
    };

    // Trial of b with 2 tries: GRUB decrements and saves before trying b, then falls back
    // to the primary a when b does not load.
    let started = env.set_trial(B, 2).unwrap();
    assert_eq!(vm.boot(), vec![B, A]);
    assert_eq!(
        env.read().unwrap(),
        BootState {
            trial: trial(1),
            ..started
        }
    );
    assert_eq!(vm.boot(), vec![B, A]);
    assert_eq!(
        env.read().unwrap(),
        BootState {
            trial: trial(0),
            ..started
        }
    );
    // Tries exhausted: only the primary; b is not good, so no fallback to it.
    assert_eq!(vm.boot(), vec![A]);
    assert_eq!(
        env.read().unwrap(),
        BootState {
            trial: trial(0),
            ..started
        }
    );

    // The daemon rolls back: same boot order, nothing left to decrement.
    let rolled_back = env.mark_bad(B).unwrap();
    assert_eq!(rolled_back, BootState::initial());
    assert_eq!(vm.boot(), vec![A]);
    assert_eq!(env.read().unwrap(), rolled_back);

    // A committed b is primary; the good a is its fallback.
    env.set_trial(B, 1).unwrap();
    let committed = env.mark_good(B).unwrap();
    assert_eq!(vm.boot(), vec![B, A]);
    assert_eq!(env.read().unwrap(), committed);
}
