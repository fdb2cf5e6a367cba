//! Layer merge rules: maps deep-merge, scalars and lists replace, write_files merge by path,
//! explicit null removes, groups apply by hostname glob in file-name order, and every merged
//! value keeps the file and line it came from.

use std::collections::BTreeMap;

use bosun::config::{self, LoadOptions};
use bosun::snapshot::Snapshot;

fn snap(files: &[(&str, &str)]) -> Snapshot {
    let m: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    Snapshot::from_files(None, m)
}

const BASE: &str = "\
hostname: base
run_cmd: [echo base]
k3os:
  labels:
    fleet: retail
    tier: none
  dns_nameservers: [1.1.1.1, 9.9.9.9]
  ntp_servers: [ntp.example.org]
  sysctls:
    vm.swappiness: 10
write_files:
- path: /etc/a
  content: base-a
- path: /etc/b
  content: base-b
  permissions: '0600'
";

const GROUP_EDGE: &str = "\
match: [\"edge-*\"]
k3os:
  labels:
    tier: edge
  dns_nameservers: [10.0.0.53]
write_files:
- path: /etc/b
  content: edge-b
- path: /etc/c
  content: edge-c
";

const GROUP_LATE: &str = "\
match: [\"edge-0[1-5]\", \"lab-*\"]
k3os:
  labels:
    tier: late
";

const NODE: &str = "\
hostname: edge-01
runcmd: echo node
k3os:
  labels:
    site: s1
    fleet: null
  ntp_servers: null
  sysctl:
    vm.max_map_count: 262144
";

fn repo() -> Snapshot {
    snap(&[
        ("config.yaml", BASE),
        ("groups/10-edge.yaml", GROUP_EDGE),
        ("groups/20-late.yaml", GROUP_LATE),
        ("nodes/edge-01.yaml", NODE),
        ("nodes/core-01.yaml", "hostname: core-01\n"),
    ])
}

fn load(host: &str) -> config::Loaded {
    config::load(&repo(), host, &LoadOptions::default()).unwrap()
}

#[test]
fn maps_merge_key_by_key_and_later_layers_win() {
    let l = load("edge-01");
    let labels = &l.config.k3os.labels;
    // base fleet removed by null, tier: base → edge → late (file-name order), site from node.
    assert_eq!(labels.get("tier").map(String::as_str), Some("late"));
    assert_eq!(labels.get("site").map(String::as_str), Some("s1"));
    assert!(
        !labels.contains_key("fleet"),
        "explicit null must remove fleet: {labels:?}"
    );
    // sysctl (singular spelling in the node) merges with the base's sysctls.
    assert_eq!(l.config.k3os.sysctls.len(), 2);
    assert_eq!(l.config.k3os.sysctls["vm.swappiness"], "10");
    assert_eq!(l.config.k3os.sysctls["vm.max_map_count"], "262144");
}

#[test]
fn scalars_and_lists_replace() {
    let l = load("edge-01");
    assert_eq!(l.config.hostname.as_deref(), Some("edge-01"));
    assert_eq!(l.config.k3os.dns_nameservers, vec!["10.0.0.53"]);
    // `runcmd: echo node` (another spelling, scalar form) replaces the base's run_cmd list.
    assert_eq!(l.config.run_cmd, vec!["echo node"]);
}

#[test]
fn explicit_null_removes_an_inherited_key() {
    let l = load("edge-01");
    assert!(l.config.k3os.ntp_servers.is_empty());
    let core = load("core-01");
    assert_eq!(core.config.k3os.ntp_servers, vec!["ntp.example.org"]);
}

#[test]
fn write_files_merge_by_path_later_wins_and_keeps_order() {
    let l = load("edge-01");
    let files: Vec<(&str, &[u8], u32)> = l
        .config
        .write_files
        .iter()
        .map(|w| (w.path.as_str(), w.content.as_slice(), w.mode))
        .collect();
    assert_eq!(
        files,
        vec![
            ("/etc/a", &b"base-a"[..], 0o644),
            // replaced whole: the group's entry has no permissions, so the default applies.
            ("/etc/b", &b"edge-b"[..], 0o644),
            ("/etc/c", &b"edge-c"[..], 0o644),
        ]
    );
    assert!(l.config.write_files[1]
        .origin
        .file
        .starts_with("groups/10-edge.yaml"));
}

#[test]
fn groups_apply_only_to_matching_hostnames() {
    let core = load("core-01");
    assert_eq!(core.layers, vec!["config.yaml", "nodes/core-01.yaml"]);
    assert_eq!(
        core.config.k3os.labels.get("tier").map(String::as_str),
        Some("none")
    );
    assert_eq!(core.config.write_files.len(), 2);
    let edge = load("edge-01");
    assert_eq!(
        edge.layers,
        vec![
            "config.yaml",
            "groups/10-edge.yaml",
            "groups/20-late.yaml",
            "nodes/edge-01.yaml"
        ]
    );
    // edge-07 matches edge-* but not edge-0[1-5]; it has no node file.
    let e7 = load("edge-07");
    assert_eq!(e7.layers, vec!["config.yaml", "groups/10-edge.yaml"]);
    assert_eq!(
        e7.config.k3os.labels.get("tier").map(String::as_str),
        Some("edge")
    );
    let lab = load("lab-x");
    assert_eq!(lab.layers, vec!["config.yaml", "groups/20-late.yaml"]);
}

#[test]
fn provenance_is_kept_per_value() {
    let l = load("edge-01");
    let y = config::explain::to_yaml(&l.merged, true, true);
    let line_of = |needle: &str| {
        y.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in\n{y}"))
            .to_string()
    };
    assert!(
        line_of("tier:").ends_with("# groups/20-late.yaml:4:11"),
        "{y}"
    );
    assert!(
        line_of("site:").ends_with("# nodes/edge-01.yaml:5:11"),
        "{y}"
    );
    assert!(
        line_of("vm.swappiness:").ends_with("# config.yaml:10:20"),
        "{y}"
    );
    assert!(
        line_of("\"edge-b\"").ends_with("# groups/10-edge.yaml:8:12"),
        "{y}"
    );
}

#[test]
fn an_error_in_a_group_blocks_every_node_but_another_nodes_file_does_not() {
    let s = snap(&[
        ("config.yaml", "hostname: x\n"),
        ("nodes/good.yaml", "hostname: good\n"),
        ("nodes/bad.yaml", "hostname: bad_name\n"),
    ]);
    assert!(config::load(&s, "good", &LoadOptions::default()).is_ok());
    let e = config::load(&s, "bad", &LoadOptions::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("nodes/bad.yaml:1:11: hostname:"),
        "{e}"
    );
    let s2 = snap(&[
        ("config.yaml", "hostname: x\n"),
        ("groups/g.yaml", "match: [zzz]\nk3os: [oops]\n"),
        ("nodes/good.yaml", "hostname: good\n"),
    ]);
    let e = config::load(&s2, "good", &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("groups/g.yaml:2:7: k3os:"), "{e}");
}

#[test]
fn validate_repo_reports_each_problem_once() {
    let s = snap(&[
        ("config.yaml", "k3os:\n  dns_nameservers: [nope]\n"),
        ("nodes/a.yaml", "hostname: a\n"),
        ("nodes/b.yaml", "hostname: b\n"),
    ]);
    let diags = config::validate_repo(&s, &LoadOptions::default());
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errors, vec!["config.yaml:2:21: k3os.dns_nameservers: \"nope\" is not an IP address; expected an IPv4 or IPv6 address"]);
}
