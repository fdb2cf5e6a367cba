//! Turns a merged, canonical config tree into a typed [`NodeConfig`], validating every value.
//!
//! All problems are collected (not just the first), each naming the file, line, column and field
//! of the offending value and saying what was expected. Nothing here does I/O; decoding (base64,
//! gzip, `!!binary`) happens here, with a size cap, so a bad or hostile file is refused before
//! anything could be written.
//!
//! One file per section of the config, plus the pieces they share:
//! - this module: the entry point [`convert`], the top-level keys (`hostname`, the command
//!   lists) and the collecting context;
//! - `tree`: reading scalars, lists and mappings (with their positions) out of the YAML tree;
//! - `syntax`: value syntaxes used by several sections (host names, URLs, paths, durations);
//! - `authorized_keys`: `ssh_authorized_keys`;
//! - `write_files` and `decoding`: `write_files` entries and their content encodings;
//! - `k3os` and `modules`: the `k3os:` block and its `modules` entries;
//! - `upgrade`: the `upgrade:` block;
//! - `health` and `checks`: the `health:` block and its `checks` entries.
//!
//! Invariant: a value is kept only when it is valid; a bad one is reported as an error naming its
//! field and is left out (or its default kept), and the caller rejects a config with any error.
//! Three exceptions, where k3os degraded one item and kept the rest (issue 13), are lenient
//! warnings (errors under `--strict`): a literal `ssh_authorized_keys` entry that is not a
//! public key is skipped (never written); a relative `write_files` path is joined onto `/`;
//! `k3s_args` starting with a flag get the role the k3s install script would pick.

mod authorized_keys;
mod checks;
mod decoding;
mod health;
mod k3os;
mod modules;
mod syntax;
mod tree;
mod upgrade;
mod write_files;

pub use authorized_keys::control_character as key_entry_control_character;
pub use modules::{check_module_param, parse_module, valid_module_name};
pub use syntax::{check_path, parse_duration, valid_hostname};
pub use write_files::{parse_mode, parse_owner};

use super::diag::Diagnostic;
use super::model::*;
use super::yaml::{Node, Pos};
use tree::{list, text};

/// Limits and switches for validation.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Largest decoded write_files content accepted, in bytes. Default 64 MiB.
    pub max_file_size: u64,
    /// bosun's state dir as a node path (absolute, normalised): `write_files` may not write
    /// there. Default [`DEFAULT_STATE_DIR`]; see [`ConvertOptions::with_state_dir`].
    pub state_dir: String,
}

/// The state dir of a node that does not configure another (`/var/lib/bosun`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bosun";

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            max_file_size: 64 << 20,
            state_dir: DEFAULT_STATE_DIR.into(),
        }
    }
}

impl ConvertOptions {
    /// These options with the effective state dir `state_dir` (a host path) of a node whose
    /// files live under `root`: its node path when it lies inside the root, else the default
    /// (a state dir outside the root is out of reach of node paths, and the default keeps
    /// plan and apply at least as strict as `bosun validate`). Pure (no file system access).
    pub fn with_state_dir(mut self, root: &std::path::Path, state_dir: &std::path::Path) -> Self {
        let inside = state_dir.strip_prefix(root).ok().map(|rel| {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            format!("/{}", parts.join("/"))
        });
        self.state_dir = match inside {
            Some(p) if p != "/" => p,
            _ => DEFAULT_STATE_DIR.into(),
        };
        self
    }
}

/// The collecting context every section converter writes its diagnostics to.
struct Cx<'a> {
    diags: &'a mut Vec<Diagnostic>,
    opts: &'a ConvertOptions,
}

impl Cx<'_> {
    /// Records an error at `pos` for `field`.
    fn err(&mut self, pos: &Pos, field: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos.clone(), field, msg));
    }

    /// Records a warning at `pos` for `field`.
    fn warn(&mut self, pos: &Pos, field: &str, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(pos.clone(), field, msg));
    }

    /// Records a k3os leniency at `pos` for `field`: one item skipped or repaired the way k3os
    /// degraded it, the rest of the config kept; an error under `--strict`.
    fn lenient(&mut self, pos: &Pos, field: &str, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::lenient(pos.clone(), field, msg));
    }
}

