//! The filesystem layer, planner and transactional apply against real directories: create,
//! update (content / mode-only / owner-only), prune, symlink handling, root confinement,
//! rollback of a failed staging and roll-forward of a committed journal.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bosun::apply::{self, journal, ApplyOptions, Durability};
use bosun::fsroot::{EntryKind, FsError, Resolver, Root};
use bosun::plan;

use crate::support_apply::{all_entries, converge, desired, file, plan_for, set, temp_files};

fn meta(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

fn no_leftovers(root: &Path, state: &Path) {
    assert_eq!(
        temp_files(root),
        Vec::<std::path::PathBuf>::new(),
        "temp files left under root"
    );
    assert!(
        !state.join(journal::JOURNAL_FILE).exists(),
        "journal left behind"
    );
    assert!(
        !state.join(journal::INTENT_FILE).exists(),
        "intent left behind"
    );
    assert_eq!(
        temp_files(state),
        Vec::<std::path::PathBuf>::new(),
        "temp files left in state dir"
    );
}

#[test]
fn apply_creates_files_with_mode_owner_and_parents_then_is_idempotent() {
    for (durability, resolver) in [
        (Durability::FsyncEach, Resolver::Openat2),
        (Durability::SyncfsOnce, Resolver::Walk),
    ] {
        let t = tempfile::tempdir().unwrap();
        let (rootp, state) = (t.path().join("root"), t.path().join("state"));
        std::fs::create_dir(&rootp).unwrap();
        let root = Root::open_with_resolver(&rootp, resolver).unwrap();
        let d = desired([
            file("/etc/rancher/k3s/config.yaml", "token: x\n", 0o600, 0, 0),
            file(
                "/home/rancher/.ssh/authorized_keys",
                "ssh-ed25519 AAAA\n",
                0o600,
                1000,
                1000,
            ),
            file("/etc/hostname", "node-1\n", 0o644, 0, 0),
        ]);
        let (p, report) = converge(
            &root,
            &state,
            &d,
            ApplyOptions {
                durability,
                ..Default::default()
            },
        );
        assert_eq!(p.creates.len(), 3);
        assert_eq!(report.written, 3);
        assert_eq!(
            std::fs::read(rootp.join("etc/rancher/k3s/config.yaml")).unwrap(),
            b"token: x\n"
        );
        assert_eq!(
            meta(&rootp.join("etc/rancher/k3s/config.yaml")),
            (0o600, 0, 0)
        );
        assert_eq!(
            meta(&rootp.join("home/rancher/.ssh/authorized_keys")),
            (0o600, 1000, 1000)
        );
        assert_eq!(meta(&rootp.join("etc/hostname")), (0o644, 0, 0));
        // Created parents are 0755 root:root regardless of umask.
        for dir in ["etc", "etc/rancher", "etc/rancher/k3s", "home/rancher/.ssh"] {
            assert_eq!(meta(&rootp.join(dir)), (0o755, 0, 0), "{dir}");
        }
        assert_eq!(
            apply::load_managed(&state).unwrap(),
            set(&[
                "/etc/hostname",
                "/etc/rancher/k3s/config.yaml",
                "/home/rancher/.ssh/authorized_keys"
            ])
        );
        no_leftovers(&rootp, &state);

        let again = plan_for(&root, &state, &d);
        assert!(
            !again.has_file_changes(),
            "second plan not empty: {again:?}"
        );
        assert_eq!(again.unchanged, 3);
    }
}

#[test]
fn mode_only_and_owner_only_updates_keep_content() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir(&rootp).unwrap();
    let root = Root::open(&rootp).unwrap();
    let target = rootp.join("etc/app.conf");
    converge(
        &root,
        &state,
        &desired([file("/etc/app.conf", "a=1\n", 0o644, 0, 0)]),
        Default::default(),
    );

    let (p, _) = converge(
        &root,
        &state,
        &desired([file("/etc/app.conf", "a=1\n", 0o640, 0, 0)]),
        Default::default(),
    );
    assert_eq!(p.updates.len(), 1);
    let u = &p.updates[0];
    assert_eq!(
        (u.content_changed, u.mode_changed, u.owner_changed),
        (false, true, false)
    );
    assert!(plan::render_text(&p).contains("mode 0644→0640"));
    assert_eq!(meta(&target), (0o640, 0, 0));
    assert_eq!(std::fs::read(&target).unwrap(), b"a=1\n");

    let (p, _) = converge(
        &root,
        &state,
        &desired([file("/etc/app.conf", "a=1\n", 0o640, 1000, 1001)]),
        Default::default(),
    );
    let u = &p.updates[0];
    assert_eq!(
        (u.content_changed, u.mode_changed, u.owner_changed),
        (false, false, true)
    );
    assert!(plan::render_text(&p).contains("owner 0:0→1000:1001"));
    assert_eq!(meta(&target), (0o640, 1000, 1001));
    assert_eq!(std::fs::read(&target).unwrap(), b"a=1\n");

    // Setuid survives: mode is set after chown (which would clear it).
    converge(
        &root,
        &state,
        &desired([file("/etc/app.conf", "a=1\n", 0o4750, 1000, 1001)]),
        Default::default(),
    );
    assert_eq!(meta(&target), (0o4750, 1000, 1001));
    // A pre-existing file (not created by bosun) stays managed only by content, never by prune.
    assert_eq!(
        apply::load_managed(&state).unwrap(),
        set(&["/etc/app.conf"])
    );
    no_leftovers(&rootp, &state);
}

