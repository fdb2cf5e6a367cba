//! Planning: the difference between the desired state and what is on disk, and how to show it.
//! Pure: [`plan`] takes a [`DesiredState`], an [`Observation`] and the previous managed set
//! and does no I/O; [`render_text`] and [`render_json`] only format.
//!
//! Invariants:
//! - Prune: a path is deleted only if bosun created it earlier (it is in the managed set from
//!   the state dir), it is no longer desired, and a regular file or symlink is there now. A
//!   file bosun never created is never deleted, even if it once managed its content.
//! - The managed set after the plan ([`Plan::managed_after`]) is the previous set minus paths no
//!   longer desired, plus the paths this plan creates.
//! - Content, mode and owner changes are flagged separately; every change to a path counts as
//!   "changed" for effect triggers.
//! - Secrets never reach output: a file is secret if [`DesiredFile::secret`] is set or the
//!   desired or observed mode is not world-readable (`mode & 0o004 == 0`). Its content is
//!   shown only as `content changed (secret, sha256 <old8>→<new8>)`, in text and JSON alike.
//!   Deletions never show content.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::desired::{DesiredFile, DesiredState, Effect, EffectRule, FileSource, Trigger};
use crate::fsroot::{EntryKind, Observation, Observed};

/// Why no plan could be made. Nothing is written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A desired path holds something other than a regular file or symlink (a directory, device,
    /// socket, …).
    #[error("{path}: a {found} is there; bosun only manages regular files and will not replace it (remove it or drop the path from the config)")]
    NotAFile {
        /// The node path.
        path: String,
        /// What is there.
        found: EntryKind,
    },
    /// The observation lacks a desired or managed path (a caller bug).
    #[error("{path}: was not observed before planning (internal error: observe plan::paths_to_observe first)")]
    NotObserved {
        /// The node path.
        path: String,
    },
}

/// A file to create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The node path.
    pub path: String,
    /// What the file must become.
    pub desired: DesiredFile,
    /// What is there now; `None` for creates. A symlink here is replaced, not followed.
    pub before: Option<Observed>,
    /// The bytes differ (always true for creates).
    pub content_changed: bool,
    /// The permission bits differ.
    pub mode_changed: bool,
    /// The owner or group differs.
    pub owner_changed: bool,
    /// Never show content (see module docs).
    pub secret: bool,
}

/// A file bosun created earlier and no longer wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The node path.
    pub path: String,
    /// What is there now (content never shown for deletions).
    pub before: Observed,
}

/// What an apply would do: creates, updates, deletes and the effects they fire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Files that do not exist yet, in path order.
    pub creates: Vec<FileChange>,
    /// Files whose content, mode or owner differ, or a symlink to replace with the file, in path
    /// order.
    pub updates: Vec<FileChange>,
    /// Files bosun created earlier that the config no longer names, in path order.
    pub deletes: Vec<Deletion>,
    /// Desired files already exactly as wanted.
    pub unchanged: usize,
    /// Effects of `Trigger::Changed` rules that fire, in rule order, without duplicates.
    pub effects: Vec<Effect>,
    /// Effects of `Trigger::OncePerBoot` rules, passed through for the caller to gate by boot id.
    pub once_per_boot: Vec<Effect>,
    /// Paths bosun will have created (and may prune later) once this plan is applied.
    pub managed_after: BTreeSet<String>,
}

impl Plan {
    /// Whether applying would change any file.
    pub fn has_file_changes(&self) -> bool {
        !(self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty())
    }

    /// Every path this plan creates, updates or deletes.
    pub fn changed_paths(&self) -> BTreeSet<&str> {
        self.creates
            .iter()
            .chain(&self.updates)
            .map(|c| c.path.as_str())
            .chain(self.deletes.iter().map(|d| d.path.as_str()))
            .collect()
    }
}

