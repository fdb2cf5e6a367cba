//! Interop of bosun's boot-env backends with the real tools, in both directions:
//! grub-editenv (grub-common), fw_printenv/fw_setenv (libubootenv-tool) and sgdisk (gdisk).
//! A missing tool fails the test with the package to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use bosun::bootenv::gpt::PrioAttrs;
use bosun::bootenv::{BootEnv, BootState, GoodSlots, GptPrio, GrubEnv, Slot, Trial, UbootEnv};

/// Runs a real tool and returns its stdout; panics (failing the test) if the tool is missing
/// or exits non-zero.
pub(crate) fn tool(program: &str, args: &[&str]) -> String {
    let package = match program {
        "grub-editenv" | "grub-script-check" | "grub-mkimage" => "grub-common",
        "mke2fs" | "debugfs" => "e2fsprogs",
        "mkimage" => "u-boot-tools",
        "fw_printenv" | "fw_setenv" => "libubootenv-tool",
        "sgdisk" => "gdisk",
        _ => "?",
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): install the Debian package {package} \
             (apt-get install {package}; it is listed in .ci/packages.txt)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn listed(out: &str) -> Vec<String> {
    out.lines().map(str::to_string).collect()
}

fn state(primary: Slot, trial: Option<(Slot, u8)>, a: bool, b: bool) -> BootState {
    BootState {
        primary,
        trial: trial.map(|(slot, tries_left)| Trial { slot, tries_left }),
        good: GoodSlots { a, b },
    }
}

// ---------------------------------------------------------------------------------------------
// GRUB

#[test]
fn grub_bosun_writes_grub_editenv_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    tool("grub-editenv", &[s(&path), "create"]);
    tool(
        "grub-editenv",
        &[s(&path), "set", "saved_entry=0", "odd=back\\slash\nnewline"],
    );
    let env = GrubEnv::new(&path);

    env.set_trial(Slot::B, 3).unwrap();
    let list = listed(&tool("grub-editenv", &[s(&path), "list"]));
    for want in [
        "saved_entry=0",
        "odd=back\\slash",
        "newline",
        "bosun_primary=a",
        "bosun_trial=b",
        "bosun_tries=3",
        "bosun_good_a=1",
        "bosun_good_b=0",
    ] {
        assert!(list.iter().any(|l| l == want), "{want:?} not in {list:?}");
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);

    env.mark_good(Slot::B).unwrap();
    let list = listed(&tool("grub-editenv", &[s(&path), "list"]));
    for want in [
        "bosun_primary=b",
        "bosun_trial=",
        "bosun_tries=0",
        "bosun_good_a=1",
        "bosun_good_b=1",
        "saved_entry=0",
    ] {
        assert!(list.iter().any(|l| l == want), "{want:?} not in {list:?}");
    }
    // grub-editenv can still edit what bosun wrote, and bosun reads that back.
    tool("grub-editenv", &[s(&path), "set", "bosun_primary=a"]);
    assert_eq!(env.read().unwrap().primary, Slot::A);
}

#[test]
fn grub_editenv_writes_bosun_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    tool("grub-editenv", &[s(&path), "create"]);
    let env = GrubEnv::new(&path);
    assert_eq!(env.read().unwrap(), BootState::initial());

    tool(
        "grub-editenv",
        &[
            s(&path),
            "set",
            "bosun_primary=b",
            "bosun_trial=a",
            "bosun_tries=2",
            "bosun_good_a=0",
            "bosun_good_b=1",
        ],
    );
    assert_eq!(
        env.read().unwrap(),
        state(Slot::B, Some((Slot::A, 2)), false, true)
    );
    // What GRUB's save_env does on a trial boot: the tries go down; at 0 the trial is over.
    tool("grub-editenv", &[s(&path), "set", "bosun_tries=0"]);
    let exhausted = env.read().unwrap();
    assert_eq!(
        exhausted.trial,
        Some(Trial {
            slot: Slot::A,
            tries_left: 0
        })
    );
    assert_eq!(exhausted.next_boot(), Slot::B);

    // Escapes: grub-editenv writes `\\` and `\`+newline; the codec decodes them exactly.
    tool(
        "grub-editenv",
        &[s(&path), "set", "x=a\\b\nc\\", "y=p=q #r"],
    );
    let block = env.read_block().unwrap().unwrap();
    assert_eq!(block.get("x"), Some("a\\b\nc\\"));
    assert_eq!(block.get("y"), Some("p=q #r"));

    // Garbage from grub-editenv's point of view is an error naming the file for bosun.
    tool("grub-editenv", &[s(&path), "set", "bosun_tries=many"]);
    let err = env.read().unwrap_err().to_string();
    assert!(
        err.contains("bosun_tries") && err.contains(s(&path)),
        "{err}"
    );
}

