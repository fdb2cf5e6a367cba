//! `bosun plan` / `bosun apply` as the real binary against the example repo and the config
//! fixtures, in throwaway roots.

use std::path::Path;

use crate::config_cli::{bosun, workspace};
use crate::support::tree;

fn run(args: &[&str], root: &Path, repo: &Path) -> std::process::Output {
    bosun()
        .args(args)
        .arg("--repo")
        .arg(repo)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn plan_apply_replan_and_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let repo = workspace().join("example-repo");
    let host = ["--hostname", "edge-01"];

    let plan = run(&["plan", host[0], host[1]], &root, &repo);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let text = String::from_utf8_lossy(&plan.stdout);
    for path in [
        "/etc/motd",
        "/etc/docker/daemon.json",
        "/etc/hostname",
        "/etc/sysctl.d/90-bosun.conf",
        "/home/rancher/.ssh/authorized_keys",
    ] {
        assert!(
            text.contains(&format!("+ create {path}")),
            "{path} missing from plan:\n{text}"
        );
    }
    assert!(
        text.contains("+{\n") || text.contains("+  \"log-driver\": \"journald\""),
        "diff of daemon.json missing:\n{text}"
    );
    assert!(
        std::fs::read_dir(&root).unwrap().next().is_none(),
        "plan must not write"
    );

    let apply = run(&["apply", host[0], host[1]], &root, &repo);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert!(String::from_utf8_lossy(&apply.stdout)
        .contains("would run: systemctl restart k3s-agent.service"));
    assert_eq!(
        std::fs::read(root.join("usr/local/lib/edge/magic.bin")).unwrap(),
        b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x80\x10"
    );

    let again = run(&["plan", host[0], host[1]], &root, &repo);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Drift: edit one managed file by hand → exactly that file shows up.
    std::fs::write(root.join("etc/motd"), "hand edit\n").unwrap();
    let drift = run(
        &["plan", "--format", "json", host[0], host[1]],
        &root,
        &repo,
    );
    assert_eq!(drift.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&drift.stdout).unwrap();
    assert_eq!(v["summary"]["update"], 1, "{v}");
    assert_eq!(v["summary"]["create"], 0, "{v}");
    assert_eq!(v["summary"]["delete"], 0, "{v}");
    assert!(v.to_string().contains("/etc/motd"));
    let text = run(&["plan", host[0], host[1]], &root, &repo);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("-hand edit"), "{text}");
}

#[test]
fn every_invalid_fixture_makes_apply_fail_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // A root with something in it, so "unchanged" means something.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "before\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let before = tree(&root);
    let dir = workspace().join("tests/fixtures/config/invalid");
    let mut count = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read(&p).unwrap();
        let strict = String::from_utf8_lossy(&text)
            .lines()
            .any(|l| l.trim() == "# strict");
        let size = String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("# max-file-size: ").map(str::to_string));
        // max-file-size fixtures are only invalid under their lowered cap; apply uses the default.
        if size.is_some() {
            continue;
        }
        let repo = tmp.path().join("repo");
        let _ = std::fs::remove_dir_all(&repo);
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("config.yaml"), &text).unwrap();
        let mut cmd = bosun();
        cmd.args(["apply", "--hostname", "n1", "--repo"])
            .arg(&repo)
            .arg("--root")
            .arg(&root);
        if strict {
            cmd.arg("--strict");
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: apply accepted it:\n{}",
            p.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("config.yaml:"),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(tree(&root), before, "{}: root changed", p.display());
        count += 1;
    }
    assert!(count >= 30, "only {count} fixtures checked");
}

#[test]
fn plan_output_never_contains_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("config.yaml"),
        "k3os:\n  token: K10TOKENSECRET::server:abc\n  password: PLAINPASSWORDSECRET\n  wifi:\n  - name: shop\n    passphrase: WIFIPASSSECRET\nwrite_files:\n- path: /etc/private.key\n  permissions: '0600'\n  content: FILECONTENTSECRET\n",
    )
    .unwrap();
    for format in ["text", "json"] {
        let out = bosun()
            .args(["plan", "--hostname", "n1", "--format", format, "--repo"])
            .arg(&repo)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("/etc/private.key"), "{all}");
        for secret in [
            "TOKENSECRET",
            "PLAINPASSWORDSECRET",
            "WIFIPASSSECRET",
            "FILECONTENTSECRET",
        ] {
            assert!(
                !all.contains(secret),
                "{format} output leaks {secret}:\n{all}"
            );
        }
    }
    // After apply, a changed secret shows only hashes.
    let apply = bosun()
        .args(["apply", "--hostname", "n1", "--repo"])
        .arg(&repo)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let cfg = std::fs::read_to_string(repo.join("config.yaml")).unwrap();
    std::fs::write(
        repo.join("config.yaml"),
        cfg.replace("K10TOKENSECRET", "K10NEWTOKENSECRET"),
    )
    .unwrap();
    let out = bosun()
        .args(["plan", "--hostname", "n1", "--repo"])
        .arg(&repo)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(all.contains("content changed (secret, sha256"), "{all}");
    assert!(!all.contains("TOKENSECRET"), "{all}");
}
