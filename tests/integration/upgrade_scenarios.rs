//! A/B upgrade scenarios with simulated reboots: the upgrade step runs (through the real
//! `bosun upgrade step` binary, or the library's actor in-process), then a "reboot" runs the
//! bootloader simulator of `support/upgrade.rs` on the real boot-env medium (GRUB env block
//! via grub-editenv, redundant U-Boot env via fw_setenv, GPT attributes via sgdisk) and
//! writes the chosen `bosun.slot=` into the kernel command line file.
//!
//! Slot contents are files holding fake images; "boots" means the bootloader simulator found a
//! complete image in the slot it chose. The `http_*` scenarios fetch a zstd image from the real
//! HTTP server of `support/image_server.rs` on 127.0.0.1 (one of them cuts the connection).

use std::path::Path;

use bosun::bootenv::{BootState, GoodSlots, Slot};
use bosun::upgrade::install::{read_progress, spool_path};
use bosun::upgrade::machine::{HealthInput, Lifecycle, Note, RollbackReason};
use sha2::{Digest, Sha256};

use crate::config_cli::bosun;
use crate::support::image_server::Server;
use crate::support_upgrade::{Backend, Node, Power, ZstdImage, ALL_BACKENDS};

fn run_bosun(args: &[String]) -> (bool, String, String) {
    let out = bosun().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, img: &crate::support_upgrade::Image, tries: u8) -> String {
    let path = dir.join(format!("config-{}.yaml", img.version));
    std::fs::write(
        &path,
        format!(
            "hostname: edge-01\nupgrade:\n  version: {}\n  image: {}\n  sha256: {}\n  tries: {tries}\n",
            img.version,
            img.path.display(),
            img.sha_hex()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn step_cli(node: &Node, config: &str, health: &str) -> String {
    let mut args: Vec<String> = vec!["upgrade".into(), "step".into()];
    args.extend(node.cli_args());
    args.extend([
        "--config".into(),
        config.into(),
        "--health".into(),
        health.into(),
    ]);
    let (ok, out, err) = run_bosun(&args);
    assert!(
        ok,
        "bosun upgrade step failed\nstdout: {out}\nstderr: {err}"
    );
    out
}

#[test]
fn healthy_trial_commits_through_the_binary() {
    for backend in [Backend::Grub, Backend::Gpt] {
        let mut node = Node::new(backend, false);
        let v2 = node.image("v2");
        let cfg = write_config(node.dir.path(), &v2, 3);

        // Step 1 on slot a: install into b, schedule the trial, ask for a reboot.
        let out = step_cli(&node, &cfg, "pending");
        assert!(out.contains("installed v2"), "{out}");
        assert!(
            out.contains("reboot requested: systemctl reboot (recorded, not run"),
            "{out}"
        );
        assert!(out.contains("state: staged"), "{out}");
        assert_eq!(node.slot_version(Slot::B).as_deref(), Some("v2"));
        node.assert_bootable("after staging");
        let env = node.env().read().unwrap();
        assert_eq!(env.next_boot(), Slot::B);

        // Reboot: the bootloader takes one try and boots b.
        assert_eq!(node.boot(), Slot::B);
        let env = node.env().read().unwrap();
        assert_eq!(env.trial.map(|t| t.tries_left), Some(2), "{backend:?}");
        let out = step_cli(&node, &cfg, "pending");
        assert!(out.contains("state: trial"), "{out}");
        // The health verdict arrives.
        let out = step_cli(&node, &cfg, "healthy");
        assert!(out.contains("state: committed"), "{out}");
        let env = node.env().read().unwrap();
        assert_eq!(
            env,
            BootState {
                primary: Slot::B,
                trial: None,
                good: GoodSlots { a: true, b: true }
            },
            "{backend:?}"
        );
        // Another reboot stays on b; nothing more to do.
        assert_eq!(node.boot(), Slot::B);
        let out = step_cli(&node, &cfg, "pending");
        assert!(
            !out.contains("reboot") && !out.contains("installed"),
            "{out}"
        );

        let mut args: Vec<String> = vec!["upgrade".into(), "status".into(), "--json".into()];
        args.extend(node.cli_args());
        let (ok, out, err) = run_bosun(&args);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["state"]["lifecycle"]["state"], "committed");
        assert_eq!(v["metrics"]["current_version"], "v2");
        assert_eq!(v["metrics"]["booted_slot"], "b");
        assert_eq!(v["state"]["counters"]["committed"], 1);
    }
}

/// A node still on its factory image, which os-release says is the version the config names:
/// adopted as running, no download, no reboot. Another version is installed as usual.
#[test]
fn factory_image_of_the_wanted_version_is_adopted_through_the_binary() {
    let mut node = Node::new(Backend::Grub, false);
    let v2 = node.image("v2");
    let cfg = write_config(node.dir.path(), &v2, 3);
    let etc = node.dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("os-release"),
        "NAME=\"edge OS\"\nIMAGE_ID=edge\nIMAGE_VERSION=v2\n",
    )
    .unwrap();
    let env_before = node.env().read().unwrap();

    let out = step_cli(&node, &cfg, "pending");
    assert!(
        !out.contains("installed") && !out.contains("reboot"),
        "{out}"
    );
    assert_eq!(
        node.state().running(Slot::A).map(|i| i.version.as_str()),
        Some("v2")
    );
    assert_eq!(node.env().read().unwrap(), env_before, "boot env untouched");
    assert_eq!(node.slot_version(Slot::B), None, "slot b not written");
    // Settled: the next step does nothing either.
    let out = step_cli(&node, &cfg, "pending");
    assert!(
        !out.contains("installed") && !out.contains("reboot"),
        "{out}"
    );

    // The config moves on to v3: installed into b as usual.
    let v3 = node.image("v3");
    let cfg3 = write_config(node.dir.path(), &v3, 3);
    let out = step_cli(&node, &cfg3, "pending");
    assert!(out.contains("installed v3"), "{out}");
}

#[test]
fn unhealthy_trial_rolls_back_quarantines_and_never_retries() {
    for backend in ALL_BACKENDS {
        let mut node = Node::new(backend, false);
        let v2 = node.image("v2");
        let c2 = v2.config(3);
        let power = Power::unlimited();

        let r = node
            .actor(&power)
            .step(Some(&c2), HealthInput::Pending)
            .unwrap();
        assert!(r.reboot_requested);
        assert_eq!(node.reboots_requested(), 1);
        assert_eq!(node.boot(), Slot::B);
        let r = node
            .actor(&power)
            .step(Some(&c2), HealthInput::Pending)
            .unwrap();
        assert!(matches!(r.state.lifecycle, Lifecycle::Trial { .. }));

        // K3s never gets healthy: mark b bad, a primary, reboot (seen by the runner).
        let r = node
            .actor(&power)
            .step(Some(&c2), HealthInput::Unhealthy("node not Ready".into()))
            .unwrap();
        assert!(r.reboot_requested);
        assert_eq!(
            node.runner.calls().last().unwrap(),
            &["systemctl".to_string(), "reboot".to_string()]
        );
        assert_eq!(node.reboots_requested(), 2);
        let env = node.env().read().unwrap();
        assert_eq!(env.primary, Slot::A, "{backend:?}");
        assert!(!env.is_good(Slot::B));
        assert_eq!(env.next_boot(), Slot::A);

        // Back on a: rolled back and quarantined.
        assert_eq!(node.boot(), Slot::A);
        let r = node
            .actor(&power)
            .step(Some(&c2), HealthInput::Pending)
            .unwrap();
        match &r.state.lifecycle {
            Lifecycle::RolledBack {
                reason: RollbackReason::Unhealthy(why),
                slot: Slot::B,
                ..
            } => assert_eq!(why, "node not Ready"),
            other => panic!("{backend:?}: {other:?}"),
        }
        assert_eq!(r.state.quarantine.len(), 1);
        assert_eq!(r.state.quarantine[0].version, "v2");
        assert_eq!(r.state.counters.rolled_back, 1);
        assert!(r
            .notes
            .contains(&Note::Refused(r.state.quarantine[0].clone())));

        // No update → rollback loop: further steps with the same config do nothing.
        let slot_b = std::fs::read(&node.slots.b).unwrap();
        for _ in 0..3 {
            let r = node
                .actor(&power)
                .step(Some(&c2), HealthInput::Pending)
                .unwrap();
            assert!(r.performed.is_empty(), "{:?}", r.performed);
            assert!(!r.reboot_requested);
        }
        assert_eq!(node.reboots_requested(), 2);
        assert_eq!(std::fs::read(&node.slots.b).unwrap(), slot_b);
        assert_eq!(node.state().counters.refused, 1);
        assert_eq!(node.boot(), Slot::A);

        // A different image is tried again, and this one commits.
        let v3 = node.image("v3");
        let c3 = v3.config(2);
        let r = node
            .actor(&power)
            .step(Some(&c3), HealthInput::Pending)
            .unwrap();
        assert!(r.reboot_requested);
        assert_eq!(node.slot_version(Slot::B).as_deref(), Some("v3"));
        assert_eq!(node.boot(), Slot::B);
        node.actor(&power)
            .step(Some(&c3), HealthInput::Pending)
            .unwrap();
        let r = node
            .actor(&power)
            .step(Some(&c3), HealthInput::Healthy)
            .unwrap();
        assert!(matches!(
            r.state.lifecycle,
            Lifecycle::Committed { slot: Slot::B, .. }
        ));
        assert_eq!(r.state.quarantine.len(), 1, "v2 stays quarantined");
        assert_eq!(
            r.state.metrics(Some(Slot::B)).current_version.as_deref(),
            Some("v3")
        );
    }
}

#[test]
fn bootloader_fallback_is_detected_and_quarantined() {
    for backend in ALL_BACKENDS {
        let mut node = Node::new(backend, false);
        let v2 = node.image("v2");
        let c2 = v2.config(2);
        let power = Power::unlimited();
        node.actor(&power)
            .step(Some(&c2), HealthInput::Pending)
            .unwrap();
        // The new slot's kernel hangs before userspace (bosun never runs there): the
        // watchdog resets the board each time until the tries are used up.
        assert_eq!(node.boot(), Slot::B);
        assert_eq!(node.boot(), Slot::B);
        assert_eq!(node.boot(), Slot::A, "{backend:?}: tries exhausted");
        let r = node
            .actor(&power)
            .step(Some(&c2), HealthInput::Pending)
            .unwrap();
        assert!(
            matches!(
                r.state.lifecycle,
                Lifecycle::RolledBack {
                    reason: RollbackReason::Fallback,
                    slot: Slot::B,
                    ..
                }
            ),
            "{backend:?}: {:?}",
            r.state.lifecycle
        );
        assert_eq!(r.state.counters.fallback, 1);
        assert_eq!(r.state.quarantine[0].version, "v2");
        assert!(!r.reboot_requested);
        // The exhausted trial is cleared and b marked bad.
        let env = node.env().read().unwrap();
        assert_eq!(env, BootState::initial(), "{backend:?}");
        // Not retried.
        let r = node
            .actor(&power)
            .step(Some(&c2), HealthInput::Pending)
            .unwrap();
        assert!(r.performed.is_empty() && !r.reboot_requested);
    }
}

#[test]
fn fallback_after_a_trial_boot_that_later_dies() {
    // bosun ran once in the trial slot (state Trial), then the slot crashed before the health
    // verdict until the tries ran out; the bootloader boots a.
    let mut node = Node::new(Backend::Uboot, false);
    let v2 = node.image("v2");
    let c2 = v2.config(2);
    let power = Power::unlimited();
    node.actor(&power)
        .step(Some(&c2), HealthInput::Pending)
        .unwrap();
    assert_eq!(node.boot(), Slot::B);
    let r = node
        .actor(&power)
        .step(Some(&c2), HealthInput::Pending)
        .unwrap();
    assert!(matches!(r.state.lifecycle, Lifecycle::Trial { .. }));
    assert_eq!(node.boot(), Slot::B);
    assert_eq!(node.boot(), Slot::A);
    let r = node
        .actor(&power)
        .step(Some(&c2), HealthInput::Pending)
        .unwrap();
    assert!(matches!(
        r.state.lifecycle,
        Lifecycle::RolledBack {
            reason: RollbackReason::Fallback,
            ..
        }
    ));
    assert_eq!(node.env().read().unwrap(), BootState::initial());
}

#[test]
fn manual_rollback_and_mark_good_through_the_binary() {
    let mut node = Node::new(Backend::Grub, false);
    let v2 = node.image("v2");
    let cfg = write_config(node.dir.path(), &v2, 3);
    step_cli(&node, &cfg, "pending");
    assert_eq!(node.boot(), Slot::B);
    step_cli(&node, &cfg, "pending");

    // Health is gated elsewhere: the operator commits by hand.
    let mut args: Vec<String> = vec!["upgrade".into(), "mark-good".into()];
    args.extend(node.cli_args());
    let (ok, out, err) = run_bosun(&args);
    assert!(ok, "{out}{err}");
    assert!(out.contains("state: committed"), "{out}");
    assert_eq!(node.env().read().unwrap().primary, Slot::B);

    // Then changes their mind: back to a, which is still good.
    let mut args: Vec<String> = vec!["upgrade".into(), "rollback".into()];
    args.extend(node.cli_args());
    let (ok, out, err) = run_bosun(&args);
    assert!(ok, "{out}{err}");
    assert!(out.contains("reboot requested"), "{out}");
    assert_eq!(node.boot(), Slot::A);
    let out = step_cli(&node, &cfg, "pending");
    assert!(out.contains("state: rolled_back"), "{out}");
    let st = node.state();
    assert_eq!(st.quarantine[0].version, "v2");
    // v2 is not reinstalled.
    let out = step_cli(&node, &cfg, "pending");
    assert!(!out.contains("installed"), "{out}");

    // Rolling back is refused when the other slot is not good: no bootable slot would be
    // left to go to.
    let env = node.env();
    env.mark_bad(Slot::B).unwrap();
    let mut args: Vec<String> = vec!["upgrade".into(), "rollback".into()];
    args.extend(node.cli_args());
    let (ok, _, err) = run_bosun(&args);
    assert!(!ok);
    assert!(err.contains("slot b is not marked good"), "{err}");
}

#[test]
fn unsupported_without_slots_is_reported_and_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v2.img");
    std::fs::write(&img, b"x").unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upgrade:\n  version: v2\n  image: {}\n  sha256: {}\n",
            img.display(),
            "00".repeat(32)
        ),
    )
    .unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "root=/dev/sda1 quiet\n").unwrap();
    let (ok, out, err) = run_bosun(&[
        "upgrade".into(),
        "step".into(),
        "--root".into(),
        dir.path().display().to_string(),
        "--cmdline".into(),
        cmdline.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("A/B upgrades unsupported"), "{err}");
    assert!(out.contains("state: idle"), "{out}");
    assert!(!dir.path().join("var/lib/bosun/upgrade.json").exists());
}

