//! `bosun daemon` as a real process against real remotes: a `git daemon` on 127.0.0.1 (and
//! `file://`), with the node root and state dir in a temp dir, metrics on a free loopback port,
//! and sd_notify datagrams on a unix socket the test binds.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config_cli::{bosun, workspace};
use crate::support::git::{self as gitfx, free_port, GitDaemon, GpgHome, SshKey, WorkRepo};
use crate::support::tls::{serve_http, TestServer};

const APP: &str = "etc/app/app.conf";

/// These tests are about the GitOps loop, not K3s health: no K3s runs here, so the health gate
/// is off (`health.gate: none`). The gate and its rollback are tested in guarded_apply.rs and
/// `daemon_rolls_back_a_config_change_that_breaks_health` below.
fn app_config(content: &str) -> String {
    format!(
        "health:\n  gate: none\nwrite_files:\n- path: /etc/app/app.conf\n  content: \"{content}\\n\"\n  permissions: \"0644\"\n"
    )
}

/// A node: root, state dir and agent config in one temp dir.
struct Node {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
    metrics_port: u16,
}

impl Node {
    /// Writes `agent.yaml` following `url` every second (no jitter), plus `extra` YAML.
    fn new(url: &str, extra: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let root = dir.join("root");
        let state = dir.join("state");
        std::fs::create_dir_all(&root).unwrap();
        let metrics_port = free_port();
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "source:\n  url: {url}\n  ref: main\ninterval: 1s\njitter_percent: 0\n\
                 node_name: edge-01\nroot: {root}\nstate_dir: {state}\n\
                 metrics:\n  listen: 127.0.0.1:{metrics_port}\n{extra}",
                root = root.display(),
                state = state.display(),
            ),
        )
        .unwrap();
        Node {
            _tmp: tmp,
            dir,
            root,
            state,
            config,
            metrics_port,
        }
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.file(rel)).ok()
    }

    fn start(&self) -> Agent {
        self.start_with(|_| {})
    }

    fn start_with(&self, env: impl FnOnce(&mut Command)) -> Agent {
        let mut cmd = bosun();
        cmd.args(["daemon", "--config"])
            .arg(&self.config)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("BOSUN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        env(&mut cmd);
        let mut child = cmd.spawn().expect("spawn bosun daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Agent {
            child,
            log,
            metrics_port: self.metrics_port,
        }
    }

    /// `bosun status --json --state-dir STATE`.
    fn status(&self) -> serde_json::Value {
        let out = bosun()
            .args(["status", "--json", "--state-dir"])
            .arg(&self.state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bosun status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

/// A running `bosun daemon`; its stderr is collected. Killed on drop.
struct Agent {
    child: Child,
    log: Arc<Mutex<String>>,
    metrics_port: u16,
}

impl Agent {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains every needle.
    fn wait_log(&mut self, needles: &[&str], timeout: Duration) {
        let ok = wait_until(timeout, || {
            let l = self.log();
            needles.iter().all(|n| l.contains(n))
        });
        if !ok {
            let status = self.child.try_wait();
            panic!(
                "log lacks {needles:?} after {timeout:?} (process: {status:?}):\n{}",
                self.log()
            );
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGTERM and wait for the exit.
    fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET /metrics over plain HTTP/1.1 on loopback.
    fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("connect to the metrics port");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        body
    }

    /// The value of the metric line starting with `name` (exact series, labels included).
    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A repo directory under a `git daemon` base, with config v1 committed.
fn served_repo(base: &Path) -> WorkRepo {
    let repo = WorkRepo::init(&base.join("fleet"));
    repo.write("config.yaml", &app_config("v1"));
    repo
}

#[test]
fn daemon_applies_new_commits_reports_them_and_idle_polls_fetch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = served_repo(tmp.path());
    let first = repo.commit("v1");
    let git = GitDaemon::start(tmp.path());
    let node = Node::new(&git.url("fleet"), "");
    let mut agent = node.start();

    assert!(
        wait_until(Duration::from_secs(20), || node.read(APP).as_deref()
            == Some("v1\n")),
        "v1 never applied:\n{}",
        agent.log()
    );
    agent.wait_log(
        &[&format!("applied commit {first}")],
        Duration::from_secs(5),
    );

    // A new commit lands within the interval (1 s) plus 1 s, with a little slack for a loaded
    // CI machine.
    repo.write("config.yaml", &app_config("v2"));
    let second = repo.commit("v2");
    let committed = Instant::now();
    assert!(
        wait_until(Duration::from_millis(2500), || node.read(APP).as_deref()
            == Some("v2\n")),
        "v2 not applied within 2.5 s:\n{}",
        agent.log()
    );
    eprintln!("commit to applied: {:?}", committed.elapsed());

    // Status and metrics name the applied commit.
    assert!(wait_until(Duration::from_secs(5), || {
        node.status()["last_applied_commit"].as_str() == Some(second.as_str())
    }));
    let m = agent.metrics();
    assert!(
        m.contains(&format!(
            "bosun_applied_commit_info{{commit=\"{second}\"}} 1"
        )),
        "{m}"
    );
    assert!(agent.metric("bosun_reconcile_total{result=\"success\"}") >= Some(2.0));
    assert!(agent.metric("bosun_last_success_timestamp_seconds") > Some(0.0));
    // The first apply paged bosun's code out; the second came within the 5-minute gap.
    assert_eq!(agent.metric("bosun_code_page_releases_total"), Some(1.0));
    assert!(agent.metric("bosun_code_page_release_bytes_total") > Some(1e6));

    // Idle polls: the ref advertisement is read, no pack is fetched.
    let polls = agent.metric("bosun_polls_total").unwrap();
    let bytes = agent.metric("bosun_fetch_bytes_total").unwrap();
    let packs = agent.metric("bosun_pack_fetches_total").unwrap();
    assert!(bytes > 0.0, "the two commits were fetched as packs");
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .metric("bosun_polls_total")
            .unwrap()
            >= polls + 3.0),
        "fewer than 3 idle polls in 10 s"
    );
    assert_eq!(agent.metric("bosun_fetch_bytes_total"), Some(bytes));
    assert_eq!(agent.metric("bosun_pack_fetches_total"), Some(packs));
    // Idle polls never page code out.
    assert_eq!(agent.metric("bosun_code_page_releases_total"), Some(1.0));
    assert!(agent.metric("bosun_reconcile_total{result=\"noop\"}") >= Some(3.0));
    let s = node.status();
    assert_eq!(s["fetch_bytes"].as_f64(), Some(bytes));
    assert!(s["next_poll_at"].as_u64().is_some());

    let text = bosun()
        .args(["status", "--state-dir"])
        .arg(&node.state)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains(&second));
    assert!(agent.terminate().success());
}

/// Descriptors the daemon gets in [`daemon_keeps_working_while_its_metrics_port_is_flooded`]:
/// systemd's default soft `LimitNOFILE`, with the hard limit lowered to match so the daemon
/// cannot raise it: the metrics server's own limits must keep the loop's descriptors free.
const FLOOD_DAEMON_NOFILE: u64 = 1024;
/// Idle connections and clients that send their request header one line per second, never
/// ending it.
const FLOOD_CONNECTIONS: usize = 2000;
const FLOOD_SLOW_CLIENTS: usize = 200;

/// `VmRSS` and `RssFile` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("RssFile:"))
}