#[test]
fn prune_deletes_removed_file_but_never_one_bosun_did_not_create() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir_all(rootp.join("etc")).unwrap();
    std::fs::write(rootp.join("etc/hostname"), "preinstalled\n").unwrap();
    std::fs::write(rootp.join("etc/unrelated"), "not ours\n").unwrap();
    let root = Root::open(&rootp).unwrap();

    let d1 = desired([
        file("/etc/hostname", "node-1\n", 0o644, 0, 0),
        file("/etc/bosun-made.conf", "x\n", 0o644, 0, 0),
    ]);
    let (p, _) = converge(&root, &state, &d1, Default::default());
    assert_eq!((p.creates.len(), p.updates.len()), (1, 1));
    assert_eq!(
        apply::load_managed(&state).unwrap(),
        set(&["/etc/bosun-made.conf"])
    );

    // Both files leave the config.
    let (p, report) = converge(&root, &state, &desired([]), Default::default());
    assert_eq!(
        p.deletes
            .iter()
            .map(|d| d.path.as_str())
            .collect::<Vec<_>>(),
        vec!["/etc/bosun-made.conf"]
    );
    assert_eq!(report.deleted, 1);
    assert!(
        !rootp.join("etc/bosun-made.conf").exists(),
        "file bosun created was not pruned"
    );
    assert_eq!(
        std::fs::read_to_string(rootp.join("etc/hostname")).unwrap(),
        "node-1\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootp.join("etc/unrelated")).unwrap(),
        "not ours\n"
    );
    assert!(apply::load_managed(&state).unwrap().is_empty());
    no_leftovers(&rootp, &state);
}