/// The bootloader simulator mirrors `boot/grub.cfg`: check the script still has each step
/// the simulator implements, in the same order.
#[test]
fn grub_cfg_matches_the_simulator() {
    let cfg =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../boot/grub.cfg"))
            .unwrap();
    let steps = [
        // only the contract variables are loaded
        "load_env --file \"${bosun_env}\" bosun_primary bosun_trial bosun_tries bosun_good_a bosun_good_b",
        // primary defaults to a unless exactly "b"
        "if [ \"${bosun_primary}\" != \"b\" ]; then set bosun_primary=a; fi",
        // a trial only of the other slot
        "if [ \"${bosun_trial}\" != \"${bosun_primary}\" ]; then",
        // decrement for tries 1..15 only
        "for bosun_n in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do",
        // save before choosing the trial slot; if the save fails, the primary boots
        "if save_env --file \"${bosun_env}\" bosun_tries; then",
        "set bosun_slot=\"${bosun_trial}\"",
        "bosun_boot \"${bosun_slot}\"",
        // failed trial → primary; failed primary → the other slot only if good
        "bosun_boot \"${bosun_primary}\"",
        "if [ \"${bosun_good_b}\" = \"1\" ]; then bosun_boot b; fi",
        "if [ \"${bosun_good_a}\" = \"1\" ]; then bosun_boot a; fi",
        "reboot",
    ];
    let mut at = 0;
    for s in steps {
        match cfg[at..].find(s) {
            Some(i) => at += i + s.len(),
            None => panic!("boot/grub.cfg no longer has (in order): {s}"),
        }
    }
}

