//! Input that `apply` (or the node) would reject or misread is rejected by `bosun validate`
//! already, with `file:line:col` and the field, and `bosun apply` refuses it before writing
//! anything (issue 12, items 7, 8 and 14). Each test runs the real binary.

use std::path::PathBuf;

use crate::config_cli::bosun;
use crate::support::tree;

/// A throwaway repo (holding `config.yaml` = `config`) and an empty node root next to it.
struct Case {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    root: PathBuf,
}

impl Case {
    fn new(config: &str) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/motd"), "before\n").unwrap();
        std::fs::write(repo.join("config.yaml"), config).unwrap();
        Case {
            _tmp: tmp,
            repo,
            root,
        }
    }

    /// `bosun validate --repo`: exit code and stdout.
    fn validate(&self, extra: &[&str]) -> (Option<i32>, String) {
        let out = bosun()
            .arg("validate")
            .args(extra)
            .arg("--repo")
            .arg(&self.repo)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `bosun <cmd> --hostname n1 --repo … --root …`.
    fn run(&self, cmd: &str, extra: &[&str]) -> std::process::Output {
        bosun()
            .args([cmd, "--hostname", "n1"])
            .args(extra)
            .arg("--repo")
            .arg(&self.repo)
            .arg("--root")
            .arg(&self.root)
            .output()
            .unwrap()
    }

    /// Asserts that validate fails naming each of `wanted` (`config.yaml:L:C: field: …`
    /// prefixes), and that apply fails the same way without changing the root.
    fn rejected(&self, wanted: &[&str]) {
        let (code, stdout) = self.validate(&[]);
        assert_eq!(code, Some(1), "validate accepted it:\n{stdout}");
        for w in wanted {
            assert!(stdout.contains(w), "validate: wanted {w:?} in:\n{stdout}");
        }
        let before = tree(&self.root);
        let apply = self.run("apply", &[]);
        let stderr = String::from_utf8_lossy(&apply.stderr);
        assert_eq!(apply.status.code(), Some(1), "apply accepted it:\n{stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "apply: wanted {w:?} in:\n{stderr}");
        }
        assert_eq!(tree(&self.root), before, "apply changed the root");
    }
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7Hc7aPnRu7mZGnTj0JYkLSP3JIe2ZjFvdRvyAa3xyz ops@example";

/// Regression (issue 12, item 7): a literal key whose comment carries a line break would write
/// a second `authorized_keys` line of the config author's choosing (here one with `command=`).
/// Every control character in a key entry is an error at validation; a line break at the very
/// end (a YAML block scalar `|`) is not part of the entry and stays accepted.
#[test]
fn control_characters_in_ssh_key_entries_are_rejected() {
    let injected = format!("{KEY}\\ncommand=\\\"/bin/evil\\\" {KEY}");
    let c = Case::new(&format!(
        "ssh_authorized_keys:\n- github:ops\n- \"{injected}\"\n- \"{KEY}\\u001b[2K\"\n- \"https://keys.example.org/ops\\nx\"\n"
    ));
    c.rejected(&[
        "config.yaml:3:3: ssh_authorized_keys[1]: contains a control character",
        "config.yaml:4:3: ssh_authorized_keys[2]: contains a control character",
        "config.yaml:5:3: ssh_authorized_keys[3]: contains a control character",
    ]);
    assert!(!c.root.join("home/rancher/.ssh/authorized_keys").exists());

    // A block scalar ends in a line break: trimmed, one key, one line.
    let ok = Case::new(&format!("ssh_authorized_keys:\n- |\n  {KEY}\n"));
    assert_eq!(ok.validate(&[]).0, Some(0));
    let apply = ok.run("apply", &[]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ok.root.join("home/rancher/.ssh/authorized_keys")).unwrap(),
        format!("{KEY}\n")
    );
}

