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