/// Power-cut safety of the whole upgrade: the power is cut during every effect of the
/// sequence in turn (state file write, boot env write, slot write), leaving it torn. After
/// every cut the boot env must still select only complete images, the next boot must find a
/// bootable slot, and resuming must reach the same end as an uninterrupted run: v2 committed
/// (healthy) or rolled back and quarantined (unhealthy).
fn power_cut_everywhere(backend: Backend, healthy: bool) {
    let mut cut = 0;
    loop {
        cut += 1;
        // Slot b holds an older good image: it must lose its good mark before the write.
        let mut node = Node::new(backend, true);
        let v2 = node.image("v2");
        let c2 = v2.config(3);
        let power = Power::cut_after(cut);
        let mut cut_happened = false;
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 20, "{backend:?} cut {cut}: no convergence");
            let booted = node.boots.last().copied().unwrap_or(Slot::A);
            let in_trial = matches!(node.state().lifecycle, Lifecycle::Trial { .. });
            let health = match (booted, in_trial, healthy) {
                (Slot::B, true, true) => HealthInput::Healthy,
                (Slot::B, true, false) => HealthInput::Unhealthy("not Ready".into()),
                _ => HealthInput::Pending,
            };
            let p = if cut_happened {
                Power::unlimited()
            } else {
                power.clone()
            };
            let result = node.actor(&p).step(Some(&c2), health);
            if power.is_cut() && !cut_happened {
                cut_happened = true;
                assert!(result.is_err() || result.as_ref().unwrap().install_error.is_some());
                node.assert_bootable(&format!("{backend:?} after cut {cut}"));
                node.boot();
                node.assert_bootable(&format!("{backend:?} after the boot following cut {cut}"));
                continue;
            }
            let r = result.unwrap_or_else(|e| panic!("{backend:?} cut {cut}: {e}"));
            node.assert_bootable(&format!("{backend:?} cut {cut} round {rounds}"));
            if r.reboot_requested {
                node.boot();
                continue;
            }
            if r.performed.is_empty() && r.state.lifecycle.is_settled() {
                break;
            }
        }
        let st = node.state();
        let env = node.env().read().unwrap();
        if healthy {
            assert!(
                matches!(st.lifecycle, Lifecycle::Committed { slot: Slot::B, .. }),
                "{backend:?} cut {cut}: {:?}",
                st.lifecycle
            );
            assert_eq!(env.primary, Slot::B);
            assert!(st.quarantine.is_empty());
        } else {
            assert!(
                matches!(st.lifecycle, Lifecycle::RolledBack { slot: Slot::B, .. }),
                "{backend:?} cut {cut}: {:?}",
                st.lifecycle
            );
            assert_eq!(env.primary, Slot::A);
            assert_eq!(st.quarantine[0].version, "v2");
        }
        assert_eq!(node.slot_version(Slot::B).as_deref(), Some("v2"));
        if !cut_happened {
            // The budget outlasted the whole sequence: every cut point was covered.
            assert!(cut > 5, "{backend:?}: the sequence has more than 5 effects");
            break;
        }
    }
}

