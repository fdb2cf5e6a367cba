//! The command line: argument parsing and one function per subcommand. `main` only calls
//! [`run`]. The node's capabilities (runners, boot env) come from [`crate::node`].
//!
//! Exit codes: 0 success (for `plan`: no changes), 1 error, 2 (`plan`) changes pending.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, explain, Diagnostic, LoadOptions};
use crate::node::Node;
use crate::plan;
use crate::reconcile;
use crate::snapshot::Snapshot;

/// The `bosun` command line.
#[derive(Debug, Parser)]
#[command(
    name = "bosun",
    version,
    about = "GitOps node daemon for K3s fleets (k3os config.yaml compatible)"
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of `validate`, `render` and `plan`: `yaml` (`render`; the other commands print
/// text), `json`, or `text` (human-readable; `render` prints YAML).
// The variants have no `///`: clap would turn it into per-value help and change the layout of
// every `--help` that shows `--format`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Text,
}

/// The subcommands of `bosun`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config repo (every layer file, and every node that has a nodes/ file) or the
    /// given standalone config files. Exit 0 when valid, 1 on errors.
    Validate {
        /// Config repo directory (holding config.yaml, groups/, nodes/).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Treat unknown keys (k3os ignored them silently) and k3os leniencies (a skipped
        /// literal ssh key, a relative write_files path, k3s_args starting with a flag) as errors.
        #[arg(long)]
        strict: bool,
        /// Largest decoded write_files content, in bytes.
        #[arg(long, default_value_t = 64 << 20)]
        max_file_size: u64,
        /// The nodes' state dir (agent `state_dir`), a node path: write_files may not write
        /// there.
        #[arg(long, default_value = config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Validate these files on their own (each as a complete k3os config.yaml) instead of the repo.
        files: Vec<PathBuf>,
        /// Output format for diagnostics.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the merged config of one node.
    Render {
        /// Config repo directory (holding config.yaml, groups/, nodes/).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Node name selecting groups and `nodes/<hostname>.yaml`.
        #[arg(long)]
        hostname: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
        /// Annotate every value with the file:line:col it came from (YAML only).
        #[arg(long)]
        explain: bool,
        /// Print secrets (tokens, passwords, passphrases, content of files that are not
        /// world-readable, secret-named environment values) instead of `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
        /// Treat unknown keys and k3os leniencies as errors (as `validate --strict`).
        #[arg(long)]
        strict: bool,
    },
    /// Show what `apply` would change on this node: files to create, update (content, mode,
    /// owner) or delete, with diffs (secrets redacted), and the effects that would run.
    /// Exit 0 when nothing would change, 2 when something would, 1 on errors.
    Plan {
        /// Which node, root and repo.
        #[command(flatten)]
        target: TargetArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Plan and apply once, as one crash-safe transaction, then run the triggered effects.
    /// With a --root other than /, effects are printed, not run.
    Apply {
        /// Which node, root and repo.
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Print the JSON Schema of config.yaml layers.
    Schema,
    /// Run the K3s health checks once (`health.checks`, or the defaults for the node's role)
    /// and report each. Exit 0 when all pass, 1 otherwise. With a --root other than /, unit and
    /// command checks are skipped (they would ask the live system), never counted as passed.
    Health(HealthArgs),
    /// A/B OS upgrades: status, manual rollback, mark-good.
    #[command(subcommand)]
    Upgrade(crate::upgrade::commands::UpgradeCommand),
    /// Run the GitOps loop: poll the config repo, verify, apply, revert drift. Runs until
    /// SIGTERM/SIGINT (exit 0); SIGHUP polls now.
    Daemon {
        /// Agent config file. Default: `<root>/etc/bosun/agent.yaml` (drop-ins: agent.d/*.yaml
        /// next to it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the agent config is looked up, and the default node root.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Log format on stderr. Default: journald when started by systemd with its journal
        /// (JOURNAL_STREAM set), else plain text.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Show what the daemon last did (from the status file in the state dir).
    Status {
        /// Print the status JSON.
        #[arg(long)]
        json: bool,
        /// State dir. Default: the agent config's state_dir, else /var/lib/bosun.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Agent config file used to find the state dir.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of the agent config (/etc/bosun/agent.yaml).
    AgentSchema,
    /// Build A/B slot images and first-install disk images.
    #[command(subcommand)]
    Image(crate::image::ImageCommand),
    /// Write the agent config (/etc/bosun/agent.yaml) from flags; with --check, fetch and
    /// verify once and print the plan first. Refuses to replace a config without --force.
    Init(crate::init::InitArgs),
}

/// Where `bosun health` takes its config from.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Resolve kubeconfigs and CA files under this directory.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Node name (node_ready's default node). Default: this system's hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Config repo to read `health:` from. Default: the last good commit recorded in the
    /// state dir by health-gated applies.
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// bosun's state. Default: `<root>/var/lib/bosun`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Log format of `bosun daemon` on stderr: `plain` (human-readable lines), `json` (one JSON
/// object per line) or `journald` (structured records to the systemd journal).
// The variants have no `///`: clap would turn it into per-value help (see [`Format`]).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
    Journald,
}

/// Which node, which root, which repo.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Config repo directory (holding config.yaml, groups/, nodes/).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Node name selecting groups and `nodes/<hostname>.yaml`. Default: this system's hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Resolve every node path under this directory; effects are only run when it is /.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// bosun's state (journal, managed-file set, key cache). Default: `<root>/var/lib/bosun`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Treat unknown keys and k3os leniencies as errors (as `validate --strict`); the daemon
    /// has no such switch and counts them as config warnings.
    #[arg(long)]
    pub strict: bool,
    /// Base URL for `github:USER` key sources.
    #[arg(long, default_value = "https://github.com")]
    pub github_base: String,
    /// Base URL for `gitlab:USER` key sources.
    #[arg(long, default_value = "https://gitlab.com")]
    pub gitlab_base: String,
    /// The login user that receives ssh_authorized_keys and k3os.password (never root).
    #[arg(long, default_value = "rancher")]
    pub ssh_user: String,
    /// How staged files are made durable before the commit point: fsync each file, or one
    /// syncfs per filesystem (see bench/apply).
    #[arg(long, value_enum, default_value = "syncfs")]
    pub durability: DurabilityArg,
}

/// `--durability`: how staged files are made durable before the commit point: `fsync` each
/// staged file ([`crate::apply::Durability::FsyncEach`]) or one `syncfs` per filesystem
/// holding staged files ([`crate::apply::Durability::SyncfsOnce`]).
// The variants have no `///`: clap would turn it into per-value help (see [`Format`]).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DurabilityArg {
    Fsync,
    Syncfs,
}

impl TargetArgs {
    fn target(&self) -> Result<reconcile::Target> {
        let hostname = match &self.hostname {
            Some(h) => h.clone(),
            None => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| self.root.join("var/lib/bosun"));
        let mut keys = crate::keys::KeyFetcherConfig::new(&state_dir);
        keys.github_base = self.github_base.trim_end_matches('/').to_string();
        keys.gitlab_base = self.gitlab_base.trim_end_matches('/').to_string();
        let load = LoadOptions {
            strict: self.strict,
            ..LoadOptions::for_node(&self.root, &state_dir)
        };
        Ok(reconcile::Target {
            hostname,
            root: self.root.clone(),
            state_dir,
            load,
            render: crate::render::RenderSettings::for_user(&self.ssh_user),
            keys,
            durability: match self.durability {
                DurabilityArg::Fsync => crate::apply::Durability::FsyncEach,
                DurabilityArg::Syncfs => crate::apply::Durability::SyncfsOnce,
            },
        })
    }
}

/// Runs the command line: one function per subcommand. Prints to stdout/stderr; returns the
/// exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate {
            repo,
            strict,
            max_file_size,
            state_dir,
            files,
            format,
        } => {
            let convert = config::ConvertOptions {
                max_file_size,
                ..Default::default()
            };
            let opts = LoadOptions {
                strict,
                convert: convert.with_state_dir(Path::new("/"), &state_dir),
            };
            validate(&repo, &files, &opts, format)
        }
        Command::Render {
            repo,
            hostname,
            format,
            explain,
            show_secrets,
            strict,
        } => render(&repo, &hostname, format, explain, show_secrets, strict),
        Command::Plan { target, format } => plan(&target, format),
        Command::Apply { target } => apply(&target),
        Command::Schema => print_schema(&schema_text()),
        Command::Health(args) => health(&args),
        Command::Upgrade(cmd) => crate::upgrade::commands::run(cmd),
        Command::AgentSchema => print_schema(&crate::agent::schema_text()),
        Command::Image(cmd) => crate::image::run(cmd),
        Command::Init(args) => crate::init::run(args),
        Command::Daemon {
            config,
            root,
            log_format,
        } => run_daemon(config, root, log_format),
        Command::Status {
            json,
            state_dir,
            config,
        } => show_status(json, state_dir, config),
    }
}