/// What the flood saw: idle connections established, and slow clients the server closed (with
/// the shortest time one of them stayed open).
#[derive(Debug, Default)]
struct FloodReport {
    established: usize,
    slow_closed: usize,
    slow_shortest_open: Option<Duration>,
}

/// Floods 127.0.0.1:`port` until `stop` is set: first [`FLOOD_SLOW_CLIENTS`] slow clients (so
/// the server accepts them first), then [`FLOOD_CONNECTIONS`] idle connections. `up` counts
/// the connections established. Returns what the flood saw.
fn flood(port: u16, up: Arc<AtomicUsize>, stop: Arc<std::sync::atomic::AtomicBool>) -> FloodReport {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let connect = move || {
            tokio::time::timeout(
                Duration::from_secs(20),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
        };
        let mut slow = tokio::task::JoinSet::new();
        for _ in 0..FLOOD_SLOW_CLIENTS {
            let (up, stop) = (up.clone(), stop.clone());
            slow.spawn(async move {
                let Ok(Ok(s)) = connect().await else {
                    return None;
                };
                up.fetch_add(1, Ordering::SeqCst);
                let opened = Instant::now();
                let (mut rx, mut tx) = s.into_split();
                let writer = async move {
                    let mut line = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
                    while tx.write_all(&line).await.is_ok() {
                        line = b"X-Slow: 1\r\n".to_vec();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                };
                let closed = async move {
                    // Never a response: the header never ends. EOF or reset = closed by the server.
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = rx.read(&mut buf).await {
                        let _ = n;
                    }
                };
                let stopped = async {
                    while !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    _ = closed => Some(opened.elapsed()),
                    _ = writer => Some(opened.elapsed()),
                    _ = stopped => None,
                }
            });
        }
        while up.load(Ordering::SeqCst) < FLOOD_SLOW_CLIENTS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut idle = tokio::task::JoinSet::new();
        for _ in 0..FLOOD_CONNECTIONS {
            let (up, stop) = (up.clone(), stop.clone());
            idle.spawn(async move {
                let Ok(Ok(mut s)) = connect().await else {
                    return false;
                };
                up.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::SeqCst) {
                    // Hold it; a server close just ends the wait early.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                }
                true
            });
        }
        let mut report = FloodReport::default();
        while let Some(held) = idle.join_next().await {
            report.established += usize::from(held.unwrap());
        }
        while let Some(closed) = slow.join_next().await {
            if let Some(open) = closed.unwrap() {
                report.slow_closed += 1;
                report.slow_shortest_open =
                    Some(report.slow_shortest_open.map_or(open, |s| s.min(open)));
            }
        }
        report
    })
}

