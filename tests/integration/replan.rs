//! The no-op re-plan trusts stat stamps (`bosun::stamps`) instead of reading every managed
//! file, and still sees every change: the binary against throwaway roots, and `prepare` in the
//! library to see which files it had to read.

use std::path::Path;
use std::time::Duration;

use bosun::reconcile::{self, Target};
use bosun::snapshot::Snapshot;

use crate::config_cli::bosun;

const FILES: usize = 20;

/// A repo writing FILES files of 64 bytes each.
fn repo(dir: &Path) {
    let mut cfg = String::from("hostname: n1\nwrite_files:\n");
    for i in 0..FILES {
        cfg.push_str(&format!(
            "- path: /srv/f{i:02}\n  content: \"{:063}\\n\"\n",
            i
        ));
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.yaml"), cfg).unwrap();
}

fn cli(cmd: &str, repo: &Path, root: &Path) -> std::process::Output {
    bosun()
        .args([cmd, "--hostname", "n1", "--repo"])
        .arg(repo)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

/// Waits until the kernel's coarse clock (the one bosun compares file times with) is past the
/// ctime of every file under `dir`, so the files written before are no longer "racy" and can
/// be stamped. One tick is not always enough: with multigrain timestamps (Linux ≥ 6.13) a
/// file's ctime can be ahead of the coarse clock.
fn wait_past_ctimes(dir: &Path) {
    use rustix::time::{clock_gettime, ClockId};
    use std::os::unix::fs::MetadataExt;
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let m = e.unwrap().metadata().unwrap();
            (m.ctime(), m.ctime_nsec())
        })
        .max()
        .unwrap();
    loop {
        let now = clock_gettime(ClockId::RealtimeCoarse);
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        if (now.tv_sec as i64, now.tv_nsec as i64) > newest {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn after_an_apply_a_replan_reads_no_file_until_one_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, root) = (tmp.path().join("repo"), tmp.path().join("root"));
    repo(&repo_dir);
    std::fs::create_dir(&root).unwrap();
    let target = Target::basic("n1", &root, &root.join("var/lib/bosun"));
    let snap = Snapshot::node_from_dir(&repo_dir, "n1").unwrap();

    let first = reconcile::prepare(&snap, &target).await.unwrap();
    reconcile::apply_prepared(&first, &target, &bosun::runner::DryRunner::default()).unwrap();
    let after = reconcile::prepare(&snap, &target).await.unwrap();
    assert!(!after.plan.has_file_changes());
    // Files written within the last clock tick of the apply may be racy, so not stamped; an
    // apply once the clock is past their ctimes stamps them.
    wait_past_ctimes(&root.join("srv"));
    reconcile::apply_prepared(&after, &target, &bosun::runner::DryRunner::default()).unwrap();
    let trusted = reconcile::prepare(&snap, &target).await.unwrap();
    assert!(!trusted.plan.has_file_changes());
    let srv: Vec<&String> = trusted
        .unstamped
        .iter()
        .filter(|p| p.starts_with("/srv/"))
        .collect();
    assert!(srv.is_empty(), "read although stamped: {srv:?}");

    // A change of content with the same size, and mtime put back, is still seen.
    let f = root.join("srv/f03");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::write(&f, format!("{:063}\n", 99)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let drifted = reconcile::prepare(&snap, &target).await.unwrap();
    assert_eq!(drifted.changed_paths(), ["/srv/f03"]);
    assert_eq!(
        drifted
            .unstamped
            .iter()
            .filter(|p| p.starts_with("/srv/"))
            .count(),
        1
    );
}

#[test]
fn plan_after_apply_sees_same_size_edits_with_mtime_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, root) = (tmp.path().join("repo"), tmp.path().join("root"));
    repo(&repo_dir);
    std::fs::create_dir(&root).unwrap();
    let out = cli("apply", &repo_dir, &root);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_past_ctimes(&root.join("srv"));
    assert_eq!(cli("plan", &repo_dir, &root).status.code(), Some(0));
    for i in [0, FILES - 1] {
        let f = root.join(format!("srv/f{i:02}"));
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, format!("{:063}\n", 1000 + i)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    let out = cli("plan", &repo_dir, &root);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/srv/f00") && text.contains(&format!("/srv/f{:02}", FILES - 1)),
        "{text}"
    );
    // Replacing a file (a new inode) with the same content is no change.
    let f = root.join("srv/f05");
    let content = std::fs::read(&f).unwrap();
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, content).unwrap();
    let out = cli("apply", &repo_dir, &root);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("applied: 2 written"), "{text}");
}
