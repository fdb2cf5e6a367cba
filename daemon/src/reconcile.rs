//! One reconcile pass: snapshot → config → rendered desired state → plan, and (for apply) the
//! transaction and its effects. `bosun plan`/`apply` use it once; the daemon loop applies
//! every snapshot through a [`SnapshotApplier`] (the health-gated one in
//! [`crate::guarded_apply`]), which calls it.
//!
//! Order matters for "bad input changes nothing": the config is loaded and validated (pure)
//! before anything is read or written under the root or the state dir.
//!
//! Recovery first: [`prepare`] writes nothing, yet plans against the tree and managed set that
//! recovery of an interrupted apply will leave ([`apply::RecoveredView`]); [`apply_prepared`]
//! recovers (inside the transaction's lock) before applying, and the transaction refuses a plan
//! that did not count in what recovery rolled forward.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::{self, ApplyReport, RecoveredView};
use crate::config::{self, ConfigError, LoadOptions};
use crate::desired::{CommandPhase, Effect};
use crate::fsroot::Root;
use crate::health::HealthReport;
use crate::keys::{KeyFetcher, KeyFetcherConfig};
use crate::plan::{self, Plan};
use crate::render::{self, RenderEnv, RenderSettings, Rendered};
use crate::runner::{display_argv, CommandRunner};
use crate::snapshot::Snapshot;
use crate::stamps::FileStamps;
use crate::statefile;

/// Where and how to reconcile.
#[derive(Debug, Clone)]
pub struct Target {
    /// The node name: selects groups and `nodes/<hostname>.yaml`.
    pub hostname: String,
    /// Every node path is resolved under this directory (`/` on a real node).
    pub root: PathBuf,
    /// bosun's own state (journal, managed set, caches).
    pub state_dir: PathBuf,
    /// How strictly the config is read.
    pub load: LoadOptions,
    /// Node-local render settings (ssh user, k3s binary).
    pub render: RenderSettings,
    /// Where ssh key sources are fetched and cached.
    pub keys: KeyFetcherConfig,
    /// How staged files are made durable before the commit point.
    pub durability: apply::Durability,
}

impl Target {
    /// A target with default options for `hostname`, `root` and `state_dir` (pure).
    pub fn basic(hostname: &str, root: &Path, state_dir: &Path) -> Target {
        Target {
            hostname: hostname.to_string(),
            root: root.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            load: LoadOptions::for_node(root, state_dir),
            render: RenderSettings::for_user("rancher"),
            keys: KeyFetcherConfig::new(state_dir),
            durability: apply::Durability::default(),
        }
    }

