//! The `bosun validate | render | schema` commands, run as the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn bosun() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bosun"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn example_repo_is_valid_in_strict_mode() {
    let out = bosun()
        .args(["validate", "--strict", "--repo"])
        .arg(workspace().join("example-repo"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn corrupting_one_base64_string_fails_naming_file_line_and_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_dir(&workspace().join("example-repo"), &repo);
    let cfg = repo.join("config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let good = "ewogICJsb2ctZHJpdmVyIjogImpvdXJuYWxkIgp9Cg==";
    assert!(text.contains(good));
    let line = text.lines().position(|l| l.contains(good)).unwrap() + 1;
    let col = text.lines().nth(line - 1).unwrap().find(good).unwrap() + 1 + 10;
    std::fs::write(
        &cfg,
        text.replace(good, &format!("{}!{}", &good[..10], &good[11..])),
    )
    .unwrap();
    let out = bosun()
        .args(["validate", "--strict", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "config.yaml:{line}:14: write_files[/etc/docker/daemon.json].content: invalid base64 \
         (encoding \"b64\"): '!' at line {line}, column {col} is not a base64 character"
    );
    assert!(stdout.contains(&want), "wanted {want}\ngot {stdout}");
}

#[test]
fn validate_standalone_k3os_files() {
    let dir = workspace().join("tests/fixtures/config");
    let ok = bosun()
        .arg("validate")
        .arg(dir.join("valid/01-k3os-readme.yaml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // a warning for data_sources, with file:line
    assert!(String::from_utf8_lossy(&ok.stdout)
        .contains("01-k3os-readme.yaml:22:3: warning: k3os.data_sources"));
    let bad = bosun()
        .arg("validate")
        .arg(dir.join("invalid/01-bad-base64.yaml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let json = bosun()
        .args(["validate", "--format", "json"])
        .arg(dir.join("invalid/21-hostname-invalid.yaml"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["line"], 2);
    assert_eq!(v[0]["field"], "hostname");
    assert_eq!(v[0]["severity"], "error");
}

#[test]
fn strict_turns_unknown_keys_into_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("c.yaml");
    std::fs::write(&f, "hostname: a\nk3os:\n  lables: {a: b}\n").unwrap();
    let lax = bosun().arg("validate").arg(&f).output().unwrap();
    assert!(lax.status.success());
    assert!(String::from_utf8_lossy(&lax.stdout)
        .contains("c.yaml:3:3: warning: k3os.lables: unknown key"));
    let strict = bosun()
        .args(["validate", "--strict"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn render_shows_merged_config_with_provenance_and_redacts_secrets() {
    let out = bosun()
        .args(["render", "--explain", "--hostname", "edge-01", "--repo"])
        .arg(workspace().join("example-repo"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = String::from_utf8_lossy(&out.stdout);
    assert!(
        y.contains("# layers: config.yaml → groups/edge.yaml → nodes/edge-01.yaml"),
        "{y}"
    );
    let site = y
        .lines()
        .find(|l| l.trim_start().starts_with("site:"))
        .unwrap();
    assert!(site.contains("# nodes/edge-01.yaml:"), "{site}");
    assert!(
        !y.contains("correct-horse-battery"),
        "wifi passphrase leaked:\n{y}"
    );
    assert!(!y.contains("K10a7bd9c"), "token leaked:\n{y}");
    let json = bosun()
        .args([
            "render",
            "--format",
            "json",
            "--hostname",
            "core-01",
            "--repo",
        ])
        .arg(workspace().join("example-repo"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["hostname"], "core-01");
    assert_eq!(v["k3os"]["k3s_args"][0], "server");
    assert!(
        v["k3os"].get("server_url").is_none(),
        "null must remove server_url: {v}"
    );
    assert_eq!(v["k3os"]["token"], "<redacted>");
}

#[test]
fn committed_schema_equals_the_generated_one() {
    let out = bosun().arg("schema").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(workspace().join("schemas/config.schema.json"))
        .expect("schemas/config.schema.json is committed");
    assert_eq!(
        committed.trim_end(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "schemas/config.schema.json is stale: regenerate with `cargo run -- schema > schemas/config.schema.json`"
    );
}

#[test]
fn schema_accepts_every_example_repo_key() {
    // Every key used in the example repo appears in the schema's properties at its place.
    let schema: serde_json::Value =
        serde_json::from_slice(&bosun().arg("schema").output().unwrap().stdout).unwrap();
    let props = &schema["properties"];
    for key in [
        "ssh_authorized_keys",
        "write_files",
        "hostname",
        "run_cmd",
        "k3os",
        "upgrade",
        "health",
        "runcmd",
        "sshAuthorizedKeys",
        "match",
    ] {
        assert!(props.get(key).is_some(), "schema lacks {key}");
    }
    let k3os = &props["k3os"]["properties"];
    for key in [
        "sysctl",
        "sysctls",
        "k3s_arg",
        "k3sArgs",
        "label",
        "dns_nameserver",
        "datasource",
        "wifi",
        "taints",
    ] {
        assert!(k3os.get(key).is_some(), "schema lacks k3os.{key}");
    }
}

/// Regression (issue 12, item 5): YAML whose tree would expand far beyond its text (a "billion
/// laughs" alias bomb, one large scalar aliased a thousand times, a file of millions of tiny
/// values) is refused while the tree is built, before it takes memory: `bosun validate` exits 1
/// naming the expansion, with a peak RSS under 64 MiB. The peak includes the binary itself
/// (about 13 MiB for the debug build these tests run, less for release) and the file text, so
/// the limit holds for both builds. Before the fix the three peaked at 144 MiB, 1 GiB and 866 MiB.
#[test]
fn yaml_expansion_bombs_are_refused_with_a_peak_rss_under_64mib() {
    let tmp = tempfile::tempdir().unwrap();
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let prev = format!("*a{}", i - 1);
        laughs.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    let big_scalar = format!(
        "a: &a \"{}\"\nb: [{}]\n",
        "x".repeat(1 << 20),
        vec!["*a"; 1000].join(", ")
    );
    // 14 MiB of text (under the 16 MiB file limit), 7 million one-letter values, no aliases.
    let tiny_values = format!("a: [{}x]\n", "x,".repeat(7 << 20));
    for (name, text) in [
        ("laughs", laughs),
        ("big-scalar", big_scalar),
        ("tiny-values", tiny_values),
    ] {
        let f = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&f, text).unwrap();
        let mut cmd = bosun();
        cmd.arg("validate").arg(&f);
        let (out, kib) = crate::support::peak_rss_kib(&cmd, tmp.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        assert!(
            stdout.contains(&format!("{name}.yaml:")) && stdout.contains("expands to more than"),
            "{name}: {stdout}"
        );
        assert!(
            kib < 64 * 1024,
            "{name}: peak RSS of bosun validate {kib} KiB (limit 64 MiB)"
        );
    }
}