/// The paths that must be observed before calling [`plan`]: every desired path and every path
/// in the managed set (pure).
pub fn paths_to_observe(desired: &DesiredState, managed: &BTreeSet<String>) -> Vec<String> {
    let mut all: BTreeSet<&String> = desired.files.keys().collect();
    all.extend(managed.iter());
    all.into_iter().cloned().collect()
}

/// The negation of [`crate::config::secrets::mode_is_secret`], the one rule for secret files.
fn world_readable(mode: u32) -> bool {
    !crate::config::secrets::mode_is_secret(mode)
}

/// Computes the plan (pure). `managed` is the set of paths bosun created earlier.
pub fn plan(
    desired: &DesiredState,
    observed: &Observation,
    managed: &BTreeSet<String>,
) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    for (path, want) in &desired.files {
        plan_file(&mut out, path, want, observed, managed)?;
    }
    for path in managed {
        if desired.files.contains_key(path) {
            continue;
        }
        if !observed.contains(path) {
            return Err(PlanError::NotObserved { path: path.clone() });
        }
        // Only prune what is still a file or symlink; anything else someone put there is left
        // alone (and forgotten).
        if let Some(have) = observed.get(path) {
            if matches!(have.kind, EntryKind::File | EntryKind::Symlink) {
                out.deletes.push(Deletion {
                    path: path.clone(),
                    before: have.clone(),
                });
            }
        }
    }
    add_effects(&mut out, &desired.effects);
    Ok(out)
}

/// Adds to `out` the create, update or nothing for desired file `path` (`want`), judged
/// against the observed entry; a file counts as secret when it is marked so or it or its
/// observed predecessor is not world-readable. Pure.
fn plan_file(
    out: &mut Plan,
    path: &String,
    want: &DesiredFile,
    observed: &Observation,
    managed: &BTreeSet<String>,
) -> Result<(), PlanError> {
    if !observed.contains(path) {
        return Err(PlanError::NotObserved { path: path.clone() });
    }
    let mut secret = want.secret || !world_readable(want.mode);
    match observed.get(path) {
        None => {
            out.creates.push(FileChange {
                path: path.clone(),
                desired: want.clone(),
                before: None,
                content_changed: true,
                mode_changed: false,
                owner_changed: false,
                secret,
            });
            out.managed_after.insert(path.clone());
        }
        Some(have) => {
            let (content_changed, mode_changed, owner_changed) = match have.kind {
                EntryKind::File => (
                    !have.desired_content && have.content != want.content,
                    have.mode & 0o7777 != want.mode & 0o7777,
                    (have.uid, have.gid) != (want.uid, want.gid),
                ),
                // A symlink is replaced by the regular file: everything changes.
                EntryKind::Symlink => (true, true, (have.uid, have.gid) != (want.uid, want.gid)),
                found => {
                    return Err(PlanError::NotAFile {
                        path: path.clone(),
                        found,
                    })
                }
            };
            if have.kind == EntryKind::File && !world_readable(have.mode) {
                secret = true;
            }
            if managed.contains(path) {
                out.managed_after.insert(path.clone());
            }
            if content_changed || mode_changed || owner_changed {
                out.updates.push(FileChange {
                    path: path.clone(),
                    desired: want.clone(),
                    before: Some(have.clone()),
                    content_changed,
                    mode_changed,
                    owner_changed,
                    secret,
                });
            } else {
                out.unchanged += 1;
            }
        }
    }
    Ok(())
}