/// The value was bad, and the problem is already recorded in the diagnostics.
struct Reported;

/// Converts the merged tree. `hostname` is the node name (default for node_ready checks).
pub fn convert(root: &Node, opts: &ConvertOptions, diags: &mut Vec<Diagnostic>) -> NodeConfig {
    let mut cx = Cx { diags, opts };
    let mut cfg = NodeConfig::default();

    if let Some(n) = root.get("hostname") {
        cfg.hostname = hostname(&mut cx, n);
    }
    cfg.ssh_authorized_keys = authorized_keys::authorized_keys(&mut cx, root);
    cfg.write_files = write_files::write_files(&mut cx, root);
    nested_write_files(&mut cx, &cfg.write_files);
    cfg.init_cmd = commands(&mut cx, root.get("init_cmd"), "init_cmd");
    cfg.boot_cmd = commands(&mut cx, root.get("boot_cmd"), "boot_cmd");
    cfg.run_cmd = commands(&mut cx, root.get("run_cmd"), "run_cmd");
    if let Some(k) = root.get("k3os") {
        cfg.k3os = k3os::k3os(&mut cx, k);
    }
    if let Some(u) = root.get("upgrade") {
        cfg.upgrade = upgrade::upgrade(&mut cx, u);
    }
    if let Some(r) = root.get("rollout") {
        cfg.rollout = crate::config::rollout::parse(r, cx.diags);
    }
    if let Some(h) = root.get("health") {
        cfg.health = health::health(&mut cx, h);
    }
    cfg
}

/// Longest host name the kernel takes (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// `hostname`: a valid host name of at most 64 bytes, or `None` (reported) when it is not. A
/// non-scalar value gives `None` without a diagnostic here: the layer parser already reported
/// its shape.
fn hostname(cx: &mut Cx, n: &Node) -> Option<String> {
    let h = text(n)?;
    if valid_hostname(&h) && h.len() <= HOST_NAME_MAX {
        return Some(h);
    }
    cx.err(&n.pos, "hostname", format!("{h:?} is not a valid hostname; expected letters, digits and '-' in dot-separated labels of at most 63 characters, at most {HOST_NAME_MAX} in all"));
    None
}

/// A `write_files` path inside another entry's path: that one would have to be a file and a
/// directory at once, which apply can only fail on. Reported at the inner entry.
fn nested_write_files(cx: &mut Cx, files: &[WriteFile]) {
    let by_path: std::collections::BTreeMap<&str, &WriteFile> =
        files.iter().map(|f| (f.path.as_str(), f)).collect();
    for f in files {
        let outer = std::path::Path::new(&f.path)
            .ancestors()
            .skip(1)
            .find_map(|a| by_path.get(a.to_str().unwrap_or_default()));
        if let Some(outer) = outer {
            let o = &f.origin;
            let pos = Pos {
                file: o.file.as_str().into(),
                line: o.line,
                col: o.col,
            };
            let msg = format!(
                "{:?} is inside {}, which the entry at {} writes as a file; a path cannot be \
                 both a file and a directory",
                f.path, outer.path, outer.origin
            );
            cx.err(&pos, &format!("write_files[{}].path", f.path), msg);
        }
    }
}

/// `init_cmd`, `boot_cmd`, `run_cmd`: shell command lines; an empty one is an error.
fn commands(cx: &mut Cx, n: Option<&Node>, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (c, pos)) in list(n).into_iter().enumerate() {
        if c.trim().is_empty() {
            cx.err(
                &pos,
                &format!("{field}[{i}]"),
                "empty command; expected a shell command line",
            );
        } else if c.contains('\0') {
            let msg = "contains a NUL byte, which no command line can carry";
            cx.err(&pos, &format!("{field}[{i}]"), msg);
        } else {
            out.push(c);
        }
    }
    out
}
