//! The config model: layer files → spanned YAML trees → canonical, merged tree → typed
//! [`NodeConfig`].
//!
//! Three stages, as zincati does it: fragments ([`layers`], option-only and canonicalised),
//! merge (pure, provenance-preserving), then validated settings ([`convert`]) whose types rule out
//! bad values. Nothing here does I/O beyond what the caller hands in as a [`Snapshot`].

pub mod convert;
pub mod diag;
pub mod explain;
pub mod layers;
pub mod model;
pub mod rollout;
pub mod secrets;
pub mod spec;
pub mod window;
pub mod yaml;

pub use convert::{ConvertOptions, DEFAULT_STATE_DIR};
pub use diag::{ConfigError, Diagnostic, Severity};
pub use model::*;

use crate::snapshot::Snapshot;

/// How strictly [`load`] reads a node's config.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Unknown keys and k3os leniencies (see [`diag`]) are errors instead of warnings.
    pub strict: bool,
    /// Limits of the typed conversion (decoded file size).
    pub convert: ConvertOptions,
}

impl LoadOptions {
    /// Default options for a node whose files live under `root` and whose state dir is
    /// `state_dir` (host paths): `write_files` may not write into that state dir
    /// ([`ConvertOptions::with_state_dir`]). Pure.
    pub fn for_node(root: &std::path::Path, state_dir: &std::path::Path) -> Self {
        LoadOptions {
            strict: false,
            convert: ConvertOptions::default().with_state_dir(root, state_dir),
        }
    }
}

/// A node's config, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The node the config was loaded for (selects groups and `nodes/<hostname>.yaml`).
    pub hostname: String,
    /// The typed, validated config.
    pub config: NodeConfig,
    /// The merged, canonical tree (for `render`).
    pub merged: yaml::Node,
    /// Layer files applied, in order.
    pub layers: Vec<String>,
    /// Warnings of the layers that applied (errors would have refused the load), sorted.
    pub warnings: Vec<Diagnostic>,
}

fn relevant(file: &str, hostname: &str) -> bool {
    !file.starts_with("nodes/")
        || file == format!("nodes/{hostname}.yaml")
        || file == format!("nodes/{hostname}.yml")
}

/// Under `--strict`, lenient warnings (k3os leniencies) are errors.
fn strictness(diags: &mut [Diagnostic], strict: bool) {
    if strict {
        for d in diags {
            *d = d.clone().under_strict();
        }
    }
}

fn sort_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (&*a.pos.file, a.pos.line, a.pos.col, &a.field, &a.message).cmp(&(
            &*b.pos.file,
            b.pos.line,
            b.pos.col,
            &b.field,
            &b.message,
        ))
    });
    diags.dedup();
}

/// Loads, merges and validates the config of `hostname` from a snapshot. Pure.
///
/// Errors in the base, in any group file, or in this node's file reject the whole config;
/// errors in other nodes' files do not concern this node.
pub fn load(
    snapshot: &Snapshot,
    hostname: &str,
    opts: &LoadOptions,
) -> Result<Loaded, ConfigError> {
    let repo = layers::Repo::parse(snapshot, opts.strict);
    load_from(&repo, hostname, opts)
}

fn load_from(
    repo: &layers::Repo,
    hostname: &str,
    opts: &LoadOptions,
) -> Result<Loaded, ConfigError> {
    let mut diags: Vec<Diagnostic> = repo
        .diagnostics
        .iter()
        .filter(|d| relevant(&d.pos.file, hostname))
        .cloned()
        .collect();
    if repo.base.is_none() && !diags.iter().any(Diagnostic::is_error) {
        diags.push(Diagnostic::error(
            yaml::Pos {
                file: "config.yaml".into(),
                line: 1,
                col: 1,
            },
            "",
            "the repo has no config.yaml; expected the fleet base at the repo (or subdir) root",
        ));
    }
    let merged = repo.merged(hostname);
    let config = convert::convert(&merged, &opts.convert, &mut diags);
    strictness(&mut diags, opts.strict);
    sort_dedup(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(ConfigError { diagnostics: diags });
    }
    Ok(Loaded {
        hostname: hostname.to_string(),
        config,
        merged,
        layers: repo
            .layers_for(hostname)
            .iter()
            .map(|l| l.file.clone())
            .collect(),
        warnings: diags,
    })
}

/// Validates every layer file and the merged config of every node that has a `nodes/` file.
/// Returns all diagnostics (errors and warnings), sorted, without duplicates. Pure.
pub fn validate_repo(snapshot: &Snapshot, opts: &LoadOptions) -> Vec<Diagnostic> {
    let repo = layers::Repo::parse(snapshot, opts.strict);
    let mut all = repo.diagnostics.clone();
    let hosts: Vec<String> = repo.nodes.keys().cloned().collect();
    if hosts.is_empty() {
        // Still validate the base (and groups, as far as they merge onto it).
        let merged = repo.merged("");
        convert::convert(&merged, &opts.convert, &mut all);
        strictness(&mut all, opts.strict);
    }
    for h in hosts {
        match load_from(&repo, &h, opts) {
            Ok(l) => all.extend(l.warnings),
            Err(e) => all.extend(e.diagnostics),
        }
    }
    // A config.yaml that exists but does not parse has its own error already.
    let base_reported = all
        .iter()
        .any(|d| d.is_error() && &*d.pos.file == "config.yaml");
    if repo.base.is_none() && !base_reported {
        all.push(Diagnostic::error(
            yaml::Pos {
                file: "config.yaml".into(),
                line: 1,
                col: 1,
            },
            "",
            "the repo has no config.yaml; expected the fleet base at the repo root",
        ));
    }
    sort_dedup(&mut all);
    all
}

/// Parses one standalone file (e.g. a k3os `config.yaml` given on the command line) as the only
/// layer. Diagnostics name the file as given. Pure.
pub fn load_file(name: &str, bytes: &[u8], opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut diagnostics = Vec::new();
    let base = layers::parse_layer(name, bytes, opts.strict, &mut diagnostics);
    let repo = layers::Repo {
        base,
        groups: Vec::new(),
        nodes: Default::default(),
        diagnostics,
    };
    load_from(&repo, "", opts)
}