/// Adds to `out` the effects whose trigger fired: those whose paths (or directory) the plan
/// changes, in rule order without duplicates, and every once-per-boot effect. Pure.
fn add_effects(out: &mut Plan, rules: &[EffectRule]) {
    let changed = out
        .changed_paths()
        .into_iter()
        .map(str::to_string)
        .collect::<BTreeSet<_>>();
    for rule in rules {
        let list = match &rule.trigger {
            Trigger::Changed(paths) if paths.iter().any(|p| changed.contains(p)) => {
                &mut out.effects
            }
            Trigger::ChangedUnder(dir) if changed.iter().any(|p| is_under(p, dir)) => {
                &mut out.effects
            }
            Trigger::Changed(_) | Trigger::ChangedUnder(_) => continue,
            Trigger::OncePerBoot => &mut out.once_per_boot,
        };
        if !list.contains(&rule.effect) {
            list.push(rule.effect.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering (pure).

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn is_text(b: &[u8]) -> bool {
    !b.contains(&0) && std::str::from_utf8(b).is_ok()
}

/// How a content change is shown. Built once so text and JSON share the redaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContentView {
    /// The content is the same (only mode or owner changed).
    Unchanged,
    /// Unified diff (a/path → b/path); for creates the old side is empty.
    Text {
        /// The unified diff text.
        diff: String,
    },
    /// Non-text content (NUL bytes or not UTF-8): sizes and full SHA-256 digests.
    Binary {
        /// Old size in bytes; `None` for creates.
        old_size: Option<usize>,
        /// New size in bytes.
        new_size: usize,
        /// Old SHA-256 (hex); `None` for creates.
        old_sha256: Option<String>,
        /// New SHA-256 (hex).
        new_sha256: String,
    },
    /// Only 8-hex-digit sha256 prefixes; never the bytes.
    Secret {
        /// First 8 hex digits of the old SHA-256; `None` for creates.
        old_sha256: Option<String>,
        /// First 8 hex digits of the new SHA-256.
        new_sha256: String,
    },
}

fn content_view(c: &FileChange) -> ContentView {
    if !c.content_changed {
        return ContentView::Unchanged;
    }
    let old = c
        .before
        .as_ref()
        .filter(|b| b.kind == EntryKind::File)
        .map(|b| b.content.as_slice());
    let new = c.desired.content.as_slice();
    if c.secret {
        return ContentView::Secret {
            old_sha256: old.map(|o| sha256_hex(o)[..8].to_string()),
            new_sha256: sha256_hex(new)[..8].to_string(),
        };
    }
    if is_text(new) && old.is_none_or(is_text) {
        let old_s = old
            .map(|o| std::str::from_utf8(o).unwrap_or_default())
            .unwrap_or("");
        let new_s = std::str::from_utf8(new).unwrap_or_default();
        let diff = similar::TextDiff::from_lines(old_s, new_s)
            .unified_diff()
            .context_radius(3)
            .header(
                &if old.is_some() {
                    format!("a{}", c.path)
                } else {
                    "/dev/null".to_string()
                },
                &format!("b{}", c.path),
            )
            .to_string();
        return ContentView::Text { diff };
    }
    ContentView::Binary {
        old_size: old.map(<[u8]>::len),
        new_size: new.len(),
        old_sha256: old.map(sha256_hex),
        new_sha256: sha256_hex(new),
    }
}

fn owner(uid: u32, gid: u32) -> String {
    format!("{uid}:{gid}")
}

/// Whether `path` lies below directory `dir` (pure).
pub fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn describe_effect(e: &Effect) -> String {
    match e {
        Effect::SetHostname { hostname } => format!("set hostname to {hostname}"),
        Effect::SysctlLoad { file } => format!("sysctl --load {file}"),
        Effect::Modprobe { module, params } => {
            let mut s = format!("modprobe {module}");
            for p in params {
                s.push(' ');
                s.push_str(p);
            }
            s
        }
        Effect::DaemonReload => "systemctl daemon-reload".to_string(),
        Effect::RestartUnit { unit } => format!("systemctl restart {unit}"),
        Effect::ReloadUnit { unit } => format!("systemctl reload {unit}"),
        Effect::EnableUnit { unit } => format!("systemctl enable {unit}"),
        Effect::DisableUnit { unit } => format!("systemctl disable --now {unit}"),
        Effect::RunCommands { phase, commands } => {
            format!("run {} {phase:?} command(s)", commands.len())
        }
    }
}

fn source(s: &FileSource) -> String {
    match &s.origin {
        Some(o) => format!("{} at {o}", s.key),
        None => s.key.clone(),
    }
}

/// What a create (`create`) or an update of `c` changes, for the text plan: the new mode and
/// owner of a created file; a replaced symlink, content, mode and owner changes of an
/// updated one. Pure.
fn change_summary(c: &FileChange, create: bool) -> Vec<String> {
    let d = &c.desired;
    let mut what = Vec::new();
    if create {
        what.push(format!(
            "mode {:04o}, owner {}",
            d.mode,
            owner(d.uid, d.gid)
        ));
    } else {
        let b = c.before.as_ref().expect("update has a before");
        if b.kind == EntryKind::Symlink {
            what.push("replaces a symbolic link".to_string());
        }
        if c.content_changed {
            what.push("content".to_string());
        }
        if c.mode_changed {
            what.push(format!("mode {:04o}→{:04o}", b.mode, d.mode));
        }
        if c.owner_changed {
            what.push(format!(
                "owner {}→{}",
                owner(b.uid, b.gid),
                owner(d.uid, d.gid)
            ));
        }
    }
    what
}

/// Appends to `s` the indented content view of `c` (a unified diff for text, sizes and
/// SHA-256 for binary data, only hashes for secrets; nothing when the content is unchanged).
/// Pure.
fn write_content(s: &mut String, c: &FileChange) {
    match content_view(c) {
        ContentView::Unchanged => {}
        ContentView::Text { diff } => {
            for line in diff.lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
        ContentView::Binary {
            old_size,
            new_size,
            old_sha256,
            new_sha256,
        } => {
            let _ = match (old_size, old_sha256) {
                (Some(os), Some(oh)) => writeln!(
                    s,
                    "    binary content changed: {os} bytes sha256 {oh} → {new_size} bytes sha256 {new_sha256}"
                ),
                _ => writeln!(s, "    binary content: {new_size} bytes sha256 {new_sha256}"),
            };
        }
        ContentView::Secret {
            old_sha256,
            new_sha256,
        } => {
            let _ = match old_sha256 {
                Some(o) => {
                    writeln!(s, "    content changed (secret, sha256 {o}→{new_sha256})")
                }
                None => writeln!(s, "    content set (secret, sha256 {new_sha256})"),
            };
        }
    }
}

/// Human-readable plan: a summary line, then per file what changes and a unified diff for text
/// content (binary: sizes and sha256; secrets: only sha256 prefixes), then effects (pure).
pub fn render_text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
        plan.creates.len(),
        plan.updates.len(),
        plan.deletes.len(),
        plan.unchanged
    );
    for (sign, verb, list) in [
        ("+", "create", &plan.creates),
        ("~", "update", &plan.updates),
    ] {
        for c in list {
            let d = &c.desired;
            let what = change_summary(c, verb == "create");
            let _ = writeln!(
                s,
                "{sign} {verb} {}: {} [{}]",
                c.path,
                what.join(", "),
                source(&d.source)
            );
            write_content(&mut s, c);
        }
    }
    for d in &plan.deletes {
        let _ = writeln!(
            s,
            "- delete {}: created by bosun, no longer in the config",
            d.path
        );
    }
    if !plan.effects.is_empty() {
        let _ = writeln!(s, "Effects:");
        for e in &plan.effects {
            let _ = writeln!(s, "  {}", describe_effect(e));
        }
    }
    if !plan.once_per_boot.is_empty() {
        let _ = writeln!(s, "Once per boot:");
        for e in &plan.once_per_boot {
            let _ = writeln!(s, "  {}", describe_effect(e));
        }
    }
    s
}

#[derive(serde::Serialize)]
struct ChangeJson<'a> {
    path: &'a str,
    source: &'a FileSource,
    mode: String,
    uid: u32,
    gid: u32,
    secret: bool,
    replaces: Option<EntryKind>,
    content_changed: bool,
    mode_from: Option<String>,
    owner_from: Option<String>,
    content: ContentView,
}

fn change_json(c: &FileChange) -> ChangeJson<'_> {
    let b = c.before.as_ref();
    ChangeJson {
        path: &c.path,
        source: &c.desired.source,
        mode: format!("{:04o}", c.desired.mode),
        uid: c.desired.uid,
        gid: c.desired.gid,
        secret: c.secret,
        replaces: b.map(|b| b.kind).filter(|k| *k != EntryKind::File),
        content_changed: c.content_changed,
        mode_from: b
            .filter(|_| c.mode_changed)
            .map(|b| format!("{:04o}", b.mode)),
        owner_from: b.filter(|_| c.owner_changed).map(|b| owner(b.uid, b.gid)),
        content: content_view(c),
    }
}