/// Regression (issue 12, item 8): `write_files` must not reach bosun's own state dir (the
/// managed set would list itself, the journal could be forged) nor `/etc/bosun/`, the node's
/// local agent config holding its trust roots, which never come from Git. `validate` knows the
/// default state dir `/var/lib/bosun` (another one with `--state-dir`); `plan` and `apply` use
/// the effective one (`--state-dir`, when it lies inside `--root`).
#[test]
fn write_files_into_the_state_dir_or_the_agent_config_are_rejected() {
    let c = Case::new(
        "write_files:\n\
         - path: /etc/motd\n  content: hi\n\
         - path: /var/lib/bosun/managed.json\n  content: '[]'\n\
         - path: /etc/bosun/agent.yaml\n  content: 'source: {url: https://evil.example/x}'\n\
         - path: /etc/bosun/agent.d/10-evil.yaml\n  content: 'verification: {mode: none}'\n\
         - path: /var/lib/bosun\n  content: x\n",
    );
    c.rejected(&[
        "config.yaml:4:9: write_files[1].path: \"/var/lib/bosun/managed.json\" is inside bosun's state dir /var/lib/bosun",
        "config.yaml:6:9: write_files[2].path: \"/etc/bosun/agent.yaml\" is inside /etc/bosun",
        "config.yaml:8:9: write_files[3].path: \"/etc/bosun/agent.d/10-evil.yaml\" is inside /etc/bosun",
        "config.yaml:10:9: write_files[4].path: \"/var/lib/bosun\" is inside bosun's state dir",
    ]);
    // Neighbours are fine.
    let ok = Case::new(
        "write_files:\n- path: /etc/bosun.conf\n  content: a\n- path: /var/lib/bosun2/x\n  content: b\n",
    );
    assert_eq!(ok.validate(&[]), (Some(0), String::new()));

    // Another state dir: validate is told it; plan and apply take it from --state-dir.
    let moved = Case::new("write_files:\n- path: /data/bosun/status.json\n  content: '{}'\n");
    assert_eq!(moved.validate(&[]).0, Some(0));
    let (code, out) = moved.validate(&["--state-dir", "/data/bosun"]);
    assert_eq!(code, Some(1), "{out}");
    let want = "config.yaml:2:9: write_files[0].path: \"/data/bosun/status.json\" is inside bosun's state dir /data/bosun";
    assert!(out.contains(want), "{out}");
    let state = moved.root.join("data/bosun");
    let state_arg = state.to_str().unwrap();
    let before = tree(&moved.root);
    for cmd in ["plan", "apply"] {
        let out = moved.run(cmd, &["--state-dir", state_arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(
            stderr.contains(want),
            "{cmd}: wanted {want:?} in:\n{stderr}"
        );
    }
    assert_eq!(tree(&moved.root), before, "apply changed the root");
}

/// Regression (issue 12, item 8): the daemon rejects a commit writing into its state dir too
/// (here `state_dir` inside the node root, as on a node whose data partition holds it), names
/// the field in its status, and writes nothing.
#[test]
fn daemon_rejects_a_commit_writing_into_its_state_dir() {
    use crate::support::git::WorkRepo;
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write(
        "config.yaml",
        "health:\n  gate: none\nwrite_files:\n- path: /etc/app.conf\n  content: a\n- path: /data/bosun/managed.json\n  content: '[]'\n",
    );
    repo.commit("into the state dir");
    let root = tmp.path().join("root");
    let state = root.join("data/bosun");
    std::fs::create_dir_all(&state).unwrap();
    let agent = tmp.path().join("agent.yaml");
    std::fs::write(
        &agent,
        format!(
            "source:\n  url: {}\n  ref: main\ninterval: 1s\njitter_percent: 0\nnode_name: edge-01\n\
             root: {}\nstate_dir: {}\nmetrics:\n  enabled: false\n",
            repo.file_url(),
            root.display(),
            state.display()
        ),
    )
    .unwrap();
    let mut daemon = bosun()
        .args(["daemon", "--config"])
        .arg(&agent)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let want = "config.yaml:6:9: write_files[1].path: \"/data/bosun/managed.json\" is inside bosun's state dir /data/bosun";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let out = bosun()
            .args(["status", "--json", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        let v: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        let settled = |v: &serde_json::Value| {
            v["last_error"].is_string() || v["last_applied_commit"].is_string()
        };
        if let Some(v) = v.filter(settled) {
            break v;
        }
        if std::time::Instant::now() > deadline {
            let _ = daemon.kill();
            panic!("no apply and no error in the status after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    let err = status["last_error"].as_str().unwrap();
    assert!(err.contains(want), "wanted {want:?} in {err:?}");
    assert!(
        !root.join("etc/app.conf").exists(),
        "the config was applied"
    );
    assert!(status["last_applied_commit"].is_null(), "{status}");
}

/// Regression (issue 12, item 14): every value that `apply` (rendering, the file system, the
/// account files, running a command) would refuse later is refused by `validate` with its
/// position: control characters and line breaks in k3s arguments, token, server URL, NTP
/// servers, sysctl and environment values, commands and file paths (they would also spoof the
/// plan's output), taints and the upgrade version; `:` in a password; a path component over 255 bytes; a path that another
/// entry writes as a file; a host name over 64 bytes; a wifi passphrase that is not printable
/// ASCII.
#[test]
fn validate_catches_what_apply_would_reject() {
    let long = "a".repeat(256);
    let host = format!("{}.bb", "a".repeat(62));
    let c = Case::new(&format!(
        "hostname: {host}\n\
         run_cmd:\n\
         - \"echo \\0 x\"\n\
         write_files:\n\
         - path: \"/etc/a\\e[31mb\"\n  content: x\n\
         - path: /etc/{long}\n  content: y\n\
         - path: /etc/app\n  content: z\n\
         - path: /etc/app/conf\n  content: w\n\
         k3os:\n\
         \x20 k3s_args:\n\
         \x20 - server\n\
         \x20 - \"--node-label=a\\nb\"\n\
         \x20 password: \"pa:ss\"\n\
         \x20 token: \"K10ab\\x01cd\"\n\
         \x20 server_url: \"https://k3s.example:6443/\\a\"\n\
         \x20 ntp_servers:\n\
         \x20 - \"pool\\a.ntp.org\"\n\
         \x20 sysctl:\n\
         \x20   kernel.x: \"1\\r\"\n\
         \x20 environment:\n\
         \x20   FOO: \"a\\rb\"\n\
         \x20 wifi:\n\
         \x20 - name: shop\n\
         \x20   passphrase: \"p\u{e4}ssw\u{f6}rt123\"\n\
         \x20 taints:\n\
         \x20 - \"a=b\\nc:NoSchedule\"\n\
         upgrade:\n\
         \x20 version: \"1.0\\a\"\n\
         \x20 image: https://img.example/os.img\n\
         \x20 sha256: {}\n",
        "ab".repeat(32)
    ));
    c.rejected(&[
        "config.yaml:1:11: hostname: ",
        "config.yaml:3:3: run_cmd[0]: contains a NUL byte",
        "config.yaml:5:9: write_files[0].path: ",
        "contains a control character",
        "config.yaml:7:9: write_files[1].path: ",
        "component of 256 bytes",
        "config.yaml:11:3: write_files[/etc/app/conf].path: ",
        "config.yaml:16:5: k3os.k3s_args[1]: ",
        "config.yaml:17:13: k3os.password: ",
        "config.yaml:18:10: k3os.token: ",
        "config.yaml:19:15: k3os.server_url: ",
        "config.yaml:21:5: k3os.ntp_servers: ",
        "config.yaml:23:15: k3os.sysctls.kernel.x: ",
        "config.yaml:25:10: k3os.environment.FOO: ",
        "config.yaml:28:17: k3os.wifi[0].passphrase: ",
        "config.yaml:30:5: k3os.taints: ",
        "config.yaml:32:12: upgrade.version: ",
    ]);

    // A line break in a password: its own case (one password per config).
    let pw = Case::new("k3os:\n  password: \"one\\ntwo\"\n");
    pw.rejected(&["config.yaml:2:13: k3os.password: "]);
}