/// Regression (issue 12, item 4): a flood of connections to the metrics port must not stall the
/// daemon. Before the fix each accepted connection held a descriptor with no limit and no
/// timeout: polls failed with "Too many open files" and a commit waited until the flood ended.
///
/// The daemon runs with 1,024 descriptors (systemd's default soft limit, hard limit lowered to
/// match). The test process raises its own soft limit to its hard limit, so the flood's size does
/// not depend on the machine's ulimit (it needs about 2,300 descriptors).
///
/// RSS: the 12 MiB goal is for the release build, whose idle RSS is 6.9 MiB of which 6.0 MiB is
/// file-backed (bench/daemon/README.md). These tests run the debug build, whose file-backed part
/// (its unoptimised code pages) is several MiB larger and says nothing about the flood; the
/// existing daemon tests check no RSS for that reason. So the test bounds what the flood can
/// grow, the anonymous part: VmRSS − RssFile stays under 12 MiB − 6 MiB, the same budget the
/// release build has. In a release build (`cargo test --release`) it bounds VmRSS itself.
#[test]
fn daemon_keeps_working_while_its_metrics_port_is_flooded() {
    use rustix::process::{getrlimit, prlimit, setrlimit, Pid, Resource, Rlimit};
    let need = (FLOOD_CONNECTIONS + FLOOD_SLOW_CLIENTS + 256) as u64;
    let mine = getrlimit(Resource::Nofile);
    let hard = mine.maximum.unwrap_or(u64::MAX);
    assert!(
        hard >= need,
        "this test needs {need} descriptors; the hard RLIMIT_NOFILE is {hard}"
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard.min(need.max(mine.current.unwrap_or(0)))),
            maximum: mine.maximum,
        },
    )
    .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write("config.yaml", &app_config("v1"));
    let first = repo.commit("v1");
    let node = Node::new(&repo.file_url(), "");
    let mut agent = node.start();
    let pid = agent.child.id();
    let limit = Some(FLOOD_DAEMON_NOFILE);
    let nofile = Rlimit {
        current: limit,
        maximum: limit,
    };
    prlimit(Pid::from_raw(pid as i32), Resource::Nofile, nofile).unwrap();
    agent.wait_log(
        &[&format!("applied commit {first}")],
        Duration::from_secs(20),
    );
    // Metrics answer before the flood.
    assert!(agent.metric("bosun_polls_total").is_some());

    let before = rss_kib(pid);
    let up = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let (up, stop, port) = (up.clone(), stop.clone(), node.metrics_port);
        std::thread::spawn(move || flood(port, up, stop))
    };
    // The flood is up before the commit lands: more connections than the daemon has
    // descriptors (the kernel queues what the daemon does not accept).
    assert!(
        wait_until(Duration::from_secs(30), || up.load(Ordering::SeqCst)
            > FLOOD_DAEMON_NOFILE as usize),
        "only {} flood connections established",
        up.load(Ordering::SeqCst)
    );
    let anon_budget_kib = 6 * 1024;
    // Largest VmRSS and largest anonymous part (VmRSS − RssFile) seen, in KiB.
    let (mut worst_rss, mut worst_anon) = (0u64, 0u64);
    let mut sample = || {
        let (rss, file) = rss_kib(pid);
        worst_rss = worst_rss.max(rss);
        worst_anon = worst_anon.max(rss - file);
    };

    repo.write("config.yaml", &app_config("v2"));
    let second = repo.commit("v2");
    let committed = Instant::now();
    let needle = format!("applied commit {second}");
    while !agent.log().contains(&needle) && committed.elapsed() < Duration::from_secs(30) {
        sample();
        std::thread::sleep(Duration::from_millis(10));
    }
    let latency = committed.elapsed();
    // Keep the flood going a while longer: slow clients get cut off and RSS is sampled.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        sample();
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let report = flooder.join().unwrap();
    let log = agent.log();
    eprintln!(
        "flood: {report:?}; commit to applied: {latency:?}; before the flood VmRSS {} KiB \
         (anonymous {} KiB); during it largest VmRSS {worst_rss} KiB, largest anonymous RSS \
         {worst_anon} KiB",
        before.0,
        before.0 - before.1
    );

    assert!(
        log.contains(&needle),
        "v2 never applied during the flood:\n{log}"
    );
    assert!(
        latency <= Duration::from_secs(2),
        "v2 applied {latency:?} after the commit (interval 1 s + 1 s):\n{log}"
    );
    assert_eq!(node.read(APP).as_deref(), Some("v2\n"));
    assert!(!log.contains("Too many open files"), "{log}");
    // Slow clients, accepted first, are cut off by the server (after its 5 s deadline), long
    // before the test stops them; more follow as slots free up.
    assert!(
        report.slow_closed > 0,
        "no slow client was closed: {report:?}"
    );
    assert!(
        report.slow_shortest_open < Some(Duration::from_secs(10)),
        "slow clients stayed open: {report:?}"
    );
    if cfg!(debug_assertions) {
        assert!(
            worst_anon < anon_budget_kib,
            "anonymous RSS {worst_anon} KiB during the flood (budget {anon_budget_kib} KiB)"
        );
    } else {
        assert!(
            worst_rss < 12 * 1024,
            "VmRSS {worst_rss} KiB during the flood"
        );
    }
    // After the flood the port answers again and the loop kept polling.
    assert!(
        wait_until(Duration::from_secs(30), || std::panic::catch_unwind(|| {
            agent.metric("bosun_polls_total")
        })
        .is_ok()),
        "metrics port did not recover:\n{}",
        agent.log()
    );
    assert!(agent.terminate().success());
}

