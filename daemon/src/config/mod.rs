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

/// The error for a repo without `config.yaml`.
fn no_base() -> Diagnostic {
    Diagnostic::error(
        yaml::Pos {
            file: "config.yaml".into(),
            line: 1,
            col: 1,
        },
        "",
        "the repo has no config.yaml; expected the fleet base at the repo (or subdir) root",
    )
}

/// The node file(s) of `hostname` that `snapshot` holds, as (path, content).
fn node_files<'s>(snapshot: &'s Snapshot, hostname: &str) -> Vec<(String, &'s [u8])> {
    let names = crate::snapshot::node_file_names(hostname).unwrap_or_default();
    names
        .iter()
        .filter_map(|n| {
            let path = format!("nodes/{n}");
            let bytes = snapshot.get(&path)?;
            Some((path, bytes))
        })
        .collect()
}

/// Loads, merges and validates the config of `hostname` from a snapshot. Pure.
///
/// Reads `config.yaml`, the groups and `nodes/<hostname>.y(a)ml` of the snapshot; other nodes'
/// files (a snapshot recorded by an older bosun may hold them) are never parsed. Errors in the
/// base, in any group file, or in this node's file reject the whole config.
pub fn load(
    snapshot: &Snapshot,
    hostname: &str,
    opts: &LoadOptions,
) -> Result<Loaded, ConfigError> {
    let mut repo = layers::Repo::parse(snapshot, opts.strict);
    let mut diags = std::mem::take(&mut repo.diagnostics);
    let files = node_files(snapshot, hostname);
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    let node = layers::parse_node(&files, opts.strict, &mut diags);
    let base_missing = repo.base.is_none();
    let (merged, layers) = repo.into_merged(hostname, node);
    finish(hostname, merged, layers, base_missing, diags, opts)
}

/// Converts a merged tree; `diags` already holds the parse diagnostics. Pure.
fn finish(
    hostname: &str,
    merged: yaml::Node,
    layers: Vec<String>,
    base_missing: bool,
    mut diags: Vec<Diagnostic>,
    opts: &LoadOptions,
) -> Result<Loaded, ConfigError> {
    if base_missing && !diags.iter().any(Diagnostic::is_error) {
        diags.push(no_base());
    }
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
        layers,
        warnings: diags,
    })
}

/// Checks a whole repo one node at a time: the shared layers (`config.yaml`, groups) are
/// parsed once, then each node's file is parsed, merged and converted on its own
/// ([`RepoCheck::check_node`]), so memory does not grow with the number of nodes. `Sync`:
/// nodes may be checked on several threads. Pure.
#[derive(Debug)]
pub struct RepoCheck {
    repo: layers::Repo,
    opts: LoadOptions,
}

impl RepoCheck {
    /// Parses the shared layers of `shared` (its `nodes/` files are ignored). Pure.
    pub fn new(shared: &Snapshot, opts: &LoadOptions) -> Self {
        RepoCheck {
            repo: layers::Repo::parse(shared, opts.strict),
            opts: opts.clone(),
        }
    }

    /// The diagnostics of the shared files themselves, sorted (a missing `config.yaml`
    /// included).
    pub fn shared_diagnostics(&self) -> Vec<Diagnostic> {
        let mut diags = self.repo.diagnostics.clone();
        // A config.yaml that exists but does not parse has its own error already.
        let base_reported = diags
            .iter()
            .any(|d| d.is_error() && &*d.pos.file == "config.yaml");
        if self.repo.base.is_none() && !base_reported {
            diags.push(no_base());
        }
        sort_dedup(&mut diags);
        diags
    }

    /// The base and groups merged as for a node without a file (for a repo with no nodes):
    /// its diagnostics, sorted.
    pub fn check_without_nodes(&self) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        let merged = self.repo.merged("", None);
        convert::convert(&merged, &self.opts.convert, &mut diags);
        strictness(&mut diags, self.opts.strict);
        sort_dedup(&mut diags);
        diags
    }

    /// Checks node `hostname` whose own file(s) are `files` (path, content): the file's
    /// diagnostics and those of the merged config (which may point into shared files),
    /// sorted. Diagnostics of the shared files themselves are left to
    /// [`RepoCheck::shared_diagnostics`]. Pure.
    pub fn check_node(&self, hostname: &str, files: &[(&str, &[u8])]) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        let node = layers::parse_node(files, self.opts.strict, &mut diags);
        let merged = self.repo.merged(hostname, node.as_ref());
        convert::convert(&merged, &self.opts.convert, &mut diags);
        strictness(&mut diags, self.opts.strict);
        sort_dedup(&mut diags);
        diags
    }
}

/// Validates every layer file and the merged config of every node that has a `nodes/` file of
/// an in-memory snapshot. Returns all diagnostics (errors and warnings), sorted, without
/// duplicates. Pure. (`bosun validate --repo` streams a directory instead: see
/// [`crate::repo_check`].)
pub fn validate_repo(snapshot: &Snapshot, opts: &LoadOptions) -> Vec<Diagnostic> {
    let check = RepoCheck::new(snapshot, opts);
    let mut all = check.shared_diagnostics();
    let mut by_node: std::collections::BTreeMap<&str, Vec<(&str, &[u8])>> = Default::default();
    for (path, bytes) in snapshot.list("nodes") {
        let name = &path["nodes/".len()..];
        if let Some(host) = crate::snapshot::node_of_file(name) {
            by_node.entry(host).or_default().push((path, bytes));
        }
    }
    if by_node.is_empty() {
        all.extend(check.check_without_nodes());
    }
    for (host, files) in by_node {
        all.extend(check.check_node(host, &files));
    }
    sort_dedup(&mut all);
    all
}

/// Parses one standalone file (e.g. a k3os `config.yaml` given on the command line) as the only
/// layer. Diagnostics name the file as given. Pure.
pub fn load_file(name: &str, bytes: &[u8], opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut diagnostics = Vec::new();
    let base = layers::parse_layer(name, bytes, opts.strict, &mut diagnostics);
    let layers = base.iter().map(|l| l.file.clone()).collect();
    let base_missing = base.is_none();
    let merged = layers::Repo {
        base,
        groups: Vec::new(),
        diagnostics: Vec::new(),
    }
    .into_merged("", None)
    .0;
    finish("", merged, layers, base_missing, diagnostics, opts)
}