#[test]
fn grub_missing_file_is_initial_and_created_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bosun.env");
    let env = GrubEnv::new(&path);
    assert_eq!(env.read().unwrap(), BootState::initial());
    env.set_trial(Slot::B, 1).unwrap();
    let list = listed(&tool("grub-editenv", &[s(&path), "list"]));
    assert!(list.contains(&"bosun_trial=b".to_string()), "{list:?}");
    assert!(list.contains(&"bosun_tries=1".to_string()), "{list:?}");
}

#[test]
fn grub_refuses_invalid_file_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    std::fs::write(&path, b"not an env block").unwrap();
    let env = GrubEnv::new(&path);
    let err = env.set_trial(Slot::B, 2).unwrap_err().to_string();
    assert!(err.contains(s(&path)) && err.contains("1024"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not an env block");

    // grub-editenv accepts a 2048-byte block; bosun names the size it expects.
    tool("grub-editenv", &[s(&path), "create"]);
    let mut big = std::fs::read(&path).unwrap();
    big.resize(2048, b'#');
    std::fs::write(&path, &big).unwrap();
    let err = env.read().unwrap_err().to_string();
    assert!(
        err.contains("size is 2048 bytes, expected exactly 1024"),
        "{err}"
    );
}

#[test]
fn grub_cfg_fragment_passes_grub_script_check() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boot/grub.cfg");
    tool("grub-script-check", &[s(&cfg)]);
}

// ---------------------------------------------------------------------------------------------
// U-Boot

/// An image file with the environment, its fw_env.config and an empty default-env file.
pub(crate) struct UbootFixture {
    pub _dir: tempfile::TempDir,
    pub image: PathBuf,
    pub config: PathBuf,
    pub defenv: PathBuf,
}

impl UbootFixture {
    /// `fill` is the byte the image starts with (erased flash is 0xff).
    pub fn new(redundant: bool, fill: u8) -> UbootFixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("env.img");
        std::fs::write(&image, vec![fill; 0x5000]).unwrap();
        let config = dir.path().join("fw_env.config");
        let mut text = format!("# test env\n{} 0x1000 0x2000\n", image.display());
        if redundant {
            text.push_str(&format!("{}\t0x3000 0x2000 0x1000\n", image.display()));
        }
        std::fs::write(&config, text).unwrap();
        let defenv = dir.path().join("defenv");
        std::fs::write(&defenv, "").unwrap();
        UbootFixture {
            _dir: dir,
            image,
            config,
            defenv,
        }
    }

    pub fn setenv(&self, name: &str, value: &str) {
        tool(
            "fw_setenv",
            &["-c", s(&self.config), "-f", s(&self.defenv), name, value],
        );
    }

    pub fn printenv(&self) -> Vec<String> {
        listed(&tool("fw_printenv", &["-c", s(&self.config)]))
    }

    pub fn env(&self) -> UbootEnv {
        UbootEnv::from_config_file(&self.config).unwrap()
    }
}

