//! Power-cut safety of each boot-env backend: the on-disk state is cut at every point of the
//! backend's write sequence (including torn, half-written steps) and must then decode, with
//! bosun and with the real tool, to either the old or the new state, never to a state without
//! a good primary slot. A later write must succeed and leave a clean medium.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use bosun::bootenv::{BootEnv, BootState, DiskWrite, GptPrio, GrubEnv, Slot};

use super::bootenv_interop::{assert_sgdisk_clean, gpt_disk, tool, UbootFixture};

/// Applies `writes[..k]` fully and the first `cut` bytes of `writes[k]`, like a power cut
/// during step `k` (the backends fsync after every step, so earlier steps are durable).
fn apply_prefix(writes: &[DiskWrite], k: usize, cut: usize) {
    for (i, w) in writes.iter().enumerate().take(k + 1) {
        let data = if i == k { &w.data[..cut] } else { &w.data[..] };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&w.path)
            .unwrap();
        f.seek(SeekFrom::Start(w.offset)).unwrap();
        f.write_all(data).unwrap();
    }
}

fn assert_old_or_new(got: &BootState, old: &BootState, new: &BootState, at: &str) {
    assert!(
        got == old || got == new,
        "{at}: decoded {got}, expected {old} or {new}"
    );
    got.check()
        .unwrap_or_else(|e| panic!("{at}: state {got} has no good primary: {e}"));
}

#[test]
fn grub_power_cut_during_replace_keeps_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    tool("grub-editenv", &[path.to_str().unwrap(), "create"]);
    let env = GrubEnv::new(&path);
    let old = env.set_trial(Slot::B, 3).unwrap();
    let new = old.committed(Slot::B);

    // The bytes the commit will write, computed on a copy.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("grubenv");
    std::fs::copy(&path, &copy).unwrap();
    GrubEnv::new(&copy).write(&new).unwrap();
    let new_bytes = std::fs::read(&copy).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();

    // Power cut while the temp file is written or before the rename: the target is
    // untouched, whatever the temp file holds.
    for cut in [0, 1, 100, 512, 1023, 1024] {
        std::fs::write(env.temp_path(), &new_bytes[..cut]).unwrap();
        assert_old_or_new(&env.read().unwrap(), &old, &new, &format!("temp cut {cut}"));
        assert_eq!(env.read().unwrap(), old);
        assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
        let listed = tool("grub-editenv", &[path.to_str().unwrap(), "list"]);
        assert!(listed.contains("bosun_trial=b"), "{listed}");
    }
    // The next write replaces the stale temp file and lands the new state.
    env.mark_good(Slot::B).unwrap();
    assert!(!env.temp_path().exists());
    assert_eq!(env.read().unwrap(), new);
    assert_eq!(std::fs::read(&path).unwrap(), new_bytes);
}

#[test]
fn grub_killed_writer_leaves_old_or_new() {
    // A real process killed with SIGKILL while it rewrites the env as fast as it can.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let env = GrubEnv::new(&path);
    let old = env.set_trial(Slot::B, 3).unwrap();
    let new = old.committed(Slot::B);
    for round in 0..5 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "bootenv_powercut::grub_writer_child",
                "--nocapture",
            ])
            .env("BOSUN_GRUB_WRITER_CHILD", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child has written at least once (the state flips to `new`).
        let start = std::time::Instant::now();
        while env.read().map(|s| s == old).unwrap_or(true) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "child never wrote"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(3 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_old_or_new(&env.read().unwrap(), &old, &new, &format!("round {round}"));
        env.write(&old).unwrap();
    }
}

