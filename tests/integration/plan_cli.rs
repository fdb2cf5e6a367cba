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

/// A Debian-like root whose installer already gave uid and gid 1000 to its first user.
fn debian_root(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000:Debian:/home/debian:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nshadow:x:42:\ndebian:x:1000:\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\ndebian:!:19000:0:99999:7:::\n",
    )
    .unwrap();
}

fn apply_config(config: &str, root: &Path, extra: &[&str]) -> std::process::Output {
    let repo = root.parent().unwrap().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("config.yaml"), config).unwrap();
    let out = bosun()
        .args(["apply", "--hostname", "n1"])
        .args(extra)
        .arg("--repo")
        .arg(&repo)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apply failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7Hc7aPnRu7mZGnTj0JYkLSP3JIe2ZjFvdRvyAa3xyz ops@example";

/// Regression (issue 12, item 11): on an installed Debian uid/gid 1000 belong to the first user.
/// A config that needs no account (only `/etc/motd`) leaves the account files alone; one with
/// ssh keys and a password creates the ssh user with the next free ids (same number for both);
/// an existing user named by `--ssh-user` is used as it is.
#[test]
fn apply_on_a_root_whose_uid_and_gid_1000_are_taken() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    debian_root(&root);
    let accounts = || {
        ["passwd", "group", "shadow"]
            .map(|f| std::fs::read_to_string(root.join("etc").join(f)).unwrap())
    };
    let before = accounts();

    apply_config(
        "write_files:\n- path: /etc/motd\n  content: hello\n",
        &root,
        &[],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).unwrap(),
        "hello"
    );
    assert_eq!(
        accounts(),
        before,
        "a config needing no account touched the account files"
    );

    // uid 1001 is free but gid 1001 is not: the first number free as both is 1002.
    std::fs::write(
        root.join("etc/group"),
        format!("{}docker:x:1001:\n", before[1]),
    )
    .unwrap();
    let config = format!(
        "ssh_authorized_keys:\n- {KEY}\nk3os:\n  password: '$6$salt$hash'\nwrite_files:\n- path: /etc/motd\n  content: hello\n"
    );
    apply_config(&config, &root, &[]);
    let [passwd, group, shadow] = accounts();
    assert_eq!(
        passwd,
        format!("{}rancher:x:1002:1002::/home/rancher:/bin/sh\n", before[0])
    );
    assert_eq!(
        group,
        format!("{}docker:x:1001:\nrancher:x:1002:\n", before[1])
    );
    assert_eq!(
        shadow,
        format!("{}rancher:$6$salt$hash:::::::\n", before[2])
    );
    let keys = root.join("home/rancher/.ssh/authorized_keys");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    let m = std::fs::metadata(&keys).unwrap();
    assert_eq!((m.uid(), m.gid()), (1002, 1002));

    // The installer's user, named as the ssh user, is used as it is.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    debian_root(&root);
    apply_config(&config, &root, &["--ssh-user", "debian"]);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(!passwd.contains("rancher"), "{passwd}");
    let keys = root.join("home/debian/.ssh/authorized_keys");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    let m = std::fs::metadata(&keys).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert!(std::fs::read_to_string(root.join("etc/shadow"))
        .unwrap()
        .contains("debian:$6$salt$hash:19000:0:99999:7:::\n"));
}

/// Regression (issue 12, item 12): absolute symlinks in parent directories are common on real
/// roots (Debian's `/var/lock → /run/lock`, `/var/lib/rancher → /data/rancher` on edge nodes)
/// and resolve inside the root, as if the root were `/` (openat2 `RESOLVE_IN_ROOT`): `bosun
/// apply --root` writes through them instead of refusing. One pointing at a host directory
/// outside the root, and one climbing out with `..`, still resolve inside the root: the host
/// directory is never written.
#[test]
fn apply_resolves_absolute_symlinks_in_parents_inside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "host file\n").unwrap();
    // The same host path, recreated inside the root: where the "outside" symlink must land.
    let outside_in_root = root.join(outside.strip_prefix("/").unwrap());
    for d in ["data/rancher", "run/lock", "var/lib", "opt", "outside"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::create_dir_all(&outside_in_root).unwrap();
    std::os::unix::fs::symlink("/data/rancher", root.join("var/lib/rancher")).unwrap();
    std::os::unix::fs::symlink("/run/lock", root.join("var/lock")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("opt/site")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../outside", root.join("opt/up")).unwrap();
    let out = apply_config(
        "write_files:\n\
         - path: /var/lib/rancher/k3s/server/manifests/app.yaml\n  content: app\n\
         - path: /var/lock/bosun.lock\n  content: lock\n\
         - path: /opt/site/site.conf\n  content: site\n\
         - path: /opt/up/up.conf\n  content: up\n",
        &root,
        &[],
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    assert_eq!(
        read(&root.join("data/rancher/k3s/server/manifests/app.yaml")),
        "app"
    );
    assert_eq!(read(&root.join("run/lock/bosun.lock")), "lock");
    assert_eq!(read(&outside_in_root.join("site.conf")), "site");
    assert_eq!(read(&root.join("outside/up.conf")), "up");
    let host: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        host,
        ["keep"],
        "the host directory outside the root was written"
    );
    // Nothing changes on a second run: the observation resolves the same way.
    let plan = bosun()
        .args(["plan", "--hostname", "n1", "--repo"])
        .arg(tmp.path().join("repo"))
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&plan.stdout)
    );
}