#[test]
fn power_cut_at_every_effect_grub() {
    power_cut_everywhere(Backend::Grub, true);
    power_cut_everywhere(Backend::Grub, false);
}

#[test]
fn power_cut_at_every_effect_uboot() {
    power_cut_everywhere(Backend::Uboot, true);
    power_cut_everywhere(Backend::Uboot, false);
}

#[test]
fn power_cut_at_every_effect_gpt() {
    power_cut_everywhere(Backend::Gpt, true);
    power_cut_everywhere(Backend::Gpt, false);
}

#[test]
fn state_file_survives_and_names_itself_when_corrupt() {
    let node = Node::new(Backend::Grub, false);
    std::fs::create_dir_all(&node.state_dir).unwrap();
    std::fs::write(node.state_dir.join("upgrade.json"), "{not json").unwrap();
    let err = node
        .actor(&Power::unlimited())
        .step(None, HealthInput::Pending)
        .expect_err("corrupt state is an error")
        .to_string();
    assert!(err.contains("upgrade.json"), "{err}");
    // Nothing was written to the boot env.
    assert_eq!(
        node.env().read().unwrap(),
        BootState {
            primary: Slot::A,
            trial: None,
            good: GoodSlots { a: true, b: false }
        }
    );
}

/// A real `bosun upgrade step` process killed with SIGKILL in the middle of the slot write
/// (the image is a FIFO the test feeds by hand, so the kill lands mid-write every time): the
/// old slot b, which was good, lost its good mark before the write began, the node boots a,
/// and the next step resumes the install from the start and commits.
#[test]
fn killed_during_slot_write_resumes_from_a_good_slot() {
    use std::io::Write;
    let mut node = Node::new(Backend::Grub, true);
    let v2 = node.image("v2");
    let fifo = node.dir.path().join("v2-stream.img");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let streaming = crate::support_upgrade::Image {
        version: v2.version.clone(),
        path: fifo.clone(),
        bytes: v2.bytes.clone(),
    };
    let cfg_fifo = write_config(node.dir.path(), &streaming, 3);
    std::fs::rename(&cfg_fifo, node.dir.path().join("config-fifo.yaml")).unwrap();
    let cfg_fifo = node.dir.path().join("config-fifo.yaml");

    let mut args: Vec<String> = vec!["upgrade".into(), "step".into()];
    args.extend(node.cli_args());
    args.extend(["--config".into(), cfg_fifo.display().to_string()]);
    let mut child = bosun()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Blocks until bosun opens the image for reading.
    let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let half = v2.bytes.len() / 2;
    pipe.write_all(&v2.bytes[..half]).unwrap();
    pipe.flush().unwrap();
    // Wait until the first bytes reached the slot, then pull the plug.
    let start = std::time::Instant::now();
    while !std::fs::read(&node.slots.b)
        .unwrap()
        .starts_with(&v2.bytes[..4096])
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "bosun never wrote the slot"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(pipe);

    assert!(matches!(
        node.state().lifecycle,
        Lifecycle::Downloading { attempts: 1, .. }
    ));
    assert_eq!(node.slot_version(Slot::B), None, "slot b is torn");
    let env = node.env().read().unwrap();
    assert!(!env.is_good(Slot::B), "torn slot b must not be good: {env}");
    node.assert_bootable("after SIGKILL mid-write");
    assert_eq!(node.boot(), Slot::A);

    // The same image (version + sha256) from a regular file: the install resumes.
    let cfg = write_config(node.dir.path(), &v2, 3);
    let out = step_cli(&node, &cfg, "pending");
    assert!(out.contains("installed v2"), "{out}");
    assert!(matches!(node.state().lifecycle, Lifecycle::Staged { .. }));
    assert_eq!(node.boot(), Slot::B);
    step_cli(&node, &cfg, "pending");
    let out = step_cli(&node, &cfg, "healthy");
    assert!(out.contains("state: committed"), "{out}");
}