/// Symlinks in parents resolve inside the root, never out of it (`RESOLVE_IN_ROOT`): an
/// absolute target starts again at the root and `..` at the root stays there. (Until issue 12
/// item 12 both were refused as escapes; they now resolve to the root's own copy of the path.)
#[test]
fn symlinked_parents_pointing_out_of_root_resolve_inside_it() {
    for resolver in [Resolver::Openat2, Resolver::Walk] {
        let t = tempfile::tempdir().unwrap();
        let (rootp, outside) = (t.path().join("root"), t.path().join("outside"));
        std::fs::create_dir_all(rootp.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "outside secret\n").unwrap();
        std::fs::write(rootp.join("real/passwd"), "inside\n").unwrap();
        // The host path of `outside`, and `/outside`, recreated inside the root.
        let abs_in_root = rootp.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&abs_in_root).unwrap();
        std::fs::write(abs_in_root.join("passwd"), "absolute, inside\n").unwrap();
        std::fs::create_dir_all(rootp.join("outside")).unwrap();
        std::fs::write(rootp.join("outside/passwd"), "climbed, inside\n").unwrap();
        // Absolute symlink, relative symlink climbing out, and one that stays inside.
        std::os::unix::fs::symlink(&outside, rootp.join("etc")).unwrap();
        std::os::unix::fs::symlink("../outside", rootp.join("rel")).unwrap();
        std::os::unix::fs::symlink("real", rootp.join("inside")).unwrap();
        std::fs::create_dir_all(rootp.join("nested")).unwrap();
        std::os::unix::fs::symlink("../real", rootp.join("nested/back")).unwrap();
        let root = Root::open_with_resolver(&rootp, resolver).unwrap();

        for (path, want) in [
            ("/etc/passwd", "absolute, inside\n"),
            ("/rel/passwd", "climbed, inside\n"),
            ("/inside/passwd", "inside\n"),
            ("/nested/back/passwd", "inside\n"),
        ] {
            let seen = root.observe_one(path).unwrap().unwrap();
            assert_eq!(seen.content, want.as_bytes(), "{resolver:?} {path}");
        }

        // Apply writes through the absolute symlink inside the root; nothing outside changes.
        let state = t.path().join("state");
        let d = desired([file("/etc/passwd", "pwned\n", 0o644, 0, 0)]);
        converge(&root, &state, &d, Default::default());
        assert_eq!(
            std::fs::read_to_string(abs_in_root.join("passwd")).unwrap(),
            "pwned\n"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("passwd")).unwrap(),
            "outside secret\n"
        );
        assert_eq!(
            all_entries(&outside).len(),
            1,
            "temp file written outside the root"
        );
        no_leftovers(&rootp, &state);
    }
}

#[test]
fn symlink_at_managed_path_is_replaced_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, outside) = (t.path().join("root"), t.path().join("outside"));
    std::fs::create_dir_all(rootp.join("etc")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
    std::os::unix::fs::symlink(outside.join("resolv.conf"), rootp.join("etc/resolv.conf")).unwrap();
    let root = Root::open(&rootp).unwrap();
    let seen = root.observe_one("/etc/resolv.conf").unwrap().unwrap();
    assert_eq!(seen.kind, EntryKind::Symlink);
    assert!(seen.content.is_empty(), "symlink was followed");

    let state = t.path().join("state");
    let d = desired([file(
        "/etc/resolv.conf",
        "nameserver 10.0.0.1\n",
        0o644,
        0,
        0,
    )]);
    converge(&root, &state, &d, Default::default());
    let m = std::fs::symlink_metadata(rootp.join("etc/resolv.conf")).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!(
        std::fs::read_to_string(rootp.join("etc/resolv.conf")).unwrap(),
        "nameserver 10.0.0.1\n"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("resolv.conf")).unwrap(),
        "nameserver 9.9.9.9\n"
    );
}