#[test]
fn daemon_applies_only_trusted_signed_commits_and_refuses_rollbacks() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let trusted = SshKey::generate(&keys, "trusted");
    let stranger = SshKey::generate(&keys, "stranger");
    let gpg_dir = tempfile::Builder::new()
        .prefix("g")
        .tempdir_in("/tmp")
        .unwrap();
    let gpg = GpgHome::new(&gpg_dir.path().join("h"));
    gpg.generate("Ops <ops@example.invalid>");
    let pgp_key = tmp.path().join("ops.asc");
    std::fs::write(&pgp_key, gpg.export("ops@example.invalid")).unwrap();
    let signers = tmp.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("{}\n", trusted.allowed_signers_line("ops@example.invalid")),
    )
    .unwrap();

    let repo = served_repo(tmp.path());
    let good = repo.commit_ssh_signed(&trusted.private, "v1 signed");
    let git = GitDaemon::start(tmp.path());
    let node = Node::new(
        &git.url("fleet"),
        &format!(
            "verification:\n  mode: head\n  allowed_signers: {}\n  openpgp_keys: [{}]\n",
            signers.display(),
            pgp_key.display()
        ),
    );
    let mut agent = node.start();
    agent.wait_log(
        &[&format!(
            "applied commit {good} signed by ops@example.invalid"
        )],
        Duration::from_secs(20),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));

    // Unsigned: refused, the node keeps v1.
    repo.write("config.yaml", &app_config("unsigned"));
    let unsigned = repo.commit("unsigned");
    agent.wait_log(
        &[&format!(
            "refused commit {unsigned}: the commit is not signed"
        )],
        Duration::from_secs(10),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));

    // Signed by a key nobody trusts.
    repo.write("config.yaml", &app_config("stranger"));
    let strange = repo.commit_ssh_signed(&stranger.private, "stranger");
    agent.wait_log(
        &[&format!("refused commit {strange}: signed by")],
        Duration::from_secs(10),
    );
    assert!(agent.log().contains("which is not a trusted key"));

    // A trusted signature over different content (message rewritten after signing).
    // The honest commit is made with `commit-tree`, which does not move `main`, so the daemon
    // never sees it; only the forgery is published.
    repo.write("config.yaml", &app_config("tampered"));
    gitfx::git(&repo.dir, &["add", "-A"]);
    let tree = gitfx::git(&repo.dir, &["write-tree"]);
    let signingkey = format!("user.signingkey={}", trusted.private.display());
    let signed = gitfx::git(
        &repo.dir,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signingkey,
            "commit-tree",
            "-S",
            &tree,
            "-p",
            &strange,
            "-m",
            "honest",
        ],
    );
    let forged = repo.tamper_message(&signed, "forged");
    agent.wait_log(
        &[&format!("refused commit {forged}: bad signature")],
        Duration::from_secs(10),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));

    // OpenPGP-signed by a trusted key: applied.
    repo.write("config.yaml", &app_config("pgp"));
    let pgp = repo.commit_gpg_signed(&gpg, "ops@example.invalid", "pgp signed");
    assert!(
        wait_until(Duration::from_secs(10), || node.read(APP).as_deref()
            == Some("pgp\n")),
        "OpenPGP-signed commit not applied:\n{}",
        agent.log()
    );
    agent.wait_log(&[&format!("applied commit {pgp}")], Duration::from_secs(5));

    // Force-push back to the (validly signed) first commit: refused by anti-rollback.
    repo.reset_hard(&good);
    agent.wait_log(
        &[&format!(
            "refused commit {good}: it does not descend from the last applied commit {pgp}"
        )],
        Duration::from_secs(10),
    );
    assert_eq!(node.read(APP).as_deref(), Some("pgp\n"));

    let m = agent.metrics();
    for reason in ["unsigned", "unknown_key", "bad_signature", "not_descendant"] {
        assert!(
            m.contains(&format!(
                "bosun_source_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} not counted once:\n{m}"
        );
    }
    let s = node.status();
    assert_eq!(s["last_applied_commit"].as_str(), Some(pgp.as_str()));
    assert_eq!(s["refused_total"].as_u64(), Some(4));
    assert!(agent.terminate().success());
}

#[test]
fn daemon_keeps_last_good_state_and_backs_off_while_the_remote_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = served_repo(tmp.path());
    let first = repo.commit("v1");
    let git = GitDaemon::start(tmp.path());
    let port = git.port;
    let node = Node::new(&git.url("fleet"), "");
    let mut agent = node.start();
    agent.wait_log(
        &[&format!("applied commit {first}")],
        Duration::from_secs(20),
    );

    drop(git);
    agent.wait_log(
        &[
            "last good commit",
            "stays applied; retrying in 5s (backoff, attempt 1)",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));
    // The status file is written right after the line is logged: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut s = node.status();
    while !s["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("fleet"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        s = node.status();
    }
    assert_eq!(s["last_applied_commit"].as_str(), Some(first.as_str()));
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("fleet")),
        "{s}"
    );
    assert!(agent.metric("bosun_reconcile_total{result=\"error\"}") >= Some(1.0));

    // The remote comes back on the same port with a new commit: applied on the next retry.
    repo.write("config.yaml", &app_config("v2"));
    let second = repo.commit("v2");
    let _git = GitDaemon::start_on(tmp.path(), port);
    assert!(
        wait_until(Duration::from_secs(20), || node.read(APP).as_deref()
            == Some("v2\n")),
        "v2 not applied after the remote came back:\n{}",
        agent.log()
    );
    agent.wait_log(
        &[&format!("applied commit {second}")],
        Duration::from_secs(5),
    );
    assert!(agent.terminate().success());
}

#[test]
fn daemon_reverts_manual_edits_chmods_and_deletions_of_managed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write("config.yaml", &app_config("v1"));
    repo.commit("v1");
    let node = Node::new(&repo.file_url(), "");
    let mut agent = node.start();
    assert!(
        wait_until(Duration::from_secs(20), || node.read(APP).as_deref()
            == Some("v1\n")),
        "{}",
        agent.log()
    );
    let app = node.file(APP);
    // Let bosun's own writes settle (their events are re-planned as no-ops).
    std::thread::sleep(Duration::from_millis(500));

    // 1. Edit in place.
    std::fs::write(&app, "hand edit\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || node.read(APP).as_deref()
            == Some("v1\n")),
        "edit not reverted within 2 s:\n{}",
        agent.log()
    );
    agent.wait_log(
        &["drift: reverted manual change of /etc/app/app.conf"],
        Duration::from_secs(2),
    );

    // 2. chmod.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || mode(&app) == 0o644),
        "chmod not reverted within 2 s:\n{}",
        agent.log()
    );

    // 3. Delete.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&app).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || node.read(APP).as_deref()
            == Some("v1\n")),
        "deletion not reverted within 2 s:\n{}",
        agent.log()
    );

    // 4. An editor's atomic save (new inode renamed over the file).
    std::thread::sleep(Duration::from_millis(300));
    let swap = node.file("etc/app/.app.conf.swp");
    std::fs::write(&swap, "saved by an editor\n").unwrap();
    std::fs::rename(&swap, &app).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || node.read(APP).as_deref()
            == Some("v1\n")),
        "atomic save not reverted within 2 s:\n{}",
        agent.log()
    );

    assert!(
        wait_until(Duration::from_secs(3), || agent
            .metric("bosun_drift_corrections_total")
            >= Some(4.0)),
        "{}",
        agent.metrics()
    );
    assert!(node.status()["drift_corrections_total"].as_u64() >= Some(4));
    // A file next to managed ones is not bosun's business.
    std::fs::write(node.file("etc/app/local.conf"), "mine\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        std::fs::read_to_string(node.file("etc/app/local.conf")).unwrap(),
        "mine\n"
    );
    assert!(agent.terminate().success());
}