/// Child side of [`grub_killed_writer_leaves_old_or_new`]: with `BOSUN_GRUB_WRITER_CHILD`
/// set, alternates the two states on that file until killed. Run as a normal test, it checks
/// that back-to-back replaces leave no temp file and the last state written.
#[test]
fn grub_writer_child() {
    let child_path = std::env::var_os("BOSUN_GRUB_WRITER_CHILD");
    let dir = tempfile::tempdir().unwrap();
    let env = GrubEnv::new(match &child_path {
        Some(p) => p.into(),
        None => dir.path().join("grubenv"),
    });
    let old = env.read().unwrap();
    let new = old.committed(Slot::B);
    let rounds = if child_path.is_some() { usize::MAX } else { 20 };
    for _ in 0..rounds {
        env.write(&new).unwrap();
        env.write(&old).unwrap();
    }
    assert_eq!(env.read().unwrap(), old);
    assert!(!env.temp_path().exists());
}

#[test]
fn uboot_redundant_power_cut_keeps_old_or_new() {
    let fx = UbootFixture::new(true, 0xff);
    fx.setenv("bootcmd", "boot");
    let env = fx.env();
    let old = env.set_trial(Slot::B, 3).unwrap();
    let new = old.committed(Slot::B);
    let plan = env.plan(&new).unwrap();
    assert_eq!(plan.len(), 1, "a redundant env write touches one copy");
    let pristine = std::fs::read(&fx.image).unwrap();
    let len = plan[0].data.len();
    for cut in [0, 1, 4, 5, 100, len / 2, len - 1, len] {
        std::fs::write(&fx.image, &pristine).unwrap();
        apply_prefix(&plan, 0, cut);
        let got = env.read().unwrap();
        assert_old_or_new(&got, &old, &new, &format!("cut {cut}"));
        assert_eq!(got, if cut == len { new } else { old }, "cut {cut}");
        // fw_printenv agrees on which copy is current.
        let primary = tool(
            "fw_printenv",
            &["-c", fx.config.to_str().unwrap(), "-n", "bosun_primary"],
        );
        assert_eq!(primary.trim(), got.primary.as_str(), "cut {cut}");
        // And the next write works from there.
        env.write(&new).unwrap();
        assert_eq!(env.read().unwrap(), new);
        assert!(fx.printenv().contains(&"bosun_primary=b".to_string()));
    }
}

#[test]
fn gpt_power_cut_at_every_step_keeps_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk(dir.path());
    tool(
        "sgdisk",
        &["-A", "2:set:56", "-A", "2:set:49", disk.to_str().unwrap()],
    );
    let env = GptPrio::new(&disk, 2, 3);
    let old = env.set_trial(Slot::B, 3).unwrap();
    let new = old.committed(Slot::B);
    let plan = env.plan(&new).unwrap();
    assert_eq!(
        plan.len(),
        4,
        "backup array, backup header, primary array, primary header"
    );
    let pristine = std::fs::read(&disk).unwrap();
    for k in 0..plan.len() {
        let len = plan[k].data.len();
        for cut in [0, 1, len / 2, len - 1, len] {
            std::fs::write(&disk, &pristine).unwrap();
            apply_prefix(&plan, k, cut);
            let at = format!("step {k} cut {cut}");
            assert_old_or_new(&env.read().unwrap(), &old, &new, &at);
            // sgdisk (which also falls back to the backup) sees the same slot attributes.
            let got = env.read().unwrap();
            let expected_b = if got == new {
                "0102000000000000"
            } else {
                "0033000000000000"
            };
            let info = tool("sgdisk", &["-i", "3", disk.to_str().unwrap()]);
            assert!(info.contains(expected_b), "{at}: {info}");
            // The next write repairs whatever was torn.
            env.write(&new).unwrap();
            assert_eq!(env.read().unwrap(), new, "{at}");
            assert_sgdisk_clean(&disk);
        }
    }
    // Once every step is done the new state stands.
    std::fs::write(&disk, &pristine).unwrap();
    apply_prefix(&plan, plan.len() - 1, plan[plan.len() - 1].data.len());
    assert_eq!(env.read().unwrap(), new);
    assert_sgdisk_clean(Path::new(&disk));
}
