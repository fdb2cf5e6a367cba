//! `bosun upgrade install-image | status | rollback | mark-good` (and the hidden one-shot
//! `step`): argument parsing for the image, the node's slots and boot environment, and the
//! printing of results.
//!
//! With a `--root` other than `/`, the reboot command is recorded and reported, never run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use super::actor::{SlotPaths, StepReport, UpgradeActor};
use super::machine::HealthInput;
use crate::node::{BootEnvSpec, Node, UpgradeWiring};
use crate::reconcile::Target;

/// The `bosun upgrade` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Download (or read), verify and write an OS image into a slot. Never touches the boot
    /// environment: it does not make the slot bootable. Resumes an interrupted download.
    InstallImage(InstallImageArgs),
    /// Show the upgrade state, the booted slot, the boot environment and the counters.
    Status {
        /// The node's root, state dir, slots and boot environment.
        #[command(flatten)]
        node: NodeArgs,
        /// Print the whole status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Boot the other slot (if the boot environment marks it good) and quarantine the image
    /// running now. Reboots.
    Rollback {
        /// The node's root, state dir, slots and boot environment.
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Commit the booted slot as good (for images whose health is checked elsewhere).
    MarkGood {
        /// The node's root, state dir, slots and boot environment.
        #[command(flatten)]
        node: NodeArgs,
    },
    /// One pass of the upgrade lifecycle against the `upgrade:` block of a config file
    /// (for tests and manual runs; the daemon does this on every loop).
    #[command(hide = true)]
    Step {
        /// The node's root, state dir, slots and boot environment.
        #[command(flatten)]
        node: NodeArgs,
        /// A standalone config.yaml whose `upgrade:` block names the desired image.
        #[arg(long)]
        config: PathBuf,
        /// The health verdict for this boot.
        #[arg(long, value_enum, default_value = "pending")]
        health: HealthArg,
        /// Reason recorded with `--health unhealthy`.
        #[arg(long, default_value = "health checks failed")]
        reason: String,
    },
}

/// The health verdict `bosun upgrade step --health` passes to the state machine: `pending` (no
/// verdict yet: a trial keeps waiting), `healthy` (commit the trial boot) or `unhealthy` (roll
/// it back, with `--reason`).
// The variants have no `///`: clap would turn it into per-value help and change the layout of
// `--help` (see [`crate::cli::Format`]).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum HealthArg {
    Pending,
    Healthy,
    Unhealthy,
}

/// The node's slots and boot environment.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Root of the node; the reboot command only runs when it is /.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// bosun's state dir. Default: `<root>/var/lib/bosun`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Kernel command line carrying bosun.slot=. Default: `<root>/proc/cmdline`.
    #[arg(long)]
    pub cmdline: Option<PathBuf>,
    /// Slot a device (or file).
    #[arg(long, requires = "slot_b")]
    pub slot_a: Option<PathBuf>,
    /// Slot b device (or file).
    #[arg(long, requires = "slot_a")]
    pub slot_b: Option<PathBuf>,
    /// GRUB environment block file (boot/grub.cfg's bosun.env).
    #[arg(long, group = "bootenv")]
    pub grub_env: Option<PathBuf>,
    /// fw_env.config describing the U-Boot environment.
    #[arg(long, group = "bootenv")]
    pub uboot_config: Option<PathBuf>,
    /// GPT disk whose slot partitions carry gptprio attributes.
    #[arg(long, group = "bootenv", requires = "gpt_parts")]
    pub gpt_disk: Option<PathBuf>,
    /// Partition numbers of slots a and b on --gpt-disk, e.g. `2,3`.
    #[arg(long, value_delimiter = ',')]
    pub gpt_parts: Vec<u32>,
    /// Reboot command (words split on whitespace).
    #[arg(long, default_value = "systemctl reboot")]
    pub reboot_command: String,
}

impl NodeArgs {
    fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The boot env the flags name, if any (pure).
    fn boot_env(&self) -> Result<Option<BootEnvSpec>> {
        if let Some(p) = &self.grub_env {
            return Ok(Some(BootEnvSpec::Grub(p.clone())));
        }
        if let Some(p) = &self.uboot_config {
            return Ok(Some(BootEnvSpec::Uboot(p.clone())));
        }
        if let Some(d) = &self.gpt_disk {
            let [a, b] = self.gpt_parts[..] else {
                bail!("--gpt-parts: expected two partition numbers, e.g. 2,3");
            };
            return Ok(Some(BootEnvSpec::Gpt {
                disk: d.clone(),
                a,
                b,
            }));
        }
        Ok(None)
    }

    /// Builds the actor through [`Node`] (reads the U-Boot config if one is named).
    pub fn actor(&self) -> Result<UpgradeActor> {
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| self.root.join("var/lib/bosun"));
        let slots = match (&self.slot_a, &self.slot_b) {
            (Some(a), Some(b)) => Some(SlotPaths {
                a: a.clone(),
                b: b.clone(),
            }),
            _ => None,
        };
        let wiring = UpgradeWiring {
            slots,
            boot_env: self.boot_env()?,
            cmdline: self
                .cmdline
                .clone()
                .unwrap_or_else(|| self.root.join("proc/cmdline")),
            reboot_argv: self
                .reboot_command
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        };
        let node = Node::new(Target::basic("", &self.root, &state_dir));
        let actor = node.upgrade_actor(&wiring)?;
        if actor.reboot_argv.is_empty() {
            bail!("--reboot-command: expected a command, got an empty string");
        }
        Ok(actor)
    }
}

