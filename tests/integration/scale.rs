//! A node's cost does not grow with the fleet: rendering one node of a 20,000-node repo reads
//! only that node's layers (from Git and from a directory) and gives exactly what the 10-node
//! repo gives. Timing and memory at scale are measured by `bench/scale/run.sh`, not here.

use bosun::config::{self, explain, LoadOptions};
use bosun::snapshot::Snapshot;
use bosun::source::{self, Cache, Oid};

use crate::config_cli::bosun;
use crate::support::fleet::{fleet, node_name, shared_files, Fleet};

/// The node rendered in both fleets.
const NODE: usize = 5;

fn git_snapshot(f: &Fleet, host: &str) -> (Snapshot, source::ReadCount) {
    let cache = Cache::open(&f.git).unwrap();
    source::snapshot_counted(&cache, Oid::from_str(&f.commit).unwrap(), None, host).unwrap()
}

#[test]
fn rendering_one_node_of_20000_reads_only_its_layers_from_git() {
    let host = node_name(NODE);
    let shared = shared_files().len();
    let (small, small_count) = git_snapshot(fleet(10), &host);
    let (large, large_count) = git_snapshot(fleet(20_000), &host);

    // config.yaml, each group, the node's own file; the root, groups/ and nodes/ trees.
    let expected = source::ReadCount {
        blobs: shared + 1,
        trees: 3,
    };
    assert_eq!(large_count, expected, "20,000 nodes");
    assert_eq!(small_count, expected, "10 nodes");
    let paths: Vec<&String> = large.files().keys().collect();
    assert_eq!(paths.len(), shared + 1, "{paths:?}");
    assert_eq!(small.files(), large.files());

    let opts = LoadOptions::default();
    let a = config::load(&small, &host, &opts).unwrap();
    let b = config::load(&large, &host, &opts).unwrap();
    assert_eq!(a.merged, b.merged);
    assert_eq!(a.config, b.config);
    assert_eq!(a.layers, b.layers);
    assert_eq!(
        explain::to_yaml(&a.merged, true, false),
        explain::to_yaml(&b.merged, true, false)
    );
    assert!(
        a.layers.last() == Some(&format!("nodes/{host}.yaml")),
        "{:?}",
        a.layers
    );
}

#[test]
fn rendering_one_node_of_20000_from_a_directory_matches_the_small_repo() {
    let host = node_name(NODE);
    let render = |f: &Fleet| {
        let out = bosun()
            .args([
                "render",
                "--explain",
                "--show-secrets",
                "--hostname",
                &host,
                "--repo",
            ])
            .arg(&f.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let small = render(fleet(10));
    let large = render(fleet(20_000));
    assert_eq!(small, large);
    assert!(small.contains(&format!("store-{NODE:05}")), "{small}");

    // The library reads the same files the binary does: only this node's.
    let snap = Snapshot::node_from_dir(&fleet(20_000).dir, &host).unwrap();
    assert_eq!(snap.files().len(), shared_files().len() + 1);
    assert_eq!(
        snap.files(),
        Snapshot::node_from_dir(&fleet(10).dir, &host)
            .unwrap()
            .files()
    );
}

#[test]
fn the_daemon_keeps_only_its_own_layers_for_rollback() {
    use crate::support::git::{free_port, GitDaemon, WorkRepo};
    let tmp = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(&tmp.path().join("srv/fleet"));
    repo.write("config.yaml", "health:\n  gate: none\nhostname: base\n")
        .write(
            "groups/edge.yaml",
            "match: ['edge-*']\nk3os:\n  labels:\n    tier: edge\n",
        )
        .write("nodes/edge-01.yaml", "hostname: edge-01\n")
        .write("nodes/edge-02.yaml", "hostname: edge-02\n")
        .write("nodes/core-01.yml", "hostname: core-01\n");
    let commit = repo.commit("fleet");
    let git = GitDaemon::start(&tmp.path().join("srv"));
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    std::fs::create_dir_all(&root).unwrap();
    let agent = tmp.path().join("agent.yaml");
    std::fs::write(
        &agent,
        format!(
            "source:\n  url: {}\n  ref: main\ninterval: 1s\nnode_name: edge-01\nroot: {}\n\
             state_dir: {}\nmetrics:\n  listen: 127.0.0.1:{}\n",
            git.url("fleet"),
            root.display(),
            state.display(),
            free_port()
        ),
    )
    .unwrap();
    let mut daemon = bosun()
        .args(["daemon", "--config"])
        .arg(&agent)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let history = state.join("commit-history.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let recorded = loop {
        let v: Option<serde_json::Value> = std::fs::read(&history)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(v) = v.filter(|v| v["last_good"]["commit"] == commit.as_str()) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "no last good commit");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    let files: Vec<&String> = recorded["last_good"]["files"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        files,
        ["config.yaml", "groups/edge.yaml", "nodes/edge-01.yaml"]
    );
}
