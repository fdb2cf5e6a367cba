//! `bosun render` (YAML, `--explain`, JSON) and `bosun plan` never print what is secret, by
//! one rule shared with plan (issue 12, item 9): the content of `write_files` entries that are
//! not world-readable, `k3os.environment` values whose names say they are secret, credentials
//! in `k3os.k3s_args`, and the token, password and wifi passphrases. `--show-secrets` is the
//! only way to see them.

use crate::config_cli::bosun;

/// Every secret of [`CONFIG`]; none may appear without `--show-secrets`.
const SECRETS: &[&str] = &[
    "PRIVATEKEYSECRET",
    "GROUPONLYSECRET",
    "B64FILESECRET",
    "K3STOKENENVSECRET",
    "APISECRETVALUE",
    "DBPASSWORDVALUE",
    "SSHKEYVALUE",
    "ARGTOKENSECRET",
    "SPLITTOKENSECRET",
    "DATASTOREPASSSECRET",
    "TOKENFIELDSECRET",
];

/// Plain values that must stay visible (the redaction is not "hide everything").
const PLAIN: &[&str] = &[
    "PUBLICMOTDTEXT",
    "http://proxy.example:3128",
    "KEYBOARDLAYOUTVALUE",
    "--node-name",
];

// `QjY0RklMRVNFQ1JFVA==` is base64 of B64FILESECRET; it must not leak in either form.
const CONFIG: &str = "\
write_files:
- path: /etc/motd
  content: PUBLICMOTDTEXT
- path: /etc/ssl/private/site.key
  permissions: '0600'
  content: PRIVATEKEYSECRET
- path: /etc/app/group.conf
  permissions: 0640
  content: GROUPONLYSECRET
- path: /etc/app/b64.conf
  permissions: '400'
  encoding: b64
  content: QjY0RklMRVNFQ1JFVA==
k3os:
  token: TOKENFIELDSECRET
  k3s_args:
  - server
  - --token=ARGTOKENSECRET
  - --agent-token
  - SPLITTOKENSECRET
  - --datastore-endpoint=postgres://u:DATASTOREPASSSECRET@db:5432/k3s
  - --node-name
  - n1
  environment:
    K3S_TOKEN: K3STOKENENVSECRET
    my_api_secret_x: APISECRETVALUE
    DB_PASSWORD: DBPASSWORDVALUE
    SSH_KEY: SSHKEYVALUE
    HTTP_PROXY: http://proxy.example:3128
    KEYBOARD: KEYBOARDLAYOUTVALUE
";

fn repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("repo")).unwrap();
    std::fs::create_dir_all(tmp.path().join("root")).unwrap();
    std::fs::write(tmp.path().join("repo/config.yaml"), CONFIG).unwrap();
    tmp
}

fn stdout_and_stderr(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn render_redacts_secret_files_environment_and_k3s_args_unless_asked() {
    let tmp = repo();
    let repo = tmp.path().join("repo");
    let forms: [&[&str]; 3] = [&[], &["--explain"], &["--format", "json"]];
    for form in forms {
        let run = |show: bool| {
            let mut cmd = bosun();
            cmd.args(["render", "--hostname", "n1"]).args(form);
            if show {
                cmd.arg("--show-secrets");
            }
            let out = cmd.arg("--repo").arg(&repo).output().unwrap();
            assert!(
                out.status.success(),
                "{form:?}: {}",
                stdout_and_stderr(&out)
            );
            stdout_and_stderr(&out)
        };
        let hidden = run(false);
        for s in SECRETS.iter().chain(&["QjY0RklMRVNFQ1JFVA"]) {
            assert!(!hidden.contains(s), "render {form:?} leaks {s}:\n{hidden}");
        }
        for p in PLAIN {
            assert!(hidden.contains(p), "render {form:?} hides {p}:\n{hidden}");
        }
        assert!(hidden.contains("<redacted>"), "{hidden}");
        let shown = run(true);
        for s in SECRETS.iter().filter(|s| **s != "B64FILESECRET") {
            assert!(
                shown.contains(s),
                "render {form:?} --show-secrets lacks {s}:\n{shown}"
            );
        }
        assert!(shown.contains("QjY0RklMRVNFQ1JFVA=="), "{shown}");
    }
    // JSON keeps the shape: the secret file's content is a string, the split token its own
    // element.
    let out = bosun()
        .args(["render", "--hostname", "n1", "--format", "json", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["write_files"][1]["content"], "<redacted>");
    assert_eq!(v["write_files"][0]["content"], "PUBLICMOTDTEXT");
    assert_eq!(v["k3os"]["k3s_args"][1], "--token=<redacted>");
    assert_eq!(v["k3os"]["k3s_args"][3], "<redacted>");
    assert_eq!(v["k3os"]["k3s_args"][6], "n1");
    assert_eq!(v["k3os"]["environment"]["DB_PASSWORD"], "<redacted>");
}

#[test]
fn plan_redacts_secret_environment_values() {
    let tmp = repo();
    let (repo, root) = (tmp.path().join("repo"), tmp.path().join("root"));
    let plan = |format: &str| {
        let out = bosun()
            .args(["plan", "--hostname", "n1", "--format", format, "--repo"])
            .arg(&repo)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stdout_and_stderr(&out));
        stdout_and_stderr(&out)
    };
    for format in ["text", "json"] {
        let all = plan(format);
        assert!(all.contains("/etc/environment"), "{all}");
        assert!(all.contains("PUBLICMOTDTEXT"), "{all}");
        for s in SECRETS {
            assert!(!all.contains(s), "plan {format} leaks {s}:\n{all}");
        }
    }
    // A secret variable already in /etc/environment (not from the config) is not shown either.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/environment"),
        "VAULT_TOKEN=ONDISKTOKENSECRET\nLANG=C.UTF-8\n",
    )
    .unwrap();
    let all = plan("text");
    assert!(!all.contains("ONDISKTOKENSECRET"), "{all}");
}