#[test]
fn directory_and_fifo_at_managed_path_are_reported_not_opened() {
    let t = tempfile::tempdir().unwrap();
    let rootp = t.path().join("root");
    std::fs::create_dir_all(rootp.join("etc/dir")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        rootp.join("etc/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let root = Root::open(&rootp).unwrap();
    assert_eq!(
        root.observe_one("/etc/dir").unwrap().unwrap().kind,
        EntryKind::Directory
    );
    // Opening a fifo without a writer would block; observation must not open it.
    assert_eq!(
        root.observe_one("/etc/fifo").unwrap().unwrap().kind,
        EntryKind::Fifo
    );
    assert_eq!(root.observe_one("/etc/missing").unwrap(), None);
    assert_eq!(root.observe_one("/nodir/missing").unwrap(), None);
}

#[test]
fn parent_that_is_a_file_fails_before_anything_is_written() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir(&rootp).unwrap();
    let root = Root::open(&rootp).unwrap();
    converge(
        &root,
        &state,
        &desired([file("/a/one", "old\n", 0o644, 0, 0)]),
        Default::default(),
    );
    std::fs::write(rootp.join("blocker"), "a regular file\n").unwrap();
    let d = desired([
        file("/a/one", "new\n", 0o644, 0, 0),
        file("/blocker/x", "never\n", 0o644, 0, 0),
    ]);
    // Observation already names the problem...
    let e = root.observe_one("/blocker/x").unwrap_err();
    assert!(matches!(e, FsError::NotADirectory { .. }), "{e:?}");
    assert!(
        e.to_string().contains("/blocker/x") && e.to_string().contains("regular file"),
        "{e}"
    );
    // ...and apply re-checks every parent before writing, should the disk change after planning.
    let mut obs = bosun::fsroot::Observation::new();
    obs.insert("/a/one", root.observe_one("/a/one").unwrap());
    obs.insert("/blocker/x", None);
    let p = plan::plan(&d, &obs, &apply::load_managed(&state).unwrap()).unwrap();
    let e = apply::apply(&root, &state, &p).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/blocker/x") && msg.contains("regular file"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(rootp.join("a/one")).unwrap(),
        "old\n"
    );
    no_leftovers(&rootp, &state);
}

