//! A throwaway k3os-like node for the k3os compatibility tests: a repo holding one
//! `config.yaml` and a root with k3os's own accounts (`rancher` 1000:1000), driven through the
//! real binary (`bosun apply | plan | validate`), plus a reader for the k3s drop-in's
//! `ExecStart=` (systemd's quoting, as `render/k3s.rs` writes it; the real systemd parser checks
//! the same text in `render_systemd.rs`).

use std::path::PathBuf;
use std::process::Output;

use crate::config_cli::bosun;

/// `/etc/passwd` of a k3os image (`overlay/libexec/k3os/bootstrap`: `adduser -u 1000 -G
/// rancher rancher`).
pub const K3OS_PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                               rancher:x:1000:1000:Linux User,,,:/home/rancher:/bin/bash\n";
/// `/etc/group` of a k3os image.
pub const K3OS_GROUP: &str = "root:x:0:root\nsudo:x:101:rancher\nrancher:x:1000:rancher\n";
/// `/etc/shadow` of a k3os image: no root password, `rancher` locked (`adduser -D`) until
/// `k3os.password` sets one.
pub const K3OS_SHADOW: &str = "root:*::0:::::\nrancher:!::0:99999:7:::\n";

/// A repo and a root in one temp dir.
pub struct K3osNode {
    /// Kept so the directory lives as long as the node.
    _tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub root: PathBuf,
}

impl K3osNode {
    /// A repo whose `config.yaml` is `config`, and a root with k3os's accounts. Writes files.
    pub fn new(config: &str) -> K3osNode {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(repo.join("config.yaml"), config).unwrap();
        std::fs::write(root.join("etc/passwd"), K3OS_PASSWD).unwrap();
        std::fs::write(root.join("etc/group"), K3OS_GROUP).unwrap();
        std::fs::write(root.join("etc/shadow"), K3OS_SHADOW).unwrap();
        K3osNode {
            _tmp: tmp,
            repo,
            root,
        }
    }

    /// Runs `bosun <cmd> --repo R --root T --hostname H <extra…>` (`plan` or `apply`).
    pub fn run(&self, cmd: &str, hostname: &str, extra: &[&str]) -> Output {
        bosun()
            .arg(cmd)
            .arg("--repo")
            .arg(&self.repo)
            .arg("--root")
            .arg(&self.root)
            .args(["--hostname", hostname])
            .args(extra)
            .output()
            .unwrap()
    }

    /// `bosun apply` as node `node1`; panics with the output when it fails.
    pub fn apply_ok(&self, extra: &[&str]) -> Output {
        let out = self.run("apply", "node1", extra);
        assert!(out.status.success(), "apply failed:\n{}", text(&out));
        out
    }

    /// `bosun validate --repo R <extra…>`.
    pub fn validate(&self, extra: &[&str]) -> Output {
        bosun()
            .args(["validate", "--repo"])
            .arg(&self.repo)
            .args(extra)
            .output()
            .unwrap()
    }

    /// Reads a node file (`/etc/x`) under the root as text.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The host path of node path `path`.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The mode (permission bits), uid and gid of node path `path`.
    pub fn meta(&self, path: &str) -> (u32, u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        (m.mode() & 0o7777, m.uid(), m.gid())
    }

    /// The k3s arguments after the binary in the role's drop-in (`k3s` or `k3s-agent`).
    pub fn k3s_argv(&self, unit: &str) -> Vec<String> {
        exec_start_argv(&self.read(&format!(
            "/etc/systemd/system/{unit}.service.d/90-bosun.conf"
        )))
    }
}

/// stdout and stderr of a command, for assertion messages and `contains` checks.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The arguments after the binary of the last non-empty `ExecStart=` in a drop-in: lines
/// joined at a trailing `\`, words split on blanks, `"…"` with `\\`/`\"` escapes unquoted, and
/// `%%`/`$$` undoubled.
pub fn exec_start_argv(dropin: &str) -> Vec<String> {
    let joined = dropin.replace("\\\n", " ");
    let line = joined
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .rfind(|l| !l.is_empty())
        .unwrap_or_else(|| panic!("no ExecStart= in {dropin}"));
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(first) = chars.next() else { break };
        let mut w = String::new();
        if first == '"' {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => w.extend(chars.next()),
                    c => w.push(c),
                }
            }
        } else {
            w.push(first);
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                w.push(c);
            }
        }
        words.push(w.replace("%%", "%").replace("$$", "$"));
    }
    words.remove(0);
    words
}

/// `s` as owned strings.
pub fn strs(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

#[test]
fn exec_start_reader_unquotes_what_render_writes() {
    let d = "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s \\\n    server \\\n    \
             \"a b\" \\\n    \"100%%\" \\\n    \"say \\\"hi\\\"\\\\\" \\\n    \"$$HOME\"\n";
    assert_eq!(
        exec_start_argv(d),
        strs(&["server", "a b", "100%", "say \"hi\"\\", "$HOME"])
    );
}