    /// Effects run for real only when the root is `/`.
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// Why a reconcile pass failed. A failure before the apply's commit point leaves the node's files
/// as they were.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The node's config does not load (errors with file:line:col).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A path under the root cannot be resolved or observed.
    #[error("{0}")]
    Fs(#[from] crate::fsroot::FsError),
    /// The config cannot be rendered for this node.
    #[error("{0}")]
    Render(#[from] render::RenderError),
    /// No plan could be made (a non-file at a desired path).
    #[error("{0}")]
    Plan(#[from] plan::PlanError),
    /// The transaction or its recovery failed.
    #[error("{0}")]
    Apply(#[from] apply::ApplyError),
    /// The ssh key fetcher could not be set up.
    #[error("{0}")]
    Keys(#[from] crate::keys::KeysError),
    /// A file bosun edits in place (passwd, group, shadow, hosts, environment) is not UTF-8.
    #[error("{path}: not UTF-8 text; bosun edits this file line by line and will not guess its encoding")]
    NotText {
        /// The node path.
        path: String,
    },
    /// The OS random source failed while generating a password salt.
    #[error("generating a password salt: {0}")]
    Random(String),
    /// The state directory or the once-per-boot record in it cannot be created or written.
    #[error("state file {path}: {message}")]
    State {
        /// The state directory or file.
        path: PathBuf,
        /// The error.
        message: String,
    },
}

/// A computed plan and what led to it.
#[derive(Debug)]
pub struct Prepared {
    /// The validated config (shared with [`Applied`], so consumers never parse it again).
    pub loaded: Arc<config::Loaded>,
    /// The rendered desired state and its warnings.
    pub rendered: Rendered,
    /// The difference to what is on disk.
    pub plan: Plan,
    /// Human-readable warnings from config, rendering and key fetching (never secrets).
    pub warnings: Vec<String>,
    /// An interrupted apply waiting in the state dir; the plan already counts in what its
    /// recovery will do.
    pub pending: Option<apply::PendingRecovery>,
    /// The committed transaction the plan counts as rolled forward (see
    /// [`apply::ApplyOptions::planned_over`]).
    pub planned_over: Option<String>,
    /// The stamps the observation trusted (see [`crate::stamps`]); [`apply_prepared`] brings
    /// them up to date.
    pub stamps: FileStamps,
    /// Desired files that were read because no stamp vouched for them.
    pub unstamped: BTreeSet<String>,
}

impl Prepared {
    /// Paths the plan creates, updates or deletes.
    pub fn changed_paths(&self) -> Vec<String> {
        self.plan
            .changed_paths()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Every path the rendered state manages.
    pub fn desired_paths(&self) -> Vec<String> {
        self.rendered.state.files.keys().cloned().collect()
    }
}

const EDITED_IN_PLACE: [&str; 5] = [
    render::PASSWD,
    render::GROUP,
    render::SHADOW,
    render::HOSTS,
    render::ENVIRONMENT,
];

fn read_text(view: &RecoveredView<'_>, path: &str) -> Result<Option<String>, ReconcileError> {
    match view.observe_one(path)? {
        None => Ok(None),
        Some(o) => String::from_utf8(o.content)
            .map(Some)
            .map_err(|_| ReconcileError::NotText { path: path.into() }),
    }
}

/// Loads the config, resolves ssh keys, renders and plans against the state recovery of an
/// interrupted apply will leave (see module docs). Reads the root and the state dir; writes only
/// the ssh key cache in the state dir (after the config validated). Fetches keys over the
/// network.
pub async fn prepare(snapshot: &Snapshot, target: &Target) -> Result<Prepared, ReconcileError> {
    let loaded = Arc::new(config::load(snapshot, &target.hostname, &target.load)?);
    let mut warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    let root = Root::open(&target.root)?;

    let resolution = if loaded.config.ssh_authorized_keys.is_empty() {
        None
    } else {
        let fetcher = KeyFetcher::new(target.keys.clone())?;
        let r = fetcher.resolve(&loaded.config.ssh_authorized_keys).await;
        warnings.extend(r.warnings());
        Some(r)
    };
    let view = RecoveredView::open(&root, &target.state_dir)?;
    let [passwd, group, shadow, hosts, environment] = EDITED_IN_PLACE.map(|p| read_text(&view, p));
    let env = RenderEnv {
        passwd: passwd?,
        group: group?,
        shadow: shadow?,
        hosts: hosts?,
        environment: environment?,
        ssh_keys: resolution.as_ref().and_then(|r| r.for_render()),
        password_salt: render::accounts::random_salt()
            .map_err(|e| ReconcileError::Random(e.to_string()))?,
        node_hostname: target.hostname.clone(),
        settings: target.render.clone(),
    };
    let rendered = render::render(&loaded.config, &env)?;
    warnings.extend(rendered.warnings.iter().cloned());

    let managed = view.managed();
    let paths = plan::paths_to_observe(&rendered.state, managed);
    // Files whose stat matches their stamp are known without reading them (stat first).
    let stamps = FileStamps::load(&target.state_dir);
    let unstamped = std::cell::RefCell::new(BTreeSet::new());
    let known = |path: &str, st: &rustix::fs::Stat| {
        let Some(want) = rendered.state.files.get(path) else {
            return false;
        };
        let holds = stamps.holds(path, st, &want.content);
        if !holds {
            unstamped.borrow_mut().insert(path.to_string());
        }
        holds
    };
    let observation = view.observe_known(paths.iter().map(String::as_str), &known)?;
    let unstamped = unstamped.into_inner();
    let plan = plan::plan(&rendered.state, &observation, managed)?;
    Ok(Prepared {
        loaded,
        rendered,
        plan,
        warnings,
        pending: view.pending().cloned(),
        planned_over: view.planned_over().map(str::to_string),
        stamps,
        unstamped,
    })
}

/// Stamps the desired files that were just written or were read for want of a valid stamp,
/// so the next plan only stats them; forgets stamps of files no longer desired. Reads the files
/// it stamps; writes the stamps file in the state dir when it changed. Best effort: stamps
/// are a cache, a failure only costs reads at the next plan.
fn restamp(prepared: &Prepared, root: &Root, state_dir: &Path) {
    let files = &prepared.rendered.state.files;
    let written = prepared.plan.changed_paths();
    let mut stamps = prepared.stamps.clone();
    let keep: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let todo = files
        .iter()
        .filter(|(p, _)| written.contains(p.as_str()) || prepared.unstamped.contains(*p))
        .map(|(p, f)| (p.as_str(), f.content.as_slice()));
    stamps.record(root, todo, &keep);
    if let Err(e) = stamps.save(state_dir) {
        tracing::debug!("file stamps not saved: {e}");
    }
}

/// The commands an effect runs (pure).
pub fn effect_commands(effect: &Effect) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match effect {
        Effect::SetHostname { hostname } => vec![v(&["hostname", hostname])],
        Effect::SysctlLoad { file } => vec![v(&["sysctl", "--load", file])],
        Effect::Modprobe { module, params } => {
            let mut argv = v(&["modprobe", module]);
            argv.extend(params.iter().cloned());
            vec![argv]
        }
        Effect::DaemonReload => vec![v(&["systemctl", "daemon-reload"])],
        Effect::RestartUnit { unit } => vec![v(&["systemctl", "restart", unit])],
        Effect::ReloadUnit { unit } => vec![v(&["systemctl", "reload", unit])],
        Effect::EnableUnit { unit } => vec![v(&["systemctl", "enable", unit])],
        Effect::DisableUnit { unit } => vec![v(&["systemctl", "disable", "--now", unit])],
        Effect::RunCommands { commands, .. } => {
            commands.iter().map(|c| v(&["sh", "-c", c])).collect()
        }
    }
}

/// What running effects did: one line per command.
#[derive(Debug, Default)]
pub struct EffectLog {
    /// `ran: CMD` or `failed: CMD: status`, in order.
    pub lines: Vec<String>,
    /// Commands that failed or could not be started (effects do not stop at a failure).
    pub failures: usize,
}

/// Runs effects in order through `runner`. A failing command is logged and counted; later
/// effects still run (a failed `modprobe` must not stop a k3s restart). Runs commands.
pub fn run_effects(effects: &[Effect], runner: &dyn CommandRunner, log: &mut EffectLog) {
    for e in effects {
        for argv in effect_commands(e) {
            let shown = display_argv(&argv);
            match runner.run(&argv) {
                Ok(out) if out.success() => log.lines.push(format!("ran: {shown}")),
                Ok(out) => {
                    log.failures += 1;
                    log.lines
                        .push(format!("failed: {shown}: {}", out.status_text()));
                }
                Err(err) => {
                    log.failures += 1;
                    log.lines.push(format!("failed: {err}"));
                }
            }
        }
    }
}

/// Boot id of the node (`/proc/sys/kernel/random/boot_id` under the root), or `unknown`.
pub fn boot_id(root: &Path) -> String {
    std::fs::read_to_string(root.join("proc/sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct BootRecord {
    /// Boot id for which init_cmd/boot_cmd ran.
    before_apply: Option<String>,
    /// Boot id for which run_cmd ran.
    after_apply: Option<String>,
}

const BOOT_RECORD: &str = "boot-commands.json";

fn read_boot_record(state_dir: &Path) -> BootRecord {
    std::fs::read(state_dir.join(BOOT_RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_boot_record(state_dir: &Path, r: &BootRecord) -> Result<(), ReconcileError> {
    let path = state_dir.join(BOOT_RECORD);
    let bytes = serde_json::to_vec(r).unwrap_or_default();
    statefile::write_atomic(&path, &bytes, 0o600).map_err(|e| ReconcileError::State {
        path,
        message: e.to_string(),
    })
}

fn phase_effects(p: &Plan, phases: &[CommandPhase]) -> Vec<Effect> {
    p.once_per_boot
        .iter()
        .filter(|e| matches!(e, Effect::RunCommands { phase, .. } if phases.contains(phase)))
        .cloned()
        .collect()
}

/// What [`apply_prepared`] did.
#[derive(Debug)]
pub struct Applied {
    /// What the file transaction did.
    pub report: ApplyReport,
    /// What the effects did.
    pub effects: EffectLog,
    /// Node paths the apply created, updated or deleted.
    pub changed_paths: Vec<String>,
    /// Node paths of every desired file (what drift watching covers).
    pub desired_paths: Vec<String>,
    /// The config that was applied.
    pub loaded: Arc<config::Loaded>,
}

/// Applies a prepared plan: recovery of an interrupted apply (refusing the plan if it did not
/// count that recovery in), init/boot commands (once per boot), the file transaction, the
/// triggered effects, then run commands (once per boot). Writes under the root and the state
/// dir; runs commands through `runner`.
pub fn apply_prepared(
    prepared: &Prepared,
    target: &Target,
    runner: &dyn CommandRunner,
) -> Result<Applied, ReconcileError> {
    std::fs::create_dir_all(&target.state_dir).map_err(|e| ReconcileError::State {
        path: target.state_dir.clone(),
        message: e.to_string(),
    })?;
    let root = Root::open(&target.root)?;
    let recovery = apply::recover(&root, &target.state_dir)?;
    apply::check_plan_basis(&recovery, prepared.planned_over.as_deref())?;
    let boot = boot_id(&target.root);
    let mut record = read_boot_record(&target.state_dir);
    let mut log = EffectLog::default();

    if record.before_apply.as_deref() != Some(boot.as_str()) {
        let before = phase_effects(&prepared.plan, &[CommandPhase::Init, CommandPhase::Boot]);
        run_effects(&before, runner, &mut log);
        record.before_apply = Some(boot.clone());
        write_boot_record(&target.state_dir, &record)?;
    }
    let mut report = apply::apply_with(
        &root,
        &target.state_dir,
        &prepared.plan,
        apply::ApplyOptions {
            durability: target.durability,
            // Recovered above: any roll-forward inside the transaction is someone else's.
            planned_over: None,
        },
    )?;
    report.recovery = recovery;
    restamp(prepared, &root, &target.state_dir);
    run_effects(&prepared.plan.effects, runner, &mut log);
    if record.after_apply.as_deref() != Some(boot.as_str()) {
        let after = phase_effects(&prepared.plan, &[CommandPhase::Run]);
        run_effects(&after, runner, &mut log);
        record.after_apply = Some(boot);
        write_boot_record(&target.state_dir, &record)?;
    }
    Ok(Applied {
        report,
        effects: log,
        changed_paths: prepared.changed_paths(),
        desired_paths: prepared.desired_paths(),
        loaded: prepared.loaded.clone(),
    })
}

/// What a new commit's apply may do now, as the rollout gates allow (see [`crate::rollout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Restart k3s (a disruptive action): the node passed wave, window, lock and drain.
    pub restart_k3s: bool,
    /// Change files at all (`rollout.waves_for_all`: the node's wave has started).
    pub change: bool,
}

impl Permit {
    /// Everything: no rollout coordination, or a correction of the last good commit.
    pub const ALL: Permit = Permit {
        restart_k3s: true,
        change: true,
    };
}

/// How applying one snapshot ended, as the daemon loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The snapshot is on disk: applied without a gate, healthy, or unhealthy but kept
    /// (`unhealthy` says why it could not be reverted).
    Kept {
        /// Why it is unhealthy yet kept (no previous good commit, or it is the last good one);
        /// `None`: healthy or not gated.
        unhealthy: Option<String>,
    },
    /// It failed its health gate (`health`: the summary) and the node was reverted to `to`.
    RolledBack {
        /// The last good commit reverted to.
        to: String,
        /// The health summary of the failed gate.
        health: String,
    },
    /// Not applied: it failed its health gate before (`reason`, as recorded then).
    Refused {
        /// Why it was recorded bad.
        reason: String,
    },
    /// Not applied yet, nothing written: the rollout gates must allow it first. `restart`:
    /// the k3s unit it would restart and the fingerprint of the k3s config it brings; `None`:
    /// only the wave holds it (`rollout.waves_for_all`).
    Deferred {
        /// The k3s unit the plan restarts and the fingerprint of the k3s config it brings.
        restart: Option<(String, String)>,
    },
}

/// What applying one snapshot did.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// Node paths created, updated or deleted (by the apply and any revert).
    pub changed_paths: Vec<String>,
    /// Node paths of every desired file (watched for drift).
    pub desired_paths: Vec<String>,
    /// Effect commands that failed (logged by the applier).
    pub effect_failures: usize,
    /// How it ended.
    pub disposition: Disposition,
    /// The config now applied, when the snapshot was kept.
    pub loaded: Option<Arc<config::Loaded>>,
}

impl ApplyOutcome {
    /// The outcome of an apply that kept its snapshot (pure).
    pub fn kept(applied: &Applied) -> ApplyOutcome {
        ApplyOutcome {
            changed_paths: applied.changed_paths.clone(),
            desired_paths: applied.desired_paths.clone(),
            effect_failures: applied.effects.failures,
            disposition: Disposition::Kept { unhealthy: None },
            loaded: Some(applied.loaded.clone()),
        }
    }

    /// Whether the snapshot was not kept (rolled back or refused).
    pub fn rejected(&self) -> bool {
        matches!(
            self.disposition,
            Disposition::RolledBack { .. } | Disposition::Refused { .. }
        )
    }
}

/// A gated apply waiting for its health verdict: the commit's files are on disk (and k3s
/// restarted); what the health gate must check.
#[derive(Debug, Clone)]
pub struct HealthTrial {
    /// The commit under trial.
    pub commit: String,
    /// The checks to run (the config's, or the role's defaults).
    pub checks: Vec<crate::config::HealthCheck>,
    /// Timeout, interval and required successes.
    pub config: crate::config::HealthConfig,
    /// Node paths of every file the commit manages (watched for drift during the wait).
    pub desired_paths: Vec<String>,
}

/// How far one call of [`SnapshotApplier::apply`] got.
#[derive(Debug)]
pub enum Applying {
    /// The apply ended.
    Done(ApplyOutcome),
    /// The files are applied and the health verdict is needed: the caller waits for health
    /// (without blocking anything else) and hands the report to [`SnapshotApplier::judge`].
    AwaitingHealth(HealthTrial),
}

/// The "apply this snapshot" step of the daemon loop: called for new commits and, with the
/// last good snapshot, for drift corrections and resyncs. A gated apply is split in two
/// around the health wait, so the loop keeps serving signals, drift and status meanwhile.
pub trait SnapshotApplier {
    /// Why an apply failed (the node keeps what it had, or a journal completes it).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes the node match `snapshot`, up to the health verdict. Writes under the target's
    /// root and state dir; runs effects through `runner`.
    fn apply(
        &mut self,
        snapshot: &Snapshot,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
        permit: Permit,
    ) -> impl Future<Output = Result<Applying, Self::Error>>;

    /// Concludes the apply left [`Applying::AwaitingHealth`] with the health `report`: keeps
    /// it, or records it bad and reverts (writes, runs effects). Only valid right after such
    /// an apply.
    fn judge(
        &mut self,
        report: HealthReport,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
    ) -> impl Future<Output = Result<ApplyOutcome, Self::Error>>;
}

/// Re-applies the files of `snapshot` as they are, without gate or history (drift under a
/// pending health trial: the files of the commit being judged must stay as it says). Writes
/// under the root and the state dir; runs effects through `runner`. Blocking work runs on a
/// blocking thread.
pub async fn reapply(
    snapshot: &Snapshot,
    target: &Target,
    runner: Arc<dyn CommandRunner>,
) -> Result<Applied, ReconcileError> {
    let prepared = prepare(snapshot, target).await?;
    let t = target.clone();
    tokio::task::spawn_blocking(move || apply_prepared(&prepared, &t, runner.as_ref()))
        .await
        .map_err(|e| ReconcileError::State {
            path: target.state_dir.clone(),
            message: format!("apply task failed: {e}"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RecordingRunner;

    #[test]
    fn effects_map_to_commands_and_failures_do_not_stop_later_ones() {
        let runner =
            RecordingRunner::new().on(&["modprobe"], crate::runner::CommandOutput::exit(1));
        let mut log = EffectLog::default();
        run_effects(
            &[
                Effect::Modprobe {
                    module: "nope".into(),
                    params: vec!["a=1".into()],
                },
                Effect::DisableUnit {
                    unit: "k3s.service".into(),
                },
                Effect::EnableUnit {
                    unit: "k3s-agent.service".into(),
                },
                Effect::RestartUnit { unit: "k3s".into() },
            ],
            &runner,
            &mut log,
        );
        assert_eq!(log.failures, 1);
        let calls: Vec<String> = runner.calls().iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            calls,
            vec![
                "modprobe nope a=1",
                "systemctl disable --now k3s.service",
                "systemctl enable k3s-agent.service",
                "systemctl restart k3s"
            ]
        );
    }
}