#[test]
fn systemd_unit_verifies_and_daemon_speaks_sd_notify() {
    let tmp = tempfile::tempdir().unwrap();

    // The shipped unit, pointed at the built binary (verify checks that ExecStart exists).
    let unit = std::fs::read_to_string(workspace().join("systemd/bosun.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/bosun daemon\n"));
    let copy = tmp.path().join("bosun.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/bosun", env!("CARGO_BIN_EXE_bosun")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("bosun.service"),
        "systemd-analyze warns about the unit:\n{stderr}"
    );

    // sd_notify: READY=1 only once the first commit is on disk, WATCHDOG=1 keepalives.
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write("config.yaml", &app_config("v1"));
    repo.commit("v1");
    let node = Node::new(&repo.file_url(), "");
    let sock_path = node.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut agent = node.start_with(|c| {
        c.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000");
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut ready_with_file = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("no notification ({e}); got {seen:?}\n{}", agent.log()),
        };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.lines().any(|l| l == "READY=1") && ready_with_file.is_none() {
            ready_with_file = Some(node.read(APP).as_deref() == Some("v1\n"));
        }
        seen.push(msg);
        let watchdogs = seen
            .iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
        if ready_with_file.is_some() && watchdogs >= 2 {
            break;
        }
    }
    assert_eq!(
        ready_with_file,
        Some(true),
        "READY=1 must come after the first apply; got {seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
            >= 2,
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.contains("STATUS=applied ")),
        "{seen:?}"
    );

    // SIGTERM: clean exit 0, STOPPING=1 sent.
    let status = agent.terminate();
    assert!(status.success(), "exit status {status:?}:\n{}", agent.log());
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1")
        {
            stopping = true;
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert!(agent.log().contains("SIGTERM"));
}

#[test]
fn daemon_refuses_a_bad_agent_config_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        "source:\n  url: git://127.0.0.1/fleet\n  branch: main\n",
    )
    .unwrap();
    let out = bosun()
        .args(["daemon", "--config"])
        .arg(&config)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("branch") && err.contains("line 3"), "{err}");
}

#[test]
fn daemon_remembers_the_applied_commit_across_restarts_for_anti_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write("config.yaml", &app_config("v1"));
    let first = repo.commit("v1");
    repo.write("config.yaml", &app_config("v2"));
    let second = repo.commit("v2");
    let node = Node::new(&repo.file_url(), "");
    let mut agent = node.start();
    agent.wait_log(
        &[&format!("applied commit {second}")],
        Duration::from_secs(20),
    );
    assert!(agent.terminate().success());

    // While the agent is down, the branch is force-pushed back to v1 and the file is edited.
    repo.reset_hard(&first);
    std::fs::write(node.file(APP), "edited while bosun was down\n").unwrap();
    let mut agent = node.start();
    agent.wait_log(
        &[
            &format!("last applied {second}"),
            &format!(
                "refused commit {first}: it does not descend from the last applied commit {second}"
            ),
        ],
        Duration::from_secs(20),
    );
    // The last applied commit is re-asserted from the git cache, not rolled back.
    assert_eq!(node.read(APP).as_deref(), Some("v2\n"));
    assert!(agent
        .log()
        .contains("startup: reverted manual change of /etc/app/app.conf"));
    // And its files stay guarded against drift while every poll is refused.
    std::fs::write(node.file(APP), "hand edit\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || node.read(APP).as_deref()
            == Some("v2\n")),
        "{}",
        agent.log()
    );
    assert!(agent.terminate().success());
}

/// The marker a "bad" commit writes with `write_files`; while it exists under the node root the
/// stand-in kubelet answers 500, as K3s would after a config change that breaks it.
const KUBELET_BROKEN: &str = "etc/standin/kubelet-broken";
const K3S_DROPIN: &str = "etc/systemd/system/k3s.service.d/90-bosun.conf";
const K3S_RESTART_LOGGED: &str = "not run (root is not /): systemctl restart k3s";

/// K3s cannot run in the test environment, so a real HTTP server on 127.0.0.1 STANDS IN for
/// the kubelet's `/healthz` (what a `type: kubelet` check asks): 200 `ok`, or 500 while
/// [`KUBELET_BROKEN`] exists under the node root. It runs on its own tokio runtime because
/// these daemon tests are synchronous (the daemon is a separate process).
struct StandInKubelet {
    server: TestServer,
    /// 500 answers so far (one per failing health round).
    failures: Arc<AtomicUsize>,
    /// Declared last: dropped after the server.
    _rt: tokio::runtime::Runtime,
}

impl StandInKubelet {
    fn start(root: &Path) -> StandInKubelet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let failures = Arc::new(AtomicUsize::new(0));
        let (marker, count) = (root.join(KUBELET_BROKEN), failures.clone());
        let router = axum::Router::new().route(
            "/healthz",
            axum::routing::get(move || {
                let broken = marker.exists();
                if broken {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                async move {
                    if broken {
                        (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "[-]syncloop failed: reason withheld\n",
                        )
                    } else {
                        (axum::http::StatusCode::OK, "ok")
                    }
                }
            }),
        );
        let server = rt.block_on(serve_http(router));
        StandInKubelet {
            server,
            failures,
            _rt: rt,
        }
    }

    fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }
}

/// A health-gated config: the app file, the k3s label `tier` (rendered into the k3s drop-in,
/// so changing it is a gated k3s config change), optionally the breaking marker, and a short
/// health gate checking the stand-in kubelet.
fn gated_config(kubelet: &StandInKubelet, tier: &str, app: &str, broken: bool) -> String {
    gated_config_waiting(kubelet, tier, app, broken, "2s")
}

/// [`gated_config`] with a health timeout of `timeout`.
fn gated_config_waiting(
    kubelet: &StandInKubelet,
    tier: &str,
    app: &str,
    broken: bool,
    timeout: &str,
) -> String {
    let mut y = format!(
        "write_files:\n- path: /etc/app/app.conf\n  content: \"{app}\\n\"\n  permissions: \"0644\"\n"
    );
    if broken {
        y.push_str(&format!(
            "- path: /{KUBELET_BROKEN}\n  content: \"break\\n\"\n"
        ));
    }
    y.push_str(&format!(
        "k3os:\n  labels:\n    tier: \"{tier}\"\nhealth:\n  gate: k3s\n  timeout: {timeout}\n  interval: 200ms\n  \
         successes: 2\n  checks:\n  - type: kubelet\n    url: {}\n",
        kubelet.server.url("/healthz")
    ));
    y
}

