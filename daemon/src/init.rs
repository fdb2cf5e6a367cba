//! `bosun init`: writes the node's agent config (`/etc/bosun/agent.yaml`) from flags, and
//! with `--check` proves it works first: one fetch of the config repo, the signature check
//! the daemon would make, and the plan the node would apply.
//!
//! Order ("bad input changes nothing"): refuse an existing file without `--force`; build the
//! config as an [`AgentFile`] (the types the agent JSON Schema is generated from) and render
//! it; parse the rendered text back with the daemon's own parser ([`agent::parse_files`]);
//! with `--check`, fetch into a temporary cache, verify, snapshot and plan (reading the root,
//! writing only temporary files); only then write the file, atomically.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::agent::{
    self, AgentFile, BootloaderKind, DurationValue, ModeValue, SlotsSection, SourceSection,
    UpgradeSection, VerificationSection,
};

/// Flags of `bosun init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to write the agent config.
    #[arg(long, default_value = "/etc/bosun/agent.yaml")]
    pub config: PathBuf,
    /// The config repo: https://, ssh://, user@host:path, git:// or file:// URL.
    #[arg(long)]
    pub url: String,
    /// Branch, tag or full commit id to follow.
    #[arg(long = "ref", default_value = "main")]
    pub reference: String,
    /// Node name selecting groups/ and `nodes/<name>.yaml`. Default: the hostname at run time.
    #[arg(long)]
    pub node_name: Option<String>,
    /// git allowed_signers file trusting SSH keys (turns signature verification on).
    #[arg(long)]
    pub allowed_signers: Option<PathBuf>,
    /// Armored OpenPGP public key file (repeatable; turns signature verification on).
    #[arg(long = "openpgp-key")]
    pub openpgp_keys: Vec<PathBuf>,
    /// Private key for an ssh:// source.
    #[arg(long)]
    pub ssh_key_file: Option<PathBuf>,
    /// known_hosts file pinning the ssh:// server's host key.
    #[arg(long)]
    pub ssh_known_hosts: Option<PathBuf>,
    /// File holding an HTTPS token for the source.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Poll interval (30s, 5m, 1h).
    #[arg(long)]
    pub interval: Option<String>,
    /// The node's root (every managed path is resolved under it). Default: /.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// bosun's state dir; on an A/B node it must be on the shared data partition.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A/B upgrades: slot a device (with --slot-b and --grubenv).
    #[arg(long, requires_all = ["slot_b", "grubenv"])]
    pub slot_a: Option<PathBuf>,
    /// A/B upgrades: slot b device.
    #[arg(long, requires = "slot_a")]
    pub slot_b: Option<PathBuf>,
    /// A/B upgrades: the GRUB environment block (bootloader grub).
    #[arg(long, requires = "slot_a")]
    pub grubenv: Option<PathBuf>,
    /// Replace an existing config (one that holds only comments, like the packaged example,
    /// is replaced without it).
    #[arg(long)]
    pub force: bool,
    /// Before writing: fetch the repo once, verify the head commit's signature, and print
    /// the plan this node would apply. Nothing but the config file is written.
    #[arg(long)]
    pub check: bool,
}