/// Arguments of `bosun upgrade install-image`.
#[derive(Debug, Args)]
pub struct InstallImageArgs {
    /// https:// URL, http:// URL on a loopback host, or an absolute path.
    #[arg(long)]
    pub image: String,
    /// SHA-256 (hex) of the image as downloaded.
    #[arg(long)]
    pub sha256: String,
    /// Slot to write: a block device or an existing regular file.
    #[arg(long)]
    pub slot: PathBuf,
    /// Default: from the image name's suffix (.zst, .gz), else none.
    #[arg(long, value_parser = ["zstd", "gzip", "none"])]
    pub compression: Option<String>,
    /// Size in bytes of the image as downloaded, enforced when given.
    #[arg(long)]
    pub size: Option<u64>,
    /// Directory for the progress record and spool (install-progress.json[.spool]).
    #[arg(long, default_value = "/var/lib/bosun")]
    pub state_dir: PathBuf,
    /// Read the slot back after writing and compare hashes.
    #[arg(long)]
    pub verify_written: bool,
}

/// `bosun upgrade install-image`: downloads (or reads), verifies and writes the image into
/// the slot ([`super::install::install`]), then prints what it did. Network I/O; writes the
/// slot, the progress record and the spool under `--state-dir`; never touches the boot
/// environment.
pub fn install_image(args: &InstallImageArgs) -> Result<ExitCode> {
    use crate::config::Compression;
    use crate::upgrade::install;
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(args.sha256.trim(), &mut sha256)
        .with_context(|| format!("--sha256 {:?}: expected 64 hex digits", args.sha256))?;
    let configured = args.compression.as_deref().map(|c| match c {
        "zstd" => Compression::Zstd,
        "gzip" => Compression::Gzip,
        _ => Compression::None,
    });
    let req = install::InstallRequest {
        source: args.image.clone(),
        sha256,
        size: args.size,
        compression: install::resolve_compression(configured, &args.image),
        slot: args.slot.clone(),
        progress_file: args.state_dir.join("install-progress.json"),
        verify_written: args.verify_written,
    };
    let opts = install::InstallOptions::default();
    let http = install::http_client(&opts)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(install::install(&req, &http, &opts))?;
    println!(
        "installed {} into {}: {} bytes written{}, {} bytes fetched, mode {:?}{}",
        args.image,
        args.slot.display(),
        report.written,
        report
            .written_sha256
            .map(|d| format!(" (sha256 {})", hex::encode(d)))
            .unwrap_or_default(),
        report.fetched,
        report.mode,
        if report.resumed_from > 0 {
            format!(", resumed from byte {}", report.resumed_from)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &StepReport, live: bool) {
    for n in &r.notes {
        eprintln!("{n}");
    }
    for p in &r.performed {
        if !live && p.starts_with("reboot requested") {
            println!("{p} (recorded, not run: --root is not /)");
        } else {
            println!("{p}");
        }
    }
    println!("state: {}", r.state.lifecycle.name());
}

/// Runs an `upgrade` subcommand. Prints to stdout/stderr; returns the exit code.
pub fn run(cmd: UpgradeCommand) -> Result<ExitCode> {
    match cmd {
        UpgradeCommand::InstallImage(args) => install_image(&args),
        UpgradeCommand::Status { node, json } => {
            let actor = node.actor()?;
            let st = actor.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!(
                    "booted slot: {}",
                    st.booted.map(|s| s.to_string()).unwrap_or("unknown".into())
                );
                println!(
                    "boot env: {}",
                    st.boot_env.as_deref().unwrap_or("not configured")
                );
                println!("state: {}", serde_json::to_string(&st.state.lifecycle)?);
                if let Some(v) = &st.metrics.current_version {
                    println!("running version: {v}");
                }
                for q in &st.state.quarantine {
                    println!("quarantined: {q}");
                }
                let c = &st.state.counters;
                println!(
                    "upgrades: committed={} rolled_back={} fallback={} refused={} failed={}",
                    c.committed, c.rolled_back, c.fallback, c.refused, c.failed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        UpgradeCommand::Rollback { node } => {
            let mut actor = node.actor()?;
            let r = actor.rollback()?;
            print_report(&r, node.live());
            Ok(ExitCode::SUCCESS)
        }
        UpgradeCommand::MarkGood { node } => {
            let mut actor = node.actor()?;
            let r = actor.mark_good()?;
            print_report(&r, node.live());
            Ok(ExitCode::SUCCESS)
        }
        UpgradeCommand::Step {
            node,
            config,
            health,
            reason,
        } => {
            let bytes =
                std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?;
            let loaded = match crate::config::load_file(
                &config.display().to_string(),
                &bytes,
                &Default::default(),
            ) {
                Ok(l) => l,
                Err(e) => {
                    for d in &e.diagnostics {
                        eprintln!("{d}");
                    }
                    return Ok(ExitCode::from(1));
                }
            };
            let health = match health {
                HealthArg::Pending => HealthInput::Pending,
                HealthArg::Healthy => HealthInput::Healthy,
                HealthArg::Unhealthy => HealthInput::Unhealthy(reason),
            };
            let mut actor = node.actor()?;
            let r = actor.step(loaded.config.upgrade.as_ref(), health)?;
            print_report(&r, node.live());
            Ok(if r.install_error.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