/// Every file under `root` with the sha256 of its bytes, mode and owner. Directories are left
/// out: applies create parent directories but never remove them, so a revert leaves the
/// (empty) directories of files it pruned.
fn files(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut t = crate::support::tree(root);
    t.retain(|path, _| !path.ends_with('/'));
    t
}

fn k3s_restarts_logged(agent: &Agent) -> usize {
    agent.log().matches(K3S_RESTART_LOGGED).count()
}

#[test]
fn daemon_rolls_back_a_config_change_that_breaks_health() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    let git = GitDaemon::start(tmp.path());
    let node = Node::new(&git.url("fleet"), "");
    let kubelet = StandInKubelet::start(&node.root);
    let rollbacks = "bosun_config_rollbacks_total";

    // Commit 1: healthy. Its first apply creates the k3s drop-in, so it is gated and passes.
    repo.write("config.yaml", &gated_config(&kubelet, "edge", "v1", false));
    let first = repo.commit("v1, tier edge");
    let mut agent = node.start();
    agent.wait_log(
        &[
            "k3s configuration changed",
            "healthy; recorded as the last good commit",
            &format!("applied commit {first}"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));
    assert!(node
        .read(K3S_DROPIN)
        .is_some_and(|d| d.contains("--node-label \\\n    tier=edge")));
    let good = files(&node.root);
    assert_eq!(k3s_restarts_logged(&agent), 1, "{}", agent.log());
    assert_eq!(agent.metric(rollbacks), Some(0.0));
    assert_eq!(kubelet.failures(), 0);

    // Commit 2: a label change (gated) that breaks the kubelet. After the 2 s timeout the
    // daemon reverts to commit 1.
    repo.write("config.yaml", &gated_config(&kubelet, "broken", "v2", true));
    let second = repo.commit("v2, tier broken, kubelet broken");
    assert!(
        wait_until(Duration::from_secs(20), || agent.metric(rollbacks)
            == Some(1.0)),
        "no rollback counted:\n{}\n{}",
        agent.metrics(),
        agent.log()
    );
    agent.wait_log(
        &[
            "commit failed its health gate; rolled back to the last good commit",
            &format!("commit {second} failed its health gate"),
            &format!("rolled back to {first}"),
        ],
        Duration::from_secs(5),
    );
    assert!(
        kubelet.failures() > 0,
        "the broken config was never checked"
    );
    // Every file under the root is commit 1's again, byte for byte with mode and owner; the
    // marker is gone (its directory stays, empty).
    assert_eq!(files(&node.root), good);
    assert!(!node.file(KUBELET_BROKEN).exists());
    // k3s was restarted for the bad config and again for the revert.
    assert_eq!(k3s_restarts_logged(&agent), 3, "{}", agent.log());
    let status_says_rolled_back = |s: &serde_json::Value| {
        s["last_applied_commit"].as_str() == Some(first.as_str())
            && s["last_error"].as_str().is_some_and(|e| {
                e.contains(&second) && e.contains(&format!("rolled back to {first}"))
            })
    };
    assert!(
        wait_until(Duration::from_secs(5), || status_says_rolled_back(
            &node.status()
        )),
        "{}",
        node.status()
    );

    // The next polls see commit 2 again and do not re-apply it.
    let checked = kubelet.failures();
    let polls = agent.metric("bosun_polls_total").unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || agent
            .metric("bosun_polls_total")
            .unwrap()
            >= polls + 3.0),
        "fewer than 3 polls in 15 s"
    );
    assert_eq!(files(&node.root), good);
    assert_eq!(agent.metric(rollbacks), Some(1.0));
    assert_eq!(kubelet.failures(), checked, "commit 2 was tried again");
    assert_eq!(k3s_restarts_logged(&agent), 3, "{}", agent.log());
    let s = node.status();
    assert!(status_says_rolled_back(&s), "{s}");
    // Refusing it on every poll is said once, not once per poll.
    let log = agent.log();
    assert!(
        log.matches(&format!("commit {second} failed its health gate before"))
            .count()
            <= 1,
        "{log}"
    );

    // Commit 3: healthy again with a new label: applied.
    repo.write("config.yaml", &gated_config(&kubelet, "core", "v3", false));
    let third = repo.commit("v3, tier core");
    agent.wait_log(
        &[&format!("applied commit {third}")],
        Duration::from_secs(20),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v3\n"));
    assert!(node
        .read(K3S_DROPIN)
        .is_some_and(|d| d.contains("--node-label \\\n    tier=core")));
    assert!(wait_until(Duration::from_secs(5), || {
        let s = node.status();
        s["last_applied_commit"].as_str() == Some(third.as_str()) && s["last_error"].is_null()
    }));
    assert_eq!(agent.metric(rollbacks), Some(1.0));
    assert_eq!(k3s_restarts_logged(&agent), 4, "{}", agent.log());
    assert!(agent.terminate().success());
}