/// The agent config the flags describe (pure).
pub fn agent_file(a: &InitArgs) -> AgentFile {
    let verify = a.allowed_signers.is_some() || !a.openpgp_keys.is_empty();
    AgentFile {
        source: Some(SourceSection {
            url: Some(a.url.clone()),
            reference: Some(a.reference.clone()),
            ssh_key_file: a.ssh_key_file.clone(),
            ssh_known_hosts: a.ssh_known_hosts.clone(),
            token_file: a.token_file.clone(),
            ..Default::default()
        }),
        interval: a.interval.clone().map(DurationValue::Text),
        node_name: a.node_name.clone(),
        state_dir: a.state_dir.clone(),
        root: a.root.clone(),
        verification: verify.then(|| VerificationSection {
            mode: Some(ModeValue::Head),
            allowed_signers: a.allowed_signers.clone(),
            openpgp_keys: (!a.openpgp_keys.is_empty()).then(|| a.openpgp_keys.clone()),
            allow_history_rewrite: None,
        }),
        upgrade: a.slot_a.as_ref().map(|slot_a| UpgradeSection {
            slots: Some(SlotsSection {
                a: Some(slot_a.clone()),
                b: a.slot_b.clone(),
            }),
            bootloader: Some(BootloaderKind::Grub),
            grubenv: a.grubenv.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The file's text: a header saying where it came from, then the YAML (pure).
pub fn render(file: &AgentFile) -> Result<String> {
    let yaml = serde_saphyr::to_string(file).context("rendering the agent config")?;
    Ok(format!(
        "# bosun agent config, written by `bosun init`. Reference: README \"The daemon\",\n\
         # schema: schemas/agent.schema.json (`bosun agent-schema`).\n{yaml}"
    ))
}

/// Runs `bosun init`. Writes only `--config` (and, with `--check`, temporary files).
pub fn run(args: InitArgs) -> Result<ExitCode> {
    let existing = std::fs::read_to_string(&args.config).ok();
    if existing.as_deref().is_some_and(|t| !only_comments(t)) && !args.force {
        bail!(
            "{} exists; pass --force to replace it (nothing was changed)",
            args.config.display()
        );
    }
    let text = render(&agent_file(&args))?;
    let defaults = agent::Defaults {
        root: PathBuf::from("/"),
        hostname: system_hostname(),
    };
    let config = agent::parse_files(&[(args.config.clone(), text.clone())], &defaults)
        .context("the flags do not make a valid agent config (nothing was written)")?;
    if args.check {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let report = rt
            .block_on(check(&config))
            .context("--check failed (nothing was written)")?;
        print!("{report}");
    }
    write(&args.config, &text)?;
    println!("wrote {}", args.config.display());
    Ok(ExitCode::SUCCESS)
}

/// Whether a config file holds nothing but comments and blank lines (the packaged example),
/// so that replacing it loses nothing (pure).
pub fn only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

/// Writes the config atomically (creating its directory). Writes to disk.
fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::statefile::write_atomic(path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

fn system_hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// One fetch into a temporary cache, the signature check, the snapshot, and the plan against
/// the node's root. Network + temporary files only; reads the root and the state dir.
async fn check(config: &agent::AgentConfig) -> Result<String> {
    use crate::source::{self, Cache, Verdict};
    let scratch = tempfile_dir()?;
    let mut src = config.source.clone();
    src.cache_dir = scratch.path().join("git-cache");
    let verify = config.verify.clone();
    let host = config.node_name.clone();
    let (commit, verdict, snapshot) = tokio::task::spawn_blocking(move || {
        let fetched = source::fetch(&src)?;
        let commit = fetched.commit();
        let cache = Cache::open(&src.cache_dir)?;
        let verdict = source::verify_commit(&cache, commit, &verify)?;
        let snapshot = source::snapshot(&cache, commit, src.subdir.as_deref(), &host)?;
        Ok::<_, source::SourceError>((commit, verdict, snapshot))
    })
    .await??;
    let mut keys = crate::keys::KeyFetcherConfig::new(scratch.path());
    keys.github_base = config.github_base.clone();
    keys.gitlab_base = config.gitlab_base.clone();
    let target = crate::reconcile::Target {
        hostname: config.node_name.clone(),
        root: config.root.clone(),
        state_dir: config.state_dir.clone(),
        load: crate::config::LoadOptions::for_node(&config.root, &config.state_dir),
        render: crate::render::RenderSettings::for_user(&config.ssh_user),
        keys,
        durability: crate::apply::Durability::SyncfsOnce,
    };
    let prepared = match crate::reconcile::prepare(&snapshot, &target).await {
        Ok(p) => p,
        Err(crate::reconcile::ReconcileError::Config(e)) => {
            let lines: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
            bail!(
                "commit {commit}: the config for {} is invalid:\n{}",
                config.node_name,
                lines.join("\n")
            );
        }
        Err(e) => return Err(e.into()),
    };
    let signer = match verdict {
        Verdict::NotChecked => "not checked (verification is off)".to_string(),
        Verdict::Verified { signer } => format!("verified, signed by {signer}"),
    };
    let mut out = format!(
        "fetched {} {} → commit {commit}\nsignature: {signer}\nnode: {} (layers: {})\n",
        config.source.url,
        config.source.reference,
        config.node_name,
        prepared.loaded.layers.join(" → ")
    );
    for w in &prepared.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str("plan:\n");
    out.push_str(&crate::plan::render_text(&prepared.plan));
    Ok(out)
}

/// A private temporary directory, removed on drop.
fn tempfile_dir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let mut n = [0u8; 8];
        getrandom::fill(&mut n).map_err(|e| anyhow::anyhow!("random name: {e}"))?;
        let p = base.join(format!("bosun-init-{}", hex::encode(n)));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    bail!("cannot create a temporary directory in {}", base.display())
}

struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    /// Removes the directory tree.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: InitArgs,
    }

    fn args(extra: &[&str]) -> InitArgs {
        let mut argv = vec!["x", "--url", "git://127.0.0.1/fleet.git"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    fn parse(text: &str) -> Result<agent::AgentConfig, agent::AgentConfigError> {
        let defaults = agent::Defaults {
            root: "/".into(),
            hostname: "edge-01".into(),
        };
        agent::parse_files(&[("agent.yaml".into(), text.to_string())], &defaults)
    }

    #[test]
    fn flags_render_a_config_the_daemon_parses_back() {
        let a = args(&[
            "--ref",
            "stable",
            "--node-name",
            "edge-07",
            "--interval",
            "30s",
            "--allowed-signers",
            "/etc/bosun/allowed_signers",
            "--state-dir",
            "/data/bosun",
            "--slot-a",
            "/dev/vda3",
            "--slot-b",
            "/dev/vda4",
            "--grubenv",
            "/boot/efi/grub/bosun.env",
        ]);
        let text = render(&agent_file(&a)).unwrap();
        let c = parse(&text).unwrap();
        assert_eq!(c.source.reference, "stable");
        assert_eq!(c.node_name, "edge-07");
        assert_eq!(c.interval, std::time::Duration::from_secs(30));
        assert_eq!(c.verify.mode, crate::source::VerifyMode::Head);
        assert_eq!(c.state_dir, PathBuf::from("/data/bosun"));
        let u = c.upgrade.unwrap();
        assert_eq!(u.bootloader, Some(BootloaderKind::Grub));
        assert_eq!(u.slots.unwrap().b, Some(PathBuf::from("/dev/vda4")));
    }

    #[test]
    fn the_packaged_example_counts_as_no_config() {
        assert!(only_comments(include_str!("../../systemd/agent.yaml")));
        assert!(only_comments(""));
        assert!(!only_comments("# header\nsource:\n  url: git://h/f\n"));
    }

    #[test]
    fn minimal_flags_leave_defaults_to_the_daemon() {
        let text = render(&agent_file(&args(&[]))).unwrap();
        let c = parse(&text).unwrap();
        assert_eq!(c.node_name, "edge-01");
        assert_eq!(c.verify.mode, crate::source::VerifyMode::Off);
        assert!(c.upgrade.is_none());
        assert!(!text.contains("verification"), "{text}");
    }

    #[test]
    fn invalid_flag_values_are_caught_by_the_daemon_parser() {
        for (extra, field) in [
            (&["--interval", "soon"][..], "interval"),
            (&["--node-name", "a/b"][..], "node_name"),
        ] {
            let text = render(&agent_file(&args(extra))).unwrap();
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{extra:?}: {err}");
        }
        let mut bad = args(&[]);
        bad.url = "ftp://example.invalid/x".into();
        let err = parse(&render(&agent_file(&bad)).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.url"), "{err}");
    }
}