fn print_schema(text: &str) -> Result<ExitCode> {
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `bosun render`: the merged config of one node, as YAML (optionally with provenance) or JSON.
fn render(
    repo: &Path,
    hostname: &str,
    format: Format,
    explain: bool,
    show_secrets: bool,
    strict: bool,
) -> Result<ExitCode> {
    let snap = Snapshot::node_from_dir(repo, hostname)
        .with_context(|| format!("reading config repo {}", repo.display()))?;
    let opts = LoadOptions {
        strict,
        ..Default::default()
    };
    let loaded = match config::load(&snap, hostname, &opts) {
        Ok(l) => l,
        Err(e) => {
            print_diags(&e.diagnostics);
            return Ok(ExitCode::from(1));
        }
    };
    print_diags(&loaded.warnings);
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let v = explain::to_json(&loaded.merged, !show_secrets);
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        _ => {
            writeln!(out, "# layers: {}", loaded.layers.join(" → "))?;
            write!(
                out,
                "{}",
                explain::to_yaml(&loaded.merged, explain, !show_secrets)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bosun plan`: exit 0 without changes, 2 with changes, 1 on errors.
fn plan(target: &TargetArgs, format: Format) -> Result<ExitCode> {
    let Some((prepared, _)) = prepare(target)? else {
        return Ok(ExitCode::from(1));
    };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&plan::render_json(&prepared.plan))?
        )?,
        _ => write!(out, "{}", plan::render_text(&prepared.plan))?,
    }
    let changes = prepared.plan.has_file_changes() || prepared.pending.is_some();
    Ok(if changes {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `bosun apply`: one transaction, then the effects (only recorded off the live root).
fn apply(target: &TargetArgs) -> Result<ExitCode> {
    let Some((prepared, t)) = prepare(target)? else {
        return Ok(ExitCode::from(1));
    };
    let node = Node::new(t);
    let applied = reconcile::apply_prepared(&prepared, &node.target, node.effects.as_ref())?;
    let r = &applied.report;
    if let Some(tx) = &r.recovery.rolled_forward {
        eprintln!("recovered an interrupted apply (transaction {tx}) first: completed it");
    }
    if let Some(tx) = &r.recovery.rolled_back {
        eprintln!("recovered an interrupted apply (transaction {tx}) first: it had not committed, removed its staged files");
    }
    println!(
        "applied: {} written, {} deleted, {} unchanged{}",
        r.written,
        r.deleted,
        prepared.plan.unchanged,
        r.txid
            .as_ref()
            .map(|t| format!(" (transaction {t})"))
            .unwrap_or_default()
    );
    for line in &applied.effects.lines {
        if node.live() {
            println!("{line}");
        } else {
            println!(
                "{} (recorded, not run: --root is not /)",
                line.replacen("ran: ", "would run: ", 1)
            );
        }
    }
    Ok(if applied.effects.failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `bosun health`: loads `health:` from --repo or the last good commit, runs the checks once.
fn health(args: &HealthArgs) -> Result<ExitCode> {
    use crate::guarded_apply::CommitHistory;
    use crate::health::{self, K3sRole};

    let hostname = match &args.hostname {
        Some(h) => h.clone(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.root.join("var/lib/bosun"));
    let snap = match &args.repo {
        Some(repo) => Snapshot::node_from_dir(repo, &hostname)
            .with_context(|| format!("reading config repo {}", repo.display()))?,
        None => CommitHistory::load(&state_dir)?
            .last_good()
            .map(|g| g.snapshot().for_node(&hostname))
            .with_context(|| {
                format!(
                    "no --repo given and no last good commit recorded in {}; pass --repo DIR",
                    state_dir.display()
                )
            })?,
    };
    let loaded = match config::load(&snap, &hostname, &LoadOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            print_diags(&e.diagnostics);
            return Ok(ExitCode::from(1));
        }
    };
    // Off the live root the runner is a dry one: unit and command checks are skipped.
    let node = Node::new(reconcile::Target::basic(&hostname, &args.root, &state_dir));
    let live = node.live();
    let ctx = node.health_context();
    let role = K3sRole::from_k3os(&loaded.config.k3os);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    let ok = rt.block_on(health::run_health_command_at(
        &loaded.config.health,
        role,
        &ctx,
        live,
        &mut out,
    ))?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn system_hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Sets up tracing: journald, JSON lines or plain text on stderr.
fn init_logging(format: Option<LogFormat>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = || EnvFilter::try_from_env("BOSUN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::env::var_os("JOURNAL_STREAM").is_some() {
        LogFormat::Journald
    } else {
        LogFormat::Plain
    });
    if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer.with_syslog_identifier("bosun".into()))
                    .init();
                return;
            }
            Err(e) => eprintln!("bosun: journald unavailable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_daemon(
    config: Option<PathBuf>,
    root: PathBuf,
    log_format: Option<LogFormat>,
) -> Result<ExitCode> {
    init_logging(log_format);
    let defaults = crate::agent::Defaults {
        root,
        hostname: system_hostname(),
    };
    let cfg = crate::agent::load(config.as_deref(), &defaults)?;
    // One thread drives the loop; git2 and apply work go to tokio's blocking pool. Keeps idle
    // RSS small on 1 GB nodes (no per-core worker threads).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("starting the tokio runtime")?;
    // Effects and health checks that ask the live system run only when the root is /.
    let node = Node::from_agent(&cfg);
    let applier = crate::guarded_apply::GuardedApplier::new();
    let daemon = crate::daemon::Daemon::new(cfg, node, applier);
    rt.block_on(daemon.run())?;
    Ok(ExitCode::SUCCESS)
}

fn show_status(
    json: bool,
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<ExitCode> {
    let state_dir = match (state_dir, config) {
        (Some(d), _) => d,
        (None, Some(c)) => {
            let defaults = crate::agent::Defaults {
                root: PathBuf::from("/"),
                hostname: system_hostname(),
            };
            crate::agent::load(Some(&c), &defaults)?.state_dir
        }
        (None, None) => PathBuf::from("/var/lib/bosun"),
    };
    let Some(status) = crate::status::read(&state_dir)? else {
        eprintln!(
            "no status in {} (has `bosun daemon` run with this state dir?)",
            state_dir.display()
        );
        return Ok(ExitCode::from(1));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        print!("{}", status.render_text(now));
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates, renders and plans for a target. Prints diagnostics and warnings to stderr;
/// `None` means the config was rejected (already printed).
fn prepare(args: &TargetArgs) -> Result<Option<(reconcile::Prepared, reconcile::Target)>> {
    let t = args.target()?;
    let snap = Snapshot::node_from_dir(&args.repo, &t.hostname)
        .with_context(|| format!("reading config repo {}", args.repo.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(reconcile::prepare(&snap, &t)) {
        Ok(p) => {
            for w in &p.warnings {
                eprintln!("{w}");
            }
            if let Some(pending) = &p.pending {
                eprintln!(
                    "note: an interrupted apply is waiting in {}: {pending}. `bosun apply` recovers it first; this plan shows the changes after that recovery",
                    t.state_dir.display()
                );
            }
            Ok(Some((p, t)))
        }
        Err(reconcile::ReconcileError::Config(e)) => {
            print_diags(&e.diagnostics);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The committed `schemas/config.schema.json` must equal this text.
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&config::spec::json_schema()).unwrap_or_default()
}

fn print_diags(diags: &[Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        let _ = writeln!(err, "{d}");
    }
}

/// `bosun validate`: a repo directory (streamed, one node file at a time, see
/// [`crate::repo_check`]) or standalone files. Prints diagnostics to stdout as they are found,
/// the summary to stderr.
fn validate(
    repo: &std::path::Path,
    files: &[PathBuf],
    opts: &LoadOptions,
    format: Format,
) -> Result<ExitCode> {
    let mut out = DiagnosticPrinter::new(format);
    if files.is_empty() {
        crate::repo_check::check_dir(repo, opts, &mut |d| out.print(d))
            .with_context(|| format!("reading config repo {}", repo.display()))?;
    } else {
        for f in files {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            let diags = match config::load_file(&f.display().to_string(), &bytes, opts) {
                Ok(l) => l.warnings,
                Err(e) => e.diagnostics,
            };
            diags.iter().for_each(|d| out.print(d));
        }
    }
    let (errors, warnings) = out.finish()?;
    if format != Format::Json {
        if errors == 0 {
            eprintln!("valid ({warnings} warning(s))");
        } else {
            eprintln!("invalid: {errors} error(s), {warnings} warning(s)");
        }
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints diagnostics one by one: a line each, or the elements of one JSON array.
struct DiagnosticPrinter {
    json: bool,
    errors: usize,
    warnings: usize,
    out: std::io::BufWriter<std::io::Stdout>,
    failed: Option<std::io::Error>,
}

impl DiagnosticPrinter {
    fn new(format: Format) -> Self {
        DiagnosticPrinter {
            json: format == Format::Json,
            errors: 0,
            warnings: 0,
            out: std::io::BufWriter::new(std::io::stdout()),
            failed: None,
        }
    }

    /// Writes one diagnostic to stdout (the first write error is kept for [`Self::finish`]).
    fn print(&mut self, d: &Diagnostic) {
        let first = self.errors + self.warnings == 0;
        if d.is_error() {
            self.errors += 1;
        } else {
            self.warnings += 1;
        }
        let written = if self.json {
            let element = serde_json::to_string_pretty(d).unwrap_or_default();
            let indented = element.replace('\n', "\n  ");
            write!(
                self.out,
                "{}  {indented}",
                if first { "[\n" } else { ",\n" }
            )
        } else {
            writeln!(self.out, "{d}")
        };
        if let Err(e) = written {
            self.failed.get_or_insert(e);
        }
    }

    /// Closes the JSON array and flushes; returns (errors, warnings).
    fn finish(mut self) -> Result<(usize, usize)> {
        if self.json {
            let end = if self.errors + self.warnings == 0 {
                "[]\n"
            } else {
                "\n]\n"
            };
            self.out.write_all(end.as_bytes())?;
        }
        self.out.flush()?;
        if let Some(e) = self.failed {
            return Err(e.into());
        }
        Ok((self.errors, self.warnings))
    }
}