/// Clears the immutable attribute again even if the test fails, so the tempdir can be removed.
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn set(p: &'a Path) -> Self {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(p)
            .status()
            .expect("run chattr (e2fsprogs)");
        assert!(st.success(), "chattr +i {} failed", p.display());
        Immutable(p)
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

#[test]
fn failed_staging_rolls_back_every_temp_and_keeps_old_files() {
    // ext4 (the temp dir's filesystem here) honours the immutable flag even for root, which
    // makes creating the second temp file fail half-way through staging.
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir_all(rootp.join("locked")).unwrap();
    let root = Root::open(&rootp).unwrap();
    converge(
        &root,
        &state,
        &desired([file("/a/one", "old\n", 0o644, 0, 0)]),
        Default::default(),
    );

    // "/a/new/deep/file" and "/a/one" are staged first (sorted), then "/locked/x" fails: its
    // directory is immutable.
    let d = desired([
        file("/a/new/deep/file", "new\n", 0o644, 0, 0),
        file("/a/one", "new\n", 0o644, 0, 0),
        file("/locked/x", "never\n", 0o644, 0, 0),
    ]);
    let p = plan_for(&root, &state, &d);
    let locked = rootp.join("locked");
    let guard = Immutable::set(&locked);
    let e = apply::apply(&root, &state, &p).unwrap_err();
    drop(guard);
    let msg = e.to_string();
    assert!(
        msg.contains("/locked/x") && msg.contains("create temp file"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(rootp.join("a/one")).unwrap(),
        "old\n"
    );
    assert!(!rootp.join("locked/x").exists());
    assert!(
        !rootp.join("a/new").exists(),
        "directory created by the failed apply left behind"
    );
    assert_eq!(apply::load_managed(&state).unwrap(), set(&["/a/one"]));
    no_leftovers(&rootp, &state);
}

#[test]
fn recover_rolls_forward_a_committed_journal_and_is_idempotent() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir_all(rootp.join("etc")).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(rootp.join("etc/a"), "old a\n").unwrap();
    std::fs::write(rootp.join("etc/b"), "new b\n").unwrap(); // already renamed before the crash
    std::fs::write(rootp.join("etc/gone"), "pruned\n").unwrap();
    let ta = apply::temp_name("a", "00000000000000aa");
    std::fs::write(rootp.join("etc").join(&ta), "new a\n").unwrap();
    // A stray temp of the same transaction that the journal does not name (cannot happen in
    // practice) and one of an older, uncommitted transaction in the intent's directory.
    let j = journal::Journal::new(
        "00000000000000aa".into(),
        vec![
            journal::StagedRename {
                path: "/etc/a".into(),
                temp: ta.clone(),
            },
            journal::StagedRename {
                path: "/etc/b".into(),
                temp: apply::temp_name("b", "00000000000000aa"),
            },
        ],
        vec!["/etc/gone".into()],
        set(&["/etc/a", "/etc/b"]),
    );
    journal::write_journal(&state, &j).unwrap();
    journal::write_intent(
        &state,
        &journal::Intent::new("00000000000000aa".into(), set(&["/etc"])),
    )
    .unwrap();

    let root = Root::open(&rootp).unwrap();
    let r = apply::recover(&root, &state).unwrap();
    assert_eq!(r.rolled_forward.as_deref(), Some("00000000000000aa"));
    assert_eq!((r.renamed, r.deleted), (1, 1));
    assert_eq!(
        std::fs::read_to_string(rootp.join("etc/a")).unwrap(),
        "new a\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootp.join("etc/b")).unwrap(),
        "new b\n"
    );
    assert!(!rootp.join("etc/gone").exists());
    assert_eq!(
        apply::load_managed(&state).unwrap(),
        set(&["/etc/a", "/etc/b"])
    );
    no_leftovers(&rootp, &state);
    // Running it again changes nothing.
    assert_eq!(apply::recover(&root, &state).unwrap(), Default::default());
}

#[test]
fn recover_removes_temps_of_an_uncommitted_transaction() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir_all(rootp.join("etc/sub")).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(rootp.join("etc/a"), "old a\n").unwrap();
    std::fs::write(
        rootp
            .join("etc")
            .join(apply::temp_name("a", "00000000000000bb")),
        "new a\n",
    )
    .unwrap();
    std::fs::write(
        rootp
            .join("etc/sub")
            .join(apply::temp_name("c", "00000000000000bb")),
        "half",
    )
    .unwrap();
    // A state-file temp named after a live pid (ours): only the state dir's lock says whether
    // its writer is still writing, and no one holds it.
    std::fs::write(
        state.join(format!(
            ".apply-journal.json.tmp.{}.0123456789ab",
            std::process::id()
        )),
        "{ half a journal",
    )
    .unwrap();
    journal::write_intent(
        &state,
        &journal::Intent::new(
            "00000000000000bb".into(),
            set(&["/etc", "/etc/sub", "/not/created"]),
        )
        .with_created_dirs(vec![
            "/etc/sub".into(),
            "/etc".into(),
            "/not/created".into(),
        ]),
    )
    .unwrap();

    let root = Root::open(&rootp).unwrap();
    let r = apply::recover(&root, &state).unwrap();
    assert_eq!(r.rolled_back.as_deref(), Some("00000000000000bb"));
    assert_eq!(r.removed_temps, 2);
    assert_eq!(
        std::fs::read_to_string(rootp.join("etc/a")).unwrap(),
        "old a\n"
    );
    // The emptied directory the transaction created goes; a non-empty one stays.
    assert!(!rootp.join("etc/sub").exists());
    assert!(rootp.join("etc").is_dir());
    no_leftovers(&rootp, &state);
}

/// A committed transaction interrupted after renaming one of its two new files: `/etc/b` is in
/// place, `/etc/c` still staged, the managed set on disk is the old one (`/etc/a`).
fn half_rolled_forward(rootp: &Path, state: &Path) {
    std::fs::create_dir_all(rootp.join("etc")).unwrap();
    std::fs::create_dir_all(state).unwrap();
    apply::write_managed(state, &set(&["/etc/a"])).unwrap();
    std::fs::write(rootp.join("etc/b"), "b\n").unwrap();
    let tc = apply::temp_name("c", "00000000000000cc");
    std::fs::write(rootp.join("etc").join(&tc), "c\n").unwrap();
    let j = journal::Journal::new(
        "00000000000000cc".into(),
        vec![
            journal::StagedRename {
                path: "/etc/b".into(),
                temp: apply::temp_name("b", "00000000000000cc"),
            },
            journal::StagedRename {
                path: "/etc/c".into(),
                temp: tc,
            },
        ],
        vec!["/etc/a".into()],
        set(&["/etc/b", "/etc/c"]),
    );
    journal::write_journal(state, &j).unwrap();
}