/// Machine-readable plan with the same redaction as [`render_text`] (pure).
pub fn render_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "summary": {
            "create": plan.creates.len(),
            "update": plan.updates.len(),
            "delete": plan.deletes.len(),
            "unchanged": plan.unchanged,
        },
        "creates": plan.creates.iter().map(change_json).collect::<Vec<_>>(),
        "updates": plan.updates.iter().map(change_json).collect::<Vec<_>>(),
        "deletes": plan.deletes.iter().map(|d| serde_json::json!({"path": d.path})).collect::<Vec<_>>(),
        "effects": plan.effects,
        "once_per_boot": plan.once_per_boot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{CommandPhase, EffectRule};

    fn file(path: &str, content: &str, mode: u32) -> DesiredFile {
        DesiredFile {
            path: path.to_string(),
            content: content.as_bytes().to_vec(),
            mode,
            uid: 0,
            gid: 0,
            secret: false,
            source: FileSource {
                key: "write_files".to_string(),
                origin: Some("config.yaml:3:5".to_string()),
            },
        }
    }

    fn desired(files: Vec<DesiredFile>, effects: Vec<EffectRule>) -> DesiredState {
        DesiredState {
            files: files.into_iter().map(|f| (f.path.clone(), f)).collect(),
            effects,
        }
    }

    fn restart(unit: &str, paths: &[&str]) -> EffectRule {
        EffectRule {
            effect: Effect::RestartUnit {
                unit: unit.to_string(),
            },
            trigger: Trigger::Changed(paths.iter().map(|p| p.to_string()).collect()),
        }
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn missing_file_is_created_and_becomes_managed() {
        let d = desired(vec![file("/etc/a", "x\n", 0o644)], vec![]);
        let mut o = Observation::new();
        o.insert("/etc/a", None);
        let p = plan(&d, &o, &BTreeSet::new()).unwrap();
        assert_eq!(p.creates.len(), 1);
        assert!(p.updates.is_empty() && p.deletes.is_empty());
        assert_eq!(p.managed_after, set(&["/etc/a"]));
    }

    #[test]
    fn content_mode_and_owner_changes_are_flagged_separately() {
        let mut owned = file("/c", "same", 0o644);
        owned.uid = 1000;
        owned.gid = 1000;
        let d = desired(
            vec![
                file("/a", "new", 0o644),
                file("/b", "same", 0o600),
                owned,
                file("/d", "same", 0o644),
            ],
            vec![],
        );
        let mut o = Observation::new();
        o.insert("/a", Some(Observed::file("old", 0o644, 0, 0)));
        o.insert("/b", Some(Observed::file("same", 0o644, 0, 0)));
        o.insert("/c", Some(Observed::file("same", 0o644, 0, 0)));
        o.insert("/d", Some(Observed::file("same", 0o644, 0, 0)));
        let p = plan(&d, &o, &BTreeSet::new()).unwrap();
        let flags: Vec<_> = p
            .updates
            .iter()
            .map(|c| {
                (
                    c.path.as_str(),
                    c.content_changed,
                    c.mode_changed,
                    c.owner_changed,
                )
            })
            .collect();
        assert_eq!(
            flags,
            vec![
                ("/a", true, false, false),
                ("/b", false, true, false),
                ("/c", false, false, true)
            ]
        );
        assert_eq!(p.unchanged, 1);
        assert!(p.creates.is_empty());
        // Pre-existing files bosun did not create never join the managed set.
        assert!(p.managed_after.is_empty());
    }

    #[test]
    fn prune_deletes_only_paths_bosun_created() {
        let d = desired(vec![file("/keep", "k", 0o644)], vec![]);
        let mut o = Observation::new();
        o.insert("/keep", Some(Observed::file("k", 0o644, 0, 0)));
        o.insert("/created-by-bosun", Some(Observed::file("x", 0o644, 0, 0)));
        o.insert("/already-gone", None);
        o.insert("/someone-elses", Some(Observed::file("y", 0o644, 0, 0)));
        let managed = set(&["/keep", "/created-by-bosun", "/already-gone"]);
        let p = plan(&d, &o, &managed).unwrap();
        let deleted: Vec<_> = p.deletes.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(deleted, vec!["/created-by-bosun"]);
        assert_eq!(p.managed_after, set(&["/keep"]));
    }

    #[test]
    fn managed_path_now_a_directory_is_not_pruned() {
        let d = desired(vec![], vec![]);
        let mut o = Observation::new();
        let mut dir = Observed::file("", 0o755, 0, 0);
        dir.kind = EntryKind::Directory;
        o.insert("/x", Some(dir));
        let p = plan(&d, &o, &set(&["/x"])).unwrap();
        assert!(p.deletes.is_empty());
        assert!(p.managed_after.is_empty());
    }

    #[test]
    fn directory_at_desired_path_is_an_error_naming_it() {
        let d = desired(vec![file("/etc/x", "a", 0o644)], vec![]);
        let mut o = Observation::new();
        let mut dir = Observed::file("", 0o755, 0, 0);
        dir.kind = EntryKind::Directory;
        o.insert("/etc/x", Some(dir));
        let e = plan(&d, &o, &BTreeSet::new()).unwrap_err();
        assert_eq!(
            e,
            PlanError::NotAFile {
                path: "/etc/x".into(),
                found: EntryKind::Directory
            }
        );
        assert!(e.to_string().contains("/etc/x"));
    }

    #[test]
    fn unobserved_path_is_refused() {
        let d = desired(vec![file("/a", "a", 0o644)], vec![]);
        assert!(matches!(
            plan(&d, &Observation::new(), &BTreeSet::new()),
            Err(PlanError::NotObserved { .. })
        ));
    }

    #[test]
    fn effects_fire_only_for_changed_paths_and_dedupe() {
        let d = desired(
            vec![file("/changed", "new", 0o644), file("/same", "s", 0o644)],
            vec![
                restart("k3s", &["/changed"]),
                restart("timesyncd", &["/same"]),
                EffectRule {
                    effect: Effect::SysctlLoad {
                        file: "/pruned".into(),
                    },
                    trigger: Trigger::Changed(vec!["/pruned".into()]),
                },
                restart("k3s", &["/changed", "/same"]),
                EffectRule {
                    effect: Effect::RunCommands {
                        phase: CommandPhase::Run,
                        commands: vec!["echo hi".into()],
                    },
                    trigger: Trigger::OncePerBoot,
                },
            ],
        );
        let mut o = Observation::new();
        o.insert("/changed", Some(Observed::file("old", 0o644, 0, 0)));
        o.insert("/same", Some(Observed::file("s", 0o644, 0, 0)));
        o.insert("/pruned", Some(Observed::file("p", 0o644, 0, 0)));
        let p = plan(&d, &o, &set(&["/pruned"])).unwrap();
        assert_eq!(
            p.effects,
            vec![
                Effect::RestartUnit { unit: "k3s".into() },
                Effect::SysctlLoad {
                    file: "/pruned".into()
                },
            ]
        );
        assert_eq!(p.once_per_boot.len(), 1);
    }

    #[test]
    fn directory_triggers_fire_for_changes_and_prunes_below_it() {
        let under = |dir: &str, unit: &str| EffectRule {
            effect: Effect::RestartUnit { unit: unit.into() },
            trigger: Trigger::ChangedUnder(dir.into()),
        };
        let rules = vec![
            under("/etc/rancher/k3s", "k3s"),
            under("/etc/other", "other"),
            under("/etc/rancher", "parent"),
        ];
        let unchanged = desired(
            vec![file("/etc/rancher/k3s/config.yaml", "a", 0o644)],
            rules.clone(),
        );
        let mut o = Observation::new();
        o.insert(
            "/etc/rancher/k3s/config.yaml",
            Some(Observed::file("a", 0o644, 0, 0)),
        );
        o.insert(
            "/etc/rancher/k3s-old",
            Some(Observed::file("x", 0o644, 0, 0)),
        );
        o.insert(
            "/etc/rancher/k3s/registries.yaml",
            Some(Observed::file("r", 0o644, 0, 0)),
        );
        let p = plan(&unchanged, &o, &BTreeSet::new()).unwrap();
        assert!(p.effects.is_empty(), "{:?}", p.effects);
        // A lookalike sibling (`/etc/rancher/k3s-old`) is not below the k3s directory.
        let p = plan(&unchanged, &o, &set(&["/etc/rancher/k3s-old"])).unwrap();
        assert_eq!(
            p.effects,
            vec![Effect::RestartUnit {
                unit: "parent".into()
            }]
        );
        // A pruned file below it fires, once per effect.
        let p = plan(&unchanged, &o, &set(&["/etc/rancher/k3s/registries.yaml"])).unwrap();
        assert_eq!(
            p.effects,
            vec![
                Effect::RestartUnit { unit: "k3s".into() },
                Effect::RestartUnit {
                    unit: "parent".into()
                }
            ]
        );
    }

    #[test]
    fn mode_only_change_fires_effect() {
        let d = desired(vec![file("/a", "x", 0o600)], vec![restart("u", &["/a"])]);
        let mut o = Observation::new();
        o.insert("/a", Some(Observed::file("x", 0o644, 0, 0)));
        let p = plan(&d, &o, &BTreeSet::new()).unwrap();
        assert_eq!(p.effects.len(), 1);
    }

    #[test]
    fn symlink_at_desired_path_is_replaced() {
        let d = desired(
            vec![file("/etc/resolv.conf", "nameserver 1.1.1.1\n", 0o644)],
            vec![],
        );
        let mut o = Observation::new();
        let mut l = Observed::file("", 0o777, 0, 0);
        l.kind = EntryKind::Symlink;
        o.insert("/etc/resolv.conf", Some(l));
        let p = plan(&d, &o, &BTreeSet::new()).unwrap();
        assert_eq!(p.updates.len(), 1);
        assert!(render_text(&p).contains("replaces a symbolic link"));
    }

    #[test]
    fn text_render_has_summary_and_unified_diff() {
        let d = desired(vec![file("/etc/hosts", "a\nb\nc\n", 0o644)], vec![]);
        let mut o = Observation::new();
        o.insert("/etc/hosts", Some(Observed::file("a\nB\nc\n", 0o644, 0, 0)));
        let t = render_text(&plan(&d, &o, &BTreeSet::new()).unwrap());
        assert!(
            t.starts_with("Plan: 0 to create, 1 to update, 0 to delete, 0 unchanged."),
            "{t}"
        );
        assert!(t.contains("--- a/etc/hosts"), "{t}");
        assert!(t.contains("+++ b/etc/hosts"), "{t}");
        assert!(t.contains("-B\n"), "{t}");
        assert!(t.contains("+b\n"), "{t}");
    }

    #[test]
    fn binary_render_shows_size_and_sha256() {
        let mut f = file("/bin.dat", "", 0o644);
        f.content = vec![0, 1, 2, 255];
        let d = desired(vec![f], vec![]);
        let mut o = Observation::new();
        o.insert("/bin.dat", None);
        let p = plan(&d, &o, &BTreeSet::new()).unwrap();
        let t = render_text(&p);
        let sum = sha256_hex(&[0, 1, 2, 255]);
        assert!(t.contains(&format!("4 bytes sha256 {sum}")), "{t}");
        let j = render_json(&p);
        assert_eq!(j["creates"][0]["content"]["kind"], "binary");
        assert_eq!(j["creates"][0]["content"]["new_sha256"], sum);
    }

    #[test]
    fn secrets_never_appear_in_text_or_json() {
        const NEW_TOKEN: &str = "K10-new-token-4f1d9c";
        const OLD_TOKEN: &str = "K10-old-token-77ab02";
        const WIFI: &str = "wifi-psk-correct-horse";
        const SHADOW: &str = "rancher:$6$saltsalt$hashhash";
        const OLD_PRIVATE: &str = "old-private-bytes-91";
        // Flagged secret, world-readable mode.
        let mut token = file(
            "/etc/rancher/k3s/config.yaml",
            &format!("token: {NEW_TOKEN}\n"),
            0o644,
        );
        token.secret = true;
        // Not flagged, but mode 0600.
        let wifi = file(
            "/etc/NetworkManager/system-connections/w.nmconnection",
            WIFI,
            0o600,
        );
        let shadow = file("/etc/shadow", SHADOW, 0o640);
        // Desired world-readable, but the observed file was private: old content is secret.
        let was_private = file("/etc/was-private", "public now\n", 0o644);
        let d = desired(vec![token, wifi, shadow, was_private], vec![]);
        let mut o = Observation::new();
        o.insert(
            "/etc/rancher/k3s/config.yaml",
            Some(Observed::file(format!("token: {OLD_TOKEN}\n"), 0o644, 0, 0)),
        );
        o.insert(
            "/etc/NetworkManager/system-connections/w.nmconnection",
            None,
        );
        o.insert(
            "/etc/shadow",
            Some(Observed::file("rancher:*", 0o640, 0, 42)),
        );
        o.insert(
            "/etc/was-private",
            Some(Observed::file(OLD_PRIVATE, 0o600, 0, 0)),
        );
        o.insert(
            "/etc/old-secret",
            Some(Observed::file(OLD_TOKEN, 0o600, 0, 0)),
        );
        let p = plan(&d, &o, &set(&["/etc/old-secret"])).unwrap();
        assert_eq!(p.creates.len() + p.updates.len(), 4);
        assert_eq!(p.deletes.len(), 1);
        assert!(p.creates.iter().chain(&p.updates).all(|c| c.secret));
        let text = render_text(&p);
        let json = serde_json::to_string_pretty(&render_json(&p)).unwrap();
        for out in [&text, &json] {
            for s in [
                NEW_TOKEN,
                OLD_TOKEN,
                WIFI,
                SHADOW,
                OLD_PRIVATE,
                "token:",
                "public now",
            ] {
                assert!(!out.contains(s), "secret {s:?} leaked into:\n{out}");
            }
        }
        let old8 = &sha256_hex(format!("token: {OLD_TOKEN}\n").as_bytes())[..8];
        let new8 = &sha256_hex(format!("token: {NEW_TOKEN}\n").as_bytes())[..8];
        assert!(
            text.contains(&format!("content changed (secret, sha256 {old8}→{new8})")),
            "{text}"
        );
        assert!(json.contains(old8) && json.contains(new8));
    }
}