/// Two upgrades in a row: the second goes into slot a (the first's fallback), with b, the
/// committed slot, as the fallback of its trial.
#[test]
fn consecutive_upgrades_alternate_slots() {
    for backend in ALL_BACKENDS {
        let mut node = Node::new(backend, false);
        let power = Power::unlimited();
        for (version, new_slot) in [("v2", Slot::B), ("v3", Slot::A)] {
            let c = node.image(version).config(3);
            let r = node
                .actor(&power)
                .step(Some(&c), HealthInput::Pending)
                .unwrap();
            assert!(r.reboot_requested, "{backend:?} {version}");
            assert_eq!(node.slot_version(new_slot).as_deref(), Some(version));
            node.assert_bootable(&format!("{backend:?} {version} staged"));
            assert_eq!(node.boot(), new_slot, "{backend:?} {version}");
            node.actor(&power)
                .step(Some(&c), HealthInput::Pending)
                .unwrap();
            let r = node
                .actor(&power)
                .step(Some(&c), HealthInput::Healthy)
                .unwrap();
            assert!(
                matches!(r.state.lifecycle, Lifecycle::Committed { slot, .. } if slot == new_slot),
                "{backend:?} {version}: {:?}",
                r.state.lifecycle
            );
            let env = node.env().read().unwrap();
            assert_eq!(env.primary, new_slot, "{backend:?}");
            assert!(
                env.is_good(new_slot.other()),
                "{backend:?}: old slot stays good"
            );
        }
        assert_eq!(node.state().counters.committed, 2);
    }
}

