//! What the CLI says when something is wrong or when it reports (issue 12, item 15): every
//! error once, the right position for YAML and UTF-8 errors, readable times in `bosun status`,
//! and the loopback spellings the metrics address accepts. Each test runs the real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config_cli::bosun;
use crate::support::git::{free_port, WorkRepo};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regression: an error whose text already includes its cause (typed errors wrapping others,
/// anyhow context over them) was printed as "X: X"; a context and a cause both naming the same
/// path printed it twice.
#[test]
fn errors_are_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    // A write_files owner the node's root does not know: found only at apply time.
    let (repo, root) = (tmp.path().join("repo"), tmp.path().join("root"));
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(
        repo.join("config.yaml"),
        "write_files:\n- path: /etc/x\n  owner: nobody\n  content: a\n",
    )
    .unwrap();
    let out = bosun()
        .args(["apply", "--hostname", "n1", "--repo"])
        .arg(&repo)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let what = "unknown user 'nobody'";
    assert_eq!(err.matches(what).count(), 1, "{err}");
    assert!(
        err.contains("config.yaml:2:3: write_files entry /etc/x"),
        "{err}"
    );

    let out = bosun()
        .args(["daemon", "--config"])
        .arg(tmp.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("missing.yaml"), "{err}");

    // A repo without config.yaml: the context and the cause both name the directory.
    let empty = tmp.path().join("empty-repo");
    std::fs::create_dir_all(&empty).unwrap();
    let out = bosun()
        .args(["validate", "--repo"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("empty-repo").count(), 1, "{err}");
    assert!(err.contains("no config.yaml"), "{err}");
}

/// Regression: a YAML syntax error in `config.yaml` was followed by "the repo has no
/// config.yaml"; invalid UTF-8 was reported at 1:1 instead of where it is.
#[test]
fn yaml_and_utf8_errors_point_at_the_problem_only() {
    let tmp = tempfile::tempdir().unwrap();
    let validate = |text: &[u8]| {
        std::fs::write(tmp.path().join("config.yaml"), text).unwrap();
        let out = bosun()
            .args(["validate", "--repo"])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let syntax = validate(b"hostname: a\nk3os: [\n");
    assert!(syntax.starts_with("config.yaml:"), "{syntax}");
    assert!(!syntax.contains("no config.yaml"), "{syntax}");
    assert_eq!(syntax.lines().count(), 1, "{syntax}");

    let utf8 = validate(b"hostname: a\nk3os:\n  token: ab\xffcd\n");
    assert!(
        utf8.starts_with("config.yaml:3:12: file is not UTF-8 text"),
        "{utf8}"
    );
    assert!(!utf8.contains("no config.yaml"), "{utf8}");
    // After a multi-byte character, the column counts characters.
    let utf8 = validate(
        "k3os:\n  token: \u{e4}\u{e4}"
            .as_bytes()
            .iter()
            .copied()
            .chain([0xc3, b'x'])
            .collect::<Vec<_>>()
            .as_slice(),
    );
    assert!(
        utf8.starts_with("config.yaml:2:12: file is not UTF-8 text"),
        "{utf8}"
    );
}

/// `date -u -d @N +%Y-%m-%dT%H:%M:%SZ`: the reference the status times are checked against.
fn gnu_date(secs: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Regression: `bosun status` printed Unix seconds. Times are RFC 3339 UTC with their distance
/// from now ("n s ago", "in n s"), checked against GNU date over leap days and centuries (the
/// 2100 dates are in the future: "in n s").
#[test]
fn status_prints_rfc3339_times() {
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let now = unix_now();
    let cases: [u64; 6] = [
        0,
        951_782_400,
        1_709_210_096,
        4_107_542_399,
        4_107_542_400,
        now - 42,
    ];
    for t in cases {
        let state = tempfile::tempdir().unwrap();
        let status = serde_json::json!({
            "version": 1,
            "node_name": "edge-01",
            "last_applied_commit": "abc",
            "last_applied_at": t,
            "last_success_at": t,
            "next_poll_at": now + 3600,
        });
        std::fs::write(state.path().join("status.json"), status.to_string()).unwrap();
        let before = unix_now();
        let out = bosun()
            .args(["status", "--state-dir"])
            .arg(state.path())
            .output()
            .unwrap();
        let after = unix_now();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("applied at:"))
            .unwrap_or_else(|| panic!("{text}"));
        let want = gnu_date(t);
        assert!(
            line.contains(&format!("{want} (")),
            "{line} (wanted {want})"
        );
        assert!(!line.contains(&format!(" {t} ")), "{line}");
        // The distance is taken by the binary between `before` and `after`.
        let (n, past) = distance(line);
        if t <= before {
            assert!(past && (before - t..=after - t).contains(&n), "{line}");
        } else {
            assert!(!past && (t - after..=t - before).contains(&n), "{line}");
        }
        let next = text.lines().find(|l| l.starts_with("next poll:")).unwrap();
        assert!(next.contains(&gnu_date(now + 3600)), "{next}");
        assert!(!distance(next).1, "{next}");
    }
}

/// The `(n s ago)` or `(in n s)` at the end of a status line: n, and whether it is past.
fn distance(line: &str) -> (u64, bool) {
    let inner = line
        .rsplit_once(" (")
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no distance in {line:?}"));
    let (n, past) = match inner.strip_prefix("in ") {
        Some(rest) => (rest.strip_suffix(" s"), false),
        None => (inner.strip_suffix(" s ago"), true),
    };
    let n = n
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad distance in {line:?}"));
    (n, past)
}

/// Starts `bosun daemon` with metrics on `listen` (a loopback spelling) and a file:// source;
/// returns whether `GET /metrics` on 127.0.0.1:`port` answers within 20 s, and the log.
fn metrics_answer(dir: &Path, listen: &str, port: u16) -> (bool, String) {
    let repo = WorkRepo::init(&dir.join("fleet"));
    repo.write("config.yaml", "health:\n  gate: none\n");
    repo.commit("empty");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let agent = dir.join("agent.yaml");
    std::fs::write(
        &agent,
        format!(
            "source:\n  url: {}\n  ref: main\ninterval: 1s\nnode_name: edge-01\nroot: {}\n\
             state_dir: {}\nmetrics:\n  listen: \"{listen}\"\n",
            repo.file_url(),
            root.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let mut child = bosun()
        .args(["daemon", "--config"])
        .arg(&agent)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ok = false;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            let mut body = String::new();
            if s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut body).is_ok() {
                ok = body.starts_with("HTTP/1.1 200") && body.contains("bosun_");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (ok, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Regression: `localhost:PORT` and `[::ffff:127.0.0.1]:PORT` were refused as "not a loopback
/// address". Both serve on 127.0.0.1 (`localhost` is not looked up in DNS).
#[test]
fn metrics_listen_accepts_localhost_and_v4_mapped_loopback() {
    for spelling in ["localhost:{port}", "[::ffff:127.0.0.1]:{port}"] {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let listen = spelling.replace("{port}", &port.to_string());
        let (ok, log) = metrics_answer(tmp.path(), &listen, port);
        assert!(
            ok,
            "metrics on {listen} did not answer on 127.0.0.1:{port}:\n{log}"
        );
    }
}