#[test]
fn daemon_keeps_working_while_it_waits_for_health() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    let git = GitDaemon::start(tmp.path());
    let node = Node::new(&git.url("fleet"), "");
    let kubelet = StandInKubelet::start(&node.root);

    // A: healthy, applied and recorded good.
    repo.write("config.yaml", &gated_config(&kubelet, "edge", "v1", false));
    let a = repo.commit("v1");
    let mut agent = node.start();
    agent.wait_log(&[&format!("applied commit {a}")], Duration::from_secs(20));
    // The code page-out waits for the end of the health wait, which is part of the burst
    // (before, it came when the wait began, and the judging code stayed resident for 5 min).
    agent.wait_log(&["paged out bosun's code pages"], Duration::from_secs(10));
    let log = agent.log();
    let applied = log.find(&format!("applied commit {a}")).unwrap();
    let paged = log.find("paged out bosun's code pages").unwrap();
    assert!(
        paged > applied,
        "paged out before the health wait ended:\n{log}"
    );

    // B breaks the kubelet and gives its gate a minute: the daemon waits, and keeps working.
    repo.write(
        "config.yaml",
        &gated_config_waiting(&kubelet, "broken", "v2", true, "60s"),
    );
    let b = repo.commit("v2, broken, long gate");
    agent.wait_log(
        &[&format!("waiting for K3s health of commit {}", &b[..12])],
        Duration::from_secs(20),
    );
    // The status says so (and is readable at all while the wait runs).
    let s = node.status();
    assert_eq!(
        s["health_wait"].as_str(),
        Some(format!("commit {}", &b[..12]).as_str()),
        "{s}"
    );
    assert!(s["health_wait_until"].as_u64().is_some(), "{s}");
    assert_eq!(s["last_applied_commit"].as_str(), Some(a.as_str()), "{s}");
    // Drift is reverted to the commit under trial.
    std::fs::write(node.file(APP), "edited by hand\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || node.read(APP).as_deref()
            == Some("v2\n")),
        "drift not reverted during the wait:\n{}",
        agent.log()
    );
    // SIGHUP is queued, not lost.
    agent.signal("HUP");
    agent.wait_log(
        &["SIGHUP: polling when the health wait ends"],
        Duration::from_secs(5),
    );
    // SIGTERM stops the daemon well before the gate's minute is over.
    let asked = Instant::now();
    assert!(agent.terminate().success());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        asked.elapsed()
    );
    assert!(kubelet.failures() > 0, "B was never checked");

    // The next start re-asserts the last good commit A (health-gated: its k3s config comes
    // back), and then applies the newer good commit C.
    repo.write("config.yaml", &gated_config(&kubelet, "core", "v3", false));
    let c = repo.commit("v3");
    let mut agent = node.start();
    agent.wait_log(
        &[
            "startup: reverted manual change of /etc/app/app.conf, /etc/standin/kubelet-broken",
            &format!("healthy; recorded as the last good commit commit={a}"),
            &format!("applied commit {c}"),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v3\n"));
    assert!(!node.file(KUBELET_BROKEN).exists());
    assert!(wait_until(Duration::from_secs(5), || {
        let s = node.status();
        s["last_applied_commit"].as_str() == Some(c.as_str()) && s["health_wait"].is_null()
    }));
    assert!(agent.terminate().success());
}

/// Commits everything signed with the SSH key `key`, with author and committer dates set to
/// `unix` seconds (what any signer can choose); returns the commit id.
fn commit_ssh_signed_dated(repo: &WorkRepo, key: &SshKey, unix: i64, msg: &str) -> String {
    gitfx::git(&repo.dir, &["add", "-A"]);
    let date = format!("@{unix} +0000");
    let signingkey = format!("user.signingkey={}", key.private.display());
    gitfx::run(
        gitfx::git_cmd(&repo.dir)
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_AUTHOR_DATE", &date)
            .args(["-c", "gpg.format=ssh", "-c", &signingkey])
            .args(["commit", "-q", "--allow-empty", "-S", "-m", msg]),
    );
    repo.head()
}

/// Regression (issue 12, item 6): `valid-before` in allowed_signers acts as revocation. git
/// compares it with the committer date, which the signer writes; a daemon that applies
/// automatically compares it with its own clock, so a key that expired cannot sign a commit
/// backdated into its validity window. A commit dated implausibly far ahead of the node's
/// clock is refused too; a current commit by a current key still applies after both.
#[test]
fn daemon_checks_key_validity_against_its_clock_not_the_commit_date() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let current = SshKey::generate(&keys, "current");
    let expired = SshKey::generate(&keys, "expired");
    let signers = tmp.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!(
            "{}\n{}\n",
            current.allowed_signers_line("ops@example.invalid"),
            expired.allowed_signers_line(
                "old@example.invalid valid-after=\"20180101Z\",valid-before=\"20200101Z\""
            )
        ),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write("config.yaml", &app_config("v1"));
    let good = repo.commit_ssh_signed(&current.private, "v1");
    let node = Node::new(
        &repo.file_url(),
        &format!(
            "verification:\n  mode: head\n  allowed_signers: {}\n",
            signers.display()
        ),
    );
    let mut agent = node.start();
    agent.wait_log(
        &[&format!(
            "applied commit {good} signed by ops@example.invalid"
        )],
        Duration::from_secs(20),
    );

    // Signed with the expired key, dated 2019-06-01: inside the window by the commit's date.
    repo.write("config.yaml", &app_config("backdated"));
    let backdated = commit_ssh_signed_dated(&repo, &expired, 1_559_347_200, "backdated");
    agent.wait_log(
        &[
            &format!("refused commit {backdated}: signed by SSH key"),
            "old@example.invalid but expired at 2020-01-01 00:00:00 UTC",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));

    // Signed with the current key, dated 30 days ahead.
    repo.write("config.yaml", &app_config("future"));
    let future = commit_ssh_signed_dated(&repo, &current, now + 30 * 86_400, "future");
    agent.wait_log(
        &[
            &format!("refused commit {future}: "),
            "ahead of this node's clock",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));

    // A current commit by the current key, on top of both: applied.
    repo.write("config.yaml", &app_config("v2"));
    let v2 = repo.commit_ssh_signed(&current.private, "v2");
    agent.wait_log(&[&format!("applied commit {v2}")], Duration::from_secs(10));
    assert_eq!(node.read(APP).as_deref(), Some("v2\n"));
    assert!(agent.terminate().success());
}