/// Uncompressed size of the images served over HTTP (zstd brings it to about a quarter).
const HTTP_IMAGE_SIZE: u64 = 8 << 20;

/// A config whose `upgrade.image` is `url` (the zstd file of `img`), with its SHA-256 and size.
fn write_http_config(dir: &Path, img: &ZstdImage, url: &str) -> String {
    let path = dir.join(format!("config-{}-http.yaml", img.image.version));
    std::fs::write(
        &path,
        format!(
            "hostname: edge-01\nupgrade:\n  version: {}\n  image: {url}\n  sha256: {}\n  size: {}\n  tries: 3\n",
            img.image.version, img.zst_sha_hex, img.zst_len
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The step that installed `img` into b asked for a reboot: boot b, run the trial, commit it
/// on a healthy verdict, and check slot b holds exactly the uncompressed image.
fn boot_trial_and_commit(node: &mut Node, cfg: &str, img: &ZstdImage) {
    let env = node.env().read().unwrap();
    assert_eq!(env.next_boot(), Slot::B, "trial of b scheduled: {env}");
    assert!(env.is_good(Slot::A) && env.primary == Slot::A, "{env}");
    node.assert_bootable("after staging");
    assert_eq!(node.boot(), Slot::B);
    let out = step_cli(node, cfg, "pending");
    assert!(out.contains("state: trial"), "{out}");
    let out = step_cli(node, cfg, "healthy");
    assert!(out.contains("state: committed"), "{out}");
    assert_eq!(
        node.env().read().unwrap(),
        BootState {
            primary: Slot::B,
            trial: None,
            good: GoodSlots { a: true, b: true }
        }
    );
    assert_eq!(node.boot(), Slot::B);
    assert_eq!(
        sha256_file(&node.slots.b),
        hex::encode(Sha256::digest(&img.image.bytes)),
        "slot b must hold exactly the uncompressed image"
    );
    let st = node.state();
    assert_eq!(st.counters.committed, 1);
    assert_eq!(
        st.metrics(Some(Slot::B)).current_version.as_deref(),
        Some(img.image.version.as_str())
    );
}

#[test]
fn http_zstd_image_installs_trials_and_commits_through_the_binary() {
    let mut node = Node::new(Backend::Grub, false);
    let v2 = node.zstd_image("v2", HTTP_IMAGE_SIZE);
    let srv = Server::start_background(&[("v2.img.zst", &v2.zst)]);
    let cfg = write_http_config(node.dir.path(), &v2, &srv.url("v2.img.zst"));

    let out = step_cli(&node, &cfg, "pending");
    assert!(out.contains("installed v2"), "{out}");
    assert!(out.contains("reboot requested"), "{out}");
    assert!(out.contains("state: staged"), "{out}");
    assert_eq!(node.slot_version(Slot::B).as_deref(), Some("v2"));
    assert_eq!(srv.count(&srv.st.requests), 1);
    assert_eq!(srv.count(&srv.st.range_requests), 0);
    assert_eq!(srv.count(&srv.st.bytes_served), v2.zst_len);
    boot_trial_and_commit(&mut node, &cfg, &v2);
    assert_eq!(srv.count(&srv.st.requests), 1, "downloaded once");
}

#[test]
fn http_download_cut_leaves_boot_env_untouched_then_resumes_with_range() {
    let mut node = Node::new(Backend::Uboot, false);
    let v2 = node.zstd_image("v2", HTTP_IMAGE_SIZE);
    let srv = Server::start_background(&[("v2.img.zst", &v2.zst)]);
    let cut = v2.zst_len / 2;
    srv.cut_at(&[cut]);
    let cfg = write_http_config(node.dir.path(), &v2, &srv.url("v2.img.zst"));
    let env_before = node.env().read().unwrap();
    assert_eq!(env_before, BootState::initial());
    let slot_b_before = std::fs::read(&node.slots.b).unwrap();

    // First pass: the connection dies halfway through the download.
    let mut args: Vec<String> = vec!["upgrade".into(), "step".into()];
    args.extend(node.cli_args());
    args.extend(["--config".into(), cfg.clone()]);
    let (ok, out, err) = run_bosun(&args);
    assert!(
        !ok,
        "a cut download must fail the step\nstdout: {out}\nstderr: {err}"
    );
    assert!(out.contains("slot b: installing into"), "{out}");
    assert!(out.contains("state: downloading"), "{out}");
    assert!(!out.contains("reboot"), "{out}");
    match &node.state().lifecycle {
        Lifecycle::Downloading {
            slot: Slot::B,
            attempts: 1,
            last_error: Some(e),
            ..
        } => assert!(!e.is_empty()),
        other => panic!("expected downloading with the error recorded: {other:?}"),
    }
    // Never made bootable before the hash was verified: the boot env is exactly as before
    // (no trial, a still primary and good), and the unverified download never reached the
    // slot (it sits in the spool).
    assert_eq!(node.env().read().unwrap(), env_before);
    assert_eq!(std::fs::read(&node.slots.b).unwrap(), slot_b_before);
    assert_eq!(node.slot_version(Slot::B), None);
    node.assert_bootable("after the cut download");
    let progress_file = node.state_dir.join("install-progress.json");
    let p = read_progress(&progress_file)
        .unwrap()
        .expect("progress saved at the cut");
    assert!(!p.is_complete());
    assert!(
        p.downloaded > 0 && p.downloaded <= cut,
        "saved {} for a cut at {cut}",
        p.downloaded
    );
    assert_eq!(
        std::fs::metadata(spool_path(&progress_file)).unwrap().len(),
        p.downloaded
    );
    assert_eq!(srv.count(&srv.st.range_requests), 0);
    // A power cycle now still boots a.
    assert_eq!(node.boot(), Slot::A);

    // Second pass: resumes where the first stopped and completes.
    let out = step_cli(&node, &cfg, "pending");
    assert!(out.contains("installed v2"), "{out}");
    assert!(out.contains("reboot requested"), "{out}");
    assert!(out.contains("state: staged"), "{out}");
    assert_eq!(srv.count(&srv.st.requests), 2);
    assert_eq!(
        srv.count(&srv.st.range_requests),
        1,
        "the retry asked for a range"
    );
    assert_eq!(srv.count(&srv.st.partial_responses), 1);
    // The server produced the first half up to the cut, then only what the client lacked.
    assert_eq!(
        srv.count(&srv.st.bytes_served),
        cut + (v2.zst_len - p.downloaded),
        "resumed from byte {}",
        p.downloaded
    );
    assert!(read_progress(&progress_file)
        .unwrap()
        .unwrap()
        .is_complete());
    assert!(!spool_path(&progress_file).exists(), "spool removed");
    boot_trial_and_commit(&mut node, &cfg, &v2);
    assert_eq!(srv.count(&srv.st.requests), 2);
}
