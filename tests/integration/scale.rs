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