#[test]
fn uboot_single_copy_both_directions() {
    let fx = UbootFixture::new(false, 0x00);
    // No valid copy yet: bosun refuses rather than inventing an environment.
    let err = fx.env().read().unwrap_err().to_string();
    assert!(err.contains("no copy has a valid CRC"), "{err}");

    fx.setenv("bootcmd", "run distro_bootcmd");
    let env = fx.env();
    assert_eq!(env.read().unwrap(), BootState::initial());
    env.set_trial(Slot::B, 3).unwrap();
    let vars = fx.printenv();
    for want in [
        "bootcmd=run distro_bootcmd",
        "bosun_primary=a",
        "bosun_trial=b",
        "bosun_tries=3",
        "bosun_good_a=1",
        "bosun_good_b=0",
    ] {
        assert!(vars.iter().any(|l| l == want), "{want:?} not in {vars:?}");
    }

    fx.setenv("bosun_tries", "2");
    assert_eq!(
        env.read().unwrap(),
        state(Slot::A, Some((Slot::B, 2)), true, false)
    );
    fx.setenv("bosun_primary", "b");
    fx.setenv("bosun_good_b", "1");
    fx.setenv("bosun_trial", "");
    assert_eq!(env.read().unwrap(), state(Slot::B, None, true, true));
}

#[test]
fn uboot_redundant_picks_newest_copy_across_flag_wrap() {
    let fx = UbootFixture::new(true, 0xff);
    fx.setenv("bootcmd", "boot");
    for i in 0..4 {
        fx.setenv("counter", &i.to_string());
    }
    let env = fx.env();
    let loaded = env.load().unwrap();
    assert_eq!(loaded.current.get("counter"), Some("3"));

    // Alternate writers for more than 256 writes so the flag byte wraps from 0xff to 0.
    let mut expected = BootState::initial();
    for i in 0..140u32 {
        expected = if i % 2 == 0 {
            expected
                .with_trial(expected.primary.other(), 1 + (i % 15) as u8)
                .unwrap()
        } else {
            expected.committed(expected.trial.unwrap().slot)
        };
        env.write(&expected).unwrap();
        let vars = fx.printenv();
        assert!(
            vars.contains(&format!("bosun_primary={}", expected.primary)),
            "round {i}: {vars:?}"
        );
        assert!(vars.contains(&"bootcmd=boot".to_string()), "{vars:?}");
        fx.setenv("counter", &i.to_string());
        let loaded = env.load().unwrap();
        assert_eq!(loaded.current.get("counter"), Some(i.to_string().as_str()));
        assert_eq!(env.read().unwrap(), expected, "round {i}");
    }
    // 1 + 4 + 2*140 = 285 writes, each flag = previous + 1 starting at 0 (the first write
    // finds no valid copy and copy 0's erased flag 0xff): the newest flag is 284 % 256 = 28,
    // so it wrapped from 0xff to 0 on the way and both tools kept agreeing.
    let img = std::fs::read(&fx.image).unwrap();
    let mut flags = [img[0x1004], img[0x3004]];
    flags.sort();
    assert_eq!(flags, [27, 28]);
}

