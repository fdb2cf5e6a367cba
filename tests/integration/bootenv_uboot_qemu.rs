//! `boot/boot.scr.txt` executed by real U-Boot (Debian's qemu-x86_64 build, in qemu with TCG)
//! with the `bosun_*` variables bosun's U-Boot backend wrote.
//!
//! Limits, stated plainly: this U-Boot build keeps its environment "nowhere", so the variables
//! are handed over as `setenv` lines prepended to the script, and `saveenv` does not exist.
//! That exercises the script's "cannot persist the decremented tries, so boot the primary"
//! path, not the successful-trial path (GRUB's half is covered end to end by
//! `bootenv_grub_qemu`). x86 U-Boot has no `booti`, so every slot fails to load: the serial
//! log shows the order the slots were tried in, and the final reset (qemu runs with
//! -no-reboot; sitting at a prompt would hit the timeout). Needs u-boot-qemu, u-boot-tools,
//! qemu-system-x86, fdisk, e2fsprogs.

use std::path::Path;
use std::process::{Command, Stdio};

use bosun::bootenv::{BootEnv, BootState, Slot, Trial};

use super::bootenv_interop::{tool, UbootFixture};

const UBOOT_ROM: &str = "/usr/lib/u-boot/qemu-x86_64/u-boot.rom";
const MIB: u64 = 1 << 20;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The `setenv` lines for the `bosun_*` variables bosun's backend writes for `state`.
fn env_as_setenv(state: &BootState) -> String {
    let fx = UbootFixture::new(false, 0);
    fx.setenv("bootcmd", "run distro_bootcmd");
    let env = fx.env();
    env.write(state).unwrap();
    let mut out = String::new();
    for (name, value) in env.load().unwrap().current.vars {
        if name.starts_with("bosun_") {
            out.push_str(&format!("setenv {name} '{value}'\n"));
        }
    }
    out
}

/// Runs the script under U-Boot with `state` and returns (slots tried in order, serial log).
fn boot(state: &BootState) -> (Vec<Slot>, String) {
    assert!(
        Path::new(UBOOT_ROM).exists(),
        "{UBOOT_ROM} missing: install the Debian package u-boot-qemu (listed in .ci/packages.txt)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = d.join("boot.txt");
    let body =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../boot/boot.scr.txt"))
            .unwrap();
    std::fs::write(
        &script,
        format!("{}setenv bosun_reset_delay 0\n{body}", env_as_setenv(state)),
    )
    .unwrap();

    // Disk: MBR with 1 = boot (boot.scr), 2 = slot a, 3 = slot b, each ext2 of 4 MiB.
    let disk = d.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(14 * MIB)
        .unwrap();
    let table = "label: dos\nstart=2048, size=8192, type=83, bootable\n\
                 start=10240, size=8192, type=83\nstart=18432, size=8192, type=83\n";
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", p(&disk)])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sfdisk ({e}): install the Debian package fdisk"));
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success());
    for (i, name) in ["boot", "a", "b"].iter().enumerate() {
        let root = d.join(name);
        std::fs::create_dir_all(root.join("boot")).unwrap();
        if *name == "boot" {
            let out = root.join("boot.scr");
            tool(
                "mkimage",
                &[
                    "-A",
                    "x86",
                    "-O",
                    "linux",
                    "-T",
                    "script",
                    "-C",
                    "none",
                    "-d",
                    p(&script),
                    p(&out),
                ],
            );
        } else {
            for f in ["Image", "dtb", "initrd.img"] {
                std::fs::write(root.join("boot").join(f), "not a kernel\n").unwrap();
            }
        }
        let offset = (1 + 4 * i as u64) * MIB;
        tool(
            "mke2fs",
            &[
                "-q",
                "-F",
                "-t",
                "ext2",
                "-E",
                &format!("offset={offset}"),
                "-d",
                p(&root),
                p(&disk),
                "4M",
            ],
        );
    }

    let serial = d.join("serial.txt");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-machine", "accel=tcg", "-m", "256", "-display", "none"])
        .args([
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-bios",
            UBOOT_ROM,
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide,index=0", disk.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let log = crate::support::run_qemu(qemu, &serial, "a U-Boot reset");
    assert!(
        log.contains("## Executing script") && log.contains("bosun: no bootable slot; resetting"),
        "U-Boot did not run the script to its reset fallback; serial log:\n{log}"
    );
    let slots = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("bosun: booting slot "))
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (slots, log)
}

#[test]
fn boot_scr_runs_the_contract_under_real_uboot() {
    use Slot::{A, B};
    let initial = BootState::initial();
    let trial = initial.with_trial(B, 2).unwrap();
    let committed = trial.committed(B);
    let mut exhausted = trial;
    exhausted.trial = Some(Trial {
        slot: B,
        tries_left: 0,
    });
    let cases: [(&str, BootState, Vec<Slot>, bool); 4] = [
        // Pending trial but saveenv is impossible: the primary boots, never the trial.
        ("trial", trial, vec![A], true),
        // Committed b is primary; good a is its fallback.
        ("committed", committed, vec![B, A], false),
        // Only a is good: no fallback to b.
        ("initial", initial, vec![A], false),
        // Exhausted trial: primary only, and nothing to save.
        ("exhausted", exhausted, vec![A], false),
    ];
    // Two VMs at a time (the machine has two cores).
    for pair in cases.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|(name, state, want, saves)| {
                let (name, state, want, saves) = (*name, *state, want.clone(), *saves);
                std::thread::spawn(move || {
                    let (got, log) = boot(&state);
                    assert_eq!(got, want, "{name}: serial log:\n{log}");
                    assert_eq!(
                        log.contains("bosun: saveenv failed; booting primary"),
                        saves,
                        "{name}: serial log:\n{log}"
                    );
                })
            })
            .collect();
        for r in runs {
            r.join().unwrap();
        }
    }
}
