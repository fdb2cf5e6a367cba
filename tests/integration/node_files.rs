//! Node file naming and node-scoped reading, through the binary: `nodes/<host>.yaml` or
//! `nodes/<host>.yml` (exactly one), no repeated suffix stripping, group globs checked, and
//! other nodes' files never read by `render`/`plan`.

use std::path::Path;
use std::process::Output;

use crate::config_cli::bosun;

fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = tmp.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    tmp
}

fn render(dir: &Path, host: &str) -> Output {
    bosun()
        .args(["render", "--hostname", host, "--repo"])
        .arg(dir)
        .output()
        .unwrap()
}

fn validate(dir: &Path) -> Output {
    bosun()
        .args(["validate", "--repo"])
        .arg(dir)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_doubled_suffix_names_another_node_and_does_not_override() {
    let tmp = repo(&[
        ("config.yaml", "hostname: base\n"),
        ("nodes/edge-01.yaml", "hostname: edge-01\n"),
        ("nodes/edge-01.yaml.yaml", "hostname: impostor\n"),
    ]);
    let out = render(tmp.path(), "edge-01");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("hostname: \"edge-01\""), "{stdout}");
    assert!(!stdout.contains("impostor"), "{stdout}");
    assert!(
        stdout.contains("# layers: config.yaml → nodes/edge-01.yaml\n"),
        "{stdout}"
    );
    // The doubled name is the file of a node called `edge-01.yaml`.
    let out = render(tmp.path(), "edge-01.yaml");
    assert!(
        text(&out.stdout).contains("impostor"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn both_spellings_of_a_node_file_are_an_error_naming_both() {
    let tmp = repo(&[
        ("config.yaml", "hostname: base\n"),
        ("nodes/edge-01.yaml", "hostname: edge-01\n"),
        ("nodes/edge-01.yml", "hostname: edge-01-yml\n"),
        ("nodes/edge-02.yml", "hostname: edge-02\n"),
    ]);
    for out in [render(tmp.path(), "edge-01"), validate(tmp.path())] {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(
            all.contains("nodes/edge-01.yml:1:1: nodes/edge-01.yaml and nodes/edge-01.yml both configure this node"),
            "{all}"
        );
        assert!(all.contains("nodes/edge-01.yaml:1:1:"), "{all}");
        assert!(!all.contains("edge-02.yml:"), "{all}");
    }
    // A node with one file (either spelling) is unaffected.
    let out = render(tmp.path(), "edge-02");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hostname: \"edge-02\""));
}

#[test]
fn an_unclosed_bracket_in_a_group_glob_is_an_error_at_its_position() {
    let tmp = repo(&[
        ("config.yaml", "hostname: base\n"),
        (
            "groups/rack.yaml",
            "# racks\nmatch:\n  - \"edge-*\"\n  - \"[abc\"\nk3os:\n  labels:\n    rack: a\n",
        ),
        ("nodes/edge-01.yaml", "hostname: edge-01\n"),
    ]);
    let want = "groups/rack.yaml:4:5: match[1]: invalid glob \"[abc\": `[` at character 1 opens a class that is never closed";
    let out = render(tmp.path(), "edge-01");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    let out = validate(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains(want), "{}", text(&out.stdout));
}

#[test]
fn render_and_plan_never_open_other_nodes_files() {
    // Another node's file that bosun would refuse to read (larger than the config file limit;
    // sparse, so it costs no disk) and a directory named like a node file.
    let tmp = repo(&[
        ("config.yaml", "hostname: base\n"),
        ("nodes/edge-01.yaml", "hostname: edge-01\n"),
    ]);
    let huge = std::fs::File::create(tmp.path().join("nodes/huge.yaml")).unwrap();
    huge.set_len(bosun::snapshot::MAX_CONFIG_FILE + 1).unwrap();
    std::fs::create_dir(tmp.path().join("nodes/dir.yaml")).unwrap();
    let out = render(tmp.path(), "edge-01");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root = tempfile::tempdir().unwrap();
    let out = bosun()
        .args(["plan", "--hostname", "edge-01", "--repo"])
        .arg(tmp.path())
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // The node whose file it is gets the error, naming the file; so does validate.
    let out = render(tmp.path(), "huge");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("huge.yaml"),
        "{}",
        text(&out.stderr)
    );
    let out = validate(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("nodes/huge.yaml:1:1: cannot read:") && stdout.contains("limit"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_shared_problems_once_and_each_node_in_order() {
    let mut files = vec![
        (
            "config.yaml".to_string(),
            "k3os:\n  dns_nameservers: [nope]\n".to_string(),
        ),
        (
            "groups/g.yaml".to_string(),
            "match: ['*']\nunknown_key: 1\n".to_string(),
        ),
    ];
    for i in 0..150 {
        let body = if i % 50 == 7 {
            format!("hostname: bad_{i}\n")
        } else {
            format!("hostname: n-{i:03}\n")
        };
        files.push((format!("nodes/n-{i:03}.yaml"), body));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let tmp = repo(&refs);
    let out = validate(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("config.yaml:2:"))
            .count(),
        1,
        "{stdout}"
    );
    assert!(
        lines[0].starts_with("groups/g.yaml:2:1: warning: unknown_key: unknown key"),
        "{stdout}"
    );
    let bad: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("nodes/"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        bad,
        ["nodes/n-007.yaml", "nodes/n-057.yaml", "nodes/n-107.yaml"],
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("invalid: 4 error(s), 1 warning(s)"),
        "{}",
        text(&out.stderr)
    );
    // JSON: one array, same diagnostics.
    let out = bosun()
        .args(["validate", "--format", "json", "--repo"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5, "{v}");
}