#[test]
fn uboot_config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fw_env.config");
    std::fs::write(&cfg, "/some/file 0x0\n").unwrap();
    let err = UbootEnv::from_config_file(&cfg).unwrap_err().to_string();
    assert!(err.contains(s(&cfg)) && err.contains("line 1"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// GPT

/// An 8 MiB disk image with partitions 1 (ESP-ish), 2 (slot a) and 3 (slot b), made by sgdisk.
pub(crate) fn gpt_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    tool(
        "sgdisk",
        &[
            "-o",
            "-n",
            "1:0:+1M",
            "-n",
            "2:0:+2M",
            "-c",
            "2:slot-a",
            "-n",
            "3:0:+2M",
            "-c",
            "3:slot-b",
            s(&disk),
        ],
    );
    disk
}

fn attr_flags(disk: &Path, part: u32) -> String {
    let out = tool("sgdisk", &["-i", &part.to_string(), s(disk)]);
    out.lines()
        .find_map(|l| l.strip_prefix("Attribute flags: "))
        .unwrap_or_else(|| panic!("no attribute flags in {out}"))
        .trim()
        .to_string()
}

pub(crate) fn assert_sgdisk_clean(disk: &Path) {
    let out = tool("sgdisk", &["-v", s(disk)]);
    assert!(out.contains("No problems found"), "sgdisk -v: {out}");
}

#[test]
fn gpt_sgdisk_sets_bosun_reads() {
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk(dir.path());
    let env = GptPrio::new(&disk, 2, 3);
    let err = env.read().unwrap_err().to_string();
    assert!(
        err.contains("no slot is bootable-good") && err.contains(s(&disk)),
        "{err}"
    );

    // a: priority 2, successful. b: priority 5, tries 1, not successful = a pending trial.
    tool(
        "sgdisk",
        &[
            "-A",
            "2:set:49",
            "-A",
            "2:set:56",
            "-A",
            "3:set:48",
            "-A",
            "3:set:50",
            "-A",
            "3:set:52",
            s(&disk),
        ],
    );
    let (a, b) = env.read_attrs().unwrap();
    assert_eq!(
        a,
        PrioAttrs {
            priority: 2,
            tries: 0,
            successful: true
        }
    );
    assert_eq!(
        b,
        PrioAttrs {
            priority: 5,
            tries: 1,
            successful: false
        }
    );
    assert_eq!(
        env.read().unwrap(),
        state(Slot::A, Some((Slot::B, 1)), true, false)
    );
    // The bootloader used the last try.
    tool("sgdisk", &["-A", "3:clear:52", s(&disk)]);
    assert_eq!(
        env.read().unwrap(),
        state(Slot::A, Some((Slot::B, 0)), true, false)
    );
}

#[test]
fn gpt_bosun_sets_sgdisk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk(dir.path());
    // Provision slot a as good primary, plus an unrelated attribute bit to preserve
    // (60 = read-only, 0 = required).
    tool(
        "sgdisk",
        &[
            "-A",
            "2:set:56",
            "-A",
            "2:set:49",
            "-A",
            "2:set:60",
            "-A",
            "3:set:0",
            s(&disk),
        ],
    );
    let env = GptPrio::new(&disk, 2, 3);
    assert_eq!(env.read().unwrap(), BootState::initial());

    env.set_trial(Slot::B, 3).unwrap();
    assert_eq!(attr_flags(&disk, 2), "1102000000000000");
    assert_eq!(attr_flags(&disk, 3), "0033000000000001");
    assert_eq!(
        tool("sgdisk", &["-A", "3:get:56", s(&disk)]).trim(),
        "3:56:0"
    );
    assert_sgdisk_clean(&disk);

    env.mark_good(Slot::B).unwrap();
    assert_eq!(attr_flags(&disk, 2), "1101000000000000");
    assert_eq!(attr_flags(&disk, 3), "0102000000000001");
    assert_eq!(
        tool("sgdisk", &["-A", "3:get:56", s(&disk)]).trim(),
        "3:56:1"
    );
    assert_sgdisk_clean(&disk);

    env.mark_bad(Slot::B).unwrap();
    assert_eq!(attr_flags(&disk, 2), "1102000000000000");
    assert_eq!(attr_flags(&disk, 3), "0000000000000001");
    assert_sgdisk_clean(&disk);
    assert_eq!(env.read().unwrap(), BootState::initial());

    // The backup table holds the same: destroy the primary header and read again.
    let mut img = std::fs::read(&disk).unwrap();
    img[512..1024].fill(0);
    std::fs::write(&disk, &img).unwrap();
    assert_eq!(env.read().unwrap(), BootState::initial());
    // A write repairs the primary table.
    env.set_trial(Slot::B, 2).unwrap();
    assert_sgdisk_clean(&disk);
    assert_eq!(attr_flags(&disk, 3), "0023000000000001");
}

#[test]
fn gpt_bad_partition_numbers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk(dir.path());
    tool("sgdisk", &["-A", "2:set:56", "-A", "2:set:49", s(&disk)]);
    let err = GptPrio::new(&disk, 2, 7).read().unwrap_err().to_string();
    assert!(err.contains("partition 7 is an unused entry"), "{err}");
    let err = GptPrio::new(&disk, 2, 200).read().unwrap_err().to_string();
    assert!(err.contains("partition 200 does not exist"), "{err}");
    let err = GptPrio::new(&disk, 2, 2).read().unwrap_err().to_string();
    assert!(err.contains("must be different"), "{err}");
}