/// Issue 13 item 4: the daemon applies a config with k3os leniencies (a placeholder ssh key
/// skipped, a relative write_files path joined onto /), logs each warning once, and counts them
/// in status.json and the `bosun_config_warnings` gauge; a clean commit brings both to 0.
#[test]
fn daemon_counts_config_warnings_in_status_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("fleet"));
    repo.write(
        "config.yaml",
        "health:\n  gate: none\nssh_authorized_keys:\n- <key>\nwrite_files:\n- path: etc/app/app.conf\n  content: \"v1\\n\"\n",
    );
    let first = repo.commit("lenient");
    let git = GitDaemon::start(tmp.path());
    let node = Node::new(&git.url("fleet"), "");
    let mut agent = node.start();
    agent.wait_log(
        &[
            &format!("applied commit {first}"),
            "ssh_authorized_keys[0]: not an ssh public key (placeholder?)",
            "write_files[0].path: \"etc/app/app.conf\" is relative",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(node.read(APP).as_deref(), Some("v1\n"));
    assert!(node.read("home/rancher/.ssh/authorized_keys").is_none());
    assert!(
        wait_until(Duration::from_secs(10), || node.status()["config_warnings"]
            == 2),
        "{}",
        node.status()
    );
    assert_eq!(agent.metric("bosun_config_warnings"), Some(2.0));

    repo.write("config.yaml", &app_config("v2"));
    let second = repo.commit("clean");
    agent.wait_log(
        &[&format!("applied commit {second}")],
        Duration::from_secs(20),
    );
    assert!(
        wait_until(Duration::from_secs(10), || node.status()["config_warnings"]
            == 0),
        "{}",
        node.status()
    );
    assert_eq!(agent.metric("bosun_config_warnings"), Some(0.0));
}

/// Anonymous resident memory of `pid` in KiB: VmRSS − RssFile (see the flood test above for why
/// the debug build is bounded on this part).
fn anon_kib(pid: u32) -> u64 {
    let (rss, file) = rss_kib(pid);
    rss - file
}

/// Issue 12, item 3: a commit with a 160 MiB incompressible blob, over `git://` (a real `git
/// daemon`) and `file://`, under the default `source.max_fetch_bytes` (128 MiB). Verification
/// is off, so nothing but the size can refuse it. Before the limit, both daemons downloaded all
/// of it (and would have applied it), the `file://` one holding the blob whole twice on the
/// way (libgit2 packs in-process): 320 MiB, a crash loop under the unit's `MemoryMax=256M`. Now each refuses it as `fetch_too_large` (status and
/// metrics), keeps the applied commit, keeps polling without downloading it again, applies the
/// next commit, and its anonymous memory grows by less than 32 MiB meanwhile (sampled every
/// 5 ms from the commit to the refusal; in the debug build the file-backed part is its own
/// code, see `daemon_keeps_working_while_its_metrics_port_is_flooded`).
#[test]
fn daemon_refuses_a_commit_too_large_to_fetch_without_exhausting_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = served_repo(tmp.path());
    let v1 = repo.commit("v1");
    // Stored and packed without compression: the test's own git stays fast, and the pack on
    // the wire is as big as the blob.
    gitfx::git(&repo.dir, &["config", "core.compression", "0"]);
    let git = GitDaemon::start(tmp.path());
    let nodes = [
        Node::new(&git.url("fleet"), ""),
        Node::new(&repo.file_url(), ""),
    ];
    let mut agents: Vec<Agent> = nodes.iter().map(Node::start).collect();
    for agent in &mut agents {
        agent.wait_log(&[&format!("applied commit {v1}")], Duration::from_secs(20));
    }
    let baseline: Vec<u64> = agents.iter().map(|a| anon_kib(a.child.id())).collect();

    let mut blob = vec![0u8; 160 << 20];
    getrandom::fill(&mut blob).unwrap();
    std::fs::write(repo.dir.join("big.bin"), &blob).unwrap();
    drop(blob);
    repo.write("config.yaml", &app_config("big"));
    let big = repo.commit("160 MiB, unsigned");

    let mut worst = vec![0u64; agents.len()];
    let refused = |node: &Node| {
        node.status()["last_refusal"]
            .as_str()
            .is_some_and(|r| r.starts_with(&big))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nodes.iter().all(refused) {
        assert!(Instant::now() < deadline, "no refusal of {big} within 60 s");
        for _ in 0..20 {
            for (i, a) in agents.iter().enumerate() {
                worst[i] = worst[i].max(anon_kib(a.child.id()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for (i, (node, agent)) in nodes.iter().zip(&mut agents).enumerate() {
        let growth = worst[i].saturating_sub(baseline[i]);
        eprintln!(
            "node {i}: anonymous RSS {} KiB before, at most {} KiB while refusing (+{growth} KiB)",
            baseline[i], worst[i]
        );
        assert!(
            growth < 32 << 10,
            "node {i}: anonymous RSS grew by {growth} KiB"
        );
        let status = node.status();
        let refusal = status["last_refusal"].as_str().unwrap();
        // git:// stops at the byte limit; file:// counts objects first and stops at the one
        // that libgit2 would hold whole.
        assert!(
            refusal.contains("max_fetch_bytes") || refusal.contains("limit on one object"),
            "node {i}: {refusal}"
        );
        assert_eq!(
            agent.metric("bosun_source_refused_total{reason=\"fetch_too_large\"}"),
            Some(1.0),
            "node {i}"
        );
        assert_eq!(node.read(APP).as_deref(), Some("v1\n"), "node {i}");
        assert!(agent.child.try_wait().unwrap().is_none(), "node {i} exited");
    }

    // Later polls refuse it again without downloading it (counted once), memory stays put.
    let polls: Vec<f64> = agents
        .iter()
        .map(|a| a.metric("bosun_polls_total").unwrap())
        .collect();
    let ok = wait_until(Duration::from_secs(10), || {
        agents
            .iter()
            .zip(&polls)
            .all(|(a, p)| a.metric("bosun_polls_total").unwrap() >= p + 2.0)
    });
    assert!(ok, "the daemons stopped polling");
    for (i, (node, agent)) in nodes.iter().zip(&agents).enumerate() {
        assert_eq!(node.status()["refused_total"].as_u64(), Some(1), "node {i}");
        let growth = anon_kib(agent.child.id()).saturating_sub(baseline[i]);
        assert!(
            growth < 32 << 10,
            "node {i}: anonymous RSS grew by {growth} KiB"
        );
    }

    // The history without the blob is applied: the daemons kept working.
    repo.reset_hard(&v1);
    repo.write("config.yaml", &app_config("v2"));
    let v2 = repo.commit("v2, no big blob");
    for agent in &mut agents {
        agent.wait_log(&[&format!("applied commit {v2}")], Duration::from_secs(20));
    }
    for node in &nodes {
        assert_eq!(node.read(APP).as_deref(), Some("v2\n"));
    }
}