#[test]
fn a_plan_computed_before_recovery_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    half_rolled_forward(&rootp, &state);
    let root = Root::open(&rootp).unwrap();
    let d = desired([
        file("/etc/b", "b\n", 0o644, 0, 0),
        file("/etc/c", "c\n", 0o644, 0, 0),
    ]);
    // Planned from the half-renamed tree and the old managed set: /etc/b looks like a file
    // bosun never created.
    let managed = apply::load_managed(&state).unwrap();
    let paths = plan::paths_to_observe(&d, &managed);
    let stale = plan::plan(
        &d,
        &root.observe(paths.iter().map(String::as_str)).unwrap(),
        &managed,
    )
    .unwrap();
    assert!(!stale.managed_after.contains("/etc/b"));
    let e = apply::apply(&root, &state, &stale).unwrap_err();
    assert!(
        matches!(&e, apply::ApplyError::PlanPredatesRecovery { txid } if txid == "00000000000000cc"),
        "{e}"
    );
    // The recovery itself happened; nothing of the stale plan did.
    assert_eq!(
        apply::load_managed(&state).unwrap(),
        set(&["/etc/b", "/etc/c"])
    );
    no_leftovers(&rootp, &state);
}

#[test]
fn a_plan_through_the_recovered_view_counts_the_interrupted_files_as_created() {
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    half_rolled_forward(&rootp, &state);
    let root = Root::open(&rootp).unwrap();
    let before = crate::support::tree(t.path());
    let view = apply::RecoveredView::open(&root, &state).unwrap();
    assert_eq!(
        view.pending(),
        Some(&apply::PendingRecovery::RollForward {
            txid: "00000000000000cc".into(),
            renames: 2,
            deletes: 1
        })
    );
    assert_eq!(view.managed(), &set(&["/etc/b", "/etc/c"]));
    assert_eq!(
        view.observe_one("/etc/c").unwrap().map(|o| o.content),
        Some(b"c\n".to_vec())
    );
    assert_eq!(view.observe_one("/etc/a").unwrap(), None);
    assert_eq!(crate::support::tree(t.path()), before, "the view wrote");

    // Then the desired state drops /etc/c: the plan prunes it, and applying it over the
    // recovery works.
    let d = desired([file("/etc/b", "b\n", 0o644, 0, 0)]);
    let (p, report) = converge(&root, &state, &d, Default::default());
    assert_eq!(
        report.recovery.rolled_forward.as_deref(),
        Some("00000000000000cc")
    );
    assert_eq!(p.deletes.len(), 1);
    assert!(!rootp.join("etc/c").exists());
    assert_eq!(apply::load_managed(&state).unwrap(), set(&["/etc/b"]));
    no_leftovers(&rootp, &state);
}

/// A state-file temp whose writer (another process) still holds the state dir's lock is kept
/// by recovery, and removed by the next recovery once that process is gone: staleness is the
/// lock's to say, whatever pid the name carries.
#[test]
fn recover_keeps_a_state_temp_while_its_writer_holds_the_lock() {
    use std::io::BufRead;
    let t = tempfile::tempdir().unwrap();
    let (rootp, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir_all(&rootp).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let temp = state.join(".status.json.tmp.1.0123456789ab");
    std::fs::write(&temp, "{ half").unwrap();
    // flock(1) takes the same shared lock on the directory that write_atomic holds while a
    // temp exists, says so, and keeps it until killed.
    // --no-fork: the killed process is the lock holder itself.
    let mut writer = std::process::Command::new("flock")
        .args(["--shared", "--no-fork"])
        .arg(&state)
        .args(["sh", "-c", "echo locked; exec sleep 600"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(writer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let root = Root::open(&rootp).unwrap();
    apply::recover(&root, &state).unwrap();
    let kept = temp.exists();
    writer.kill().unwrap();
    writer.wait().unwrap();
    assert!(kept, "a temp was removed while its writer held the lock");
    apply::recover(&root, &state).unwrap();
    assert!(!temp.exists(), "the dead writer's temp was kept");
}
