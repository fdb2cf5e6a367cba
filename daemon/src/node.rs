//! The node's capabilities, built in one place: where its files are (root, state dir), who it
//! is (hostname), and the seams every side effect goes through (the command runners, the clock,
//! the boot environment and the upgrade actor).
//!
//! `bosun daemon` builds a [`Node`] from the agent config ([`Node::from_agent`]); `bosun
//! apply`, `plan`, `health` and `upgrade` build one from their flags ([`Node::new`] plus
//! [`UpgradeWiring`]). Nothing else decides "root is `/` ⇒ real commands": a node whose root is
//! another directory gets a [`DryRunner`] for every runner, so effects on the live system are
//! recorded and reported, never run.
//!
//! Every timeout of an external command is one of the constants below, with its reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{AgentConfig, BootloaderKind, UpgradeSection};
use crate::bootenv::{gpt::GptPrio, grub::GrubEnv, uboot::UbootEnv, BootEnv, BootEnvError};
use crate::clock::{Clock, SystemClock};
use crate::config::LoadOptions;
use crate::health::HealthContext;
use crate::keys::KeyFetcherConfig;
use crate::reconcile::Target;
use crate::render::RenderSettings;
use crate::runner::{CommandRunner, DryRunner, SystemRunner};
use crate::upgrade::actor::{SlotPaths, UpgradeActor};
use crate::upgrade::install::StreamingInstaller;

/// Timeout of an effect command (`systemctl restart k3s`, `sysctl --load`, `modprobe`, run
/// commands). A k3s restart stops every pod's containers before it returns, which takes
/// minutes on a loaded 1 GB node; killing it halfway would leave k3s down.
pub const EFFECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Timeout of a health-check command or unit query (`systemctl is-active`). The gate retries
/// every interval until `health.timeout`, so one hung check must not eat the whole budget.
pub const HEALTH_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeout of the reboot command. `systemctl reboot` only queues a job and returns at once; a
/// command that hangs longer means systemd is wedged, and the upgrade reports it rather than
/// blocking the loop.
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The default reboot command.
pub const DEFAULT_REBOOT_COMMAND: [&str; 2] = ["systemctl", "reboot"];

/// Who the node is, where its files are, and the runners its side effects go through.
#[derive(Clone)]
pub struct Node {
    /// Where, how and for whom configs are reconciled (root, state dir, hostname, options).
    pub target: Target,
    /// Runs effects ([`EFFECT_TIMEOUT`]); a [`DryRunner`] off the live root.
    pub effects: Arc<dyn CommandRunner>,
    /// Runs health-check commands and unit queries ([`HEALTH_COMMAND_TIMEOUT`]).
    pub health: Arc<dyn CommandRunner>,
    /// Runs the reboot command of A/B upgrades ([`REBOOT_TIMEOUT`]).
    pub reboot: Arc<dyn CommandRunner>,
    /// Time source of the health gate.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("target", &self.target)
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

/// A runner with `timeout` on the live root, else a [`DryRunner`].
fn runner(live: bool, timeout: Duration) -> Arc<dyn CommandRunner> {
    if live {
        Arc::new(SystemRunner::new(timeout))
    } else {
        Arc::new(DryRunner::new())
    }
}

impl Node {
    /// A node reconciling `target`: real runners when its root is `/`, else dry ones.
    pub fn new(target: Target) -> Node {
        let live = target.live();
        Node {
            effects: runner(live, EFFECT_TIMEOUT),
            health: runner(live, HEALTH_COMMAND_TIMEOUT),
            reboot: runner(live, REBOOT_TIMEOUT),
            clock: Arc::new(SystemClock),
            target,
        }
    }

    /// The node an agent config describes (pure apart from the runners it creates).
    pub fn from_agent(cfg: &AgentConfig) -> Node {
        Node::new(agent_target(cfg))
    }

    /// Effects run for real only when the root is `/`.
    pub fn live(&self) -> bool {
        self.target.live()
    }

    /// The node's root directory.
    pub fn root(&self) -> &Path {
        &self.target.root
    }

    /// bosun's state dir on this node.
    pub fn state_dir(&self) -> &Path {
        &self.target.state_dir
    }

    /// What the health checks need: the root, the node name, the health runner, the clock.
    pub fn health_context(&self) -> HealthContext {
        HealthContext::new(
            &self.target.root,
            &self.target.hostname,
            self.health.clone(),
        )
        .with_clock(self.clock.clone())
    }

    /// The A/B upgrade actor for `wiring`: the state file in the state dir, the boot env
    /// opened (reads the U-Boot config file), the streaming installer, the reboot runner.
    pub fn upgrade_actor(&self, wiring: &UpgradeWiring) -> Result<UpgradeActor, BootEnvError> {
        let bootenv = match &wiring.boot_env {
            Some(spec) => Some(spec.open()?),
            None => None,
        };
        let state_dir = self.state_dir();
        let mut actor = UpgradeActor::new(
            state_dir,
            wiring.cmdline.clone(),
            wiring.slots.clone(),
            bootenv,
            Box::new(StreamingInstaller::new(state_dir)),
            self.reboot.clone(),
        );
        actor.reboot_argv = wiring.reboot_argv.clone();
        actor.os_release = Some(self.target.root.join("etc/os-release"));
        Ok(actor)
    }
}

/// The reconcile target an agent config describes (pure).
pub fn agent_target(cfg: &AgentConfig) -> Target {
    let mut keys = KeyFetcherConfig::new(&cfg.state_dir);
    keys.github_base = cfg.github_base.clone();
    keys.gitlab_base = cfg.gitlab_base.clone();
    Target {
        hostname: cfg.node_name.clone(),
        root: cfg.root.clone(),
        state_dir: cfg.state_dir.clone(),
        load: LoadOptions::for_node(&cfg.root, &cfg.state_dir),
        render: RenderSettings::for_user(&cfg.ssh_user),
        keys,
        durability: Default::default(),
    }
}

/// Which boot environment holds the A/B contract, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEnvSpec {
    /// A GRUB environment block file (`boot/grub.cfg`'s `bosun.env`).
    Grub(PathBuf),
    /// A U-Boot environment described by this `fw_env.config`.
    Uboot(PathBuf),
    /// gptprio attributes of partitions `a` and `b` on `disk`.
    Gpt {
        /// The disk device (or image) with the GPT.
        disk: PathBuf,
        /// Partition number of slot a (1-based).
        a: u32,
        /// Partition number of slot b (1-based).
        b: u32,
    },
}

impl BootEnvSpec {
    /// Opens the backend (the U-Boot one reads its config file).
    pub fn open(&self) -> Result<Box<dyn BootEnv + Send>, BootEnvError> {
        Ok(match self {
            BootEnvSpec::Grub(p) => Box::new(GrubEnv::new(p)),
            BootEnvSpec::Uboot(p) => Box::new(UbootEnv::from_config_file(p)?),
            BootEnvSpec::Gpt { disk, a, b } => Box::new(GptPrio::new(disk, *a, *b)),
        })
    }

    /// The backend an agent config's `upgrade:` section names, when it names one completely
    /// (pure). The agent config's validation reports incomplete sections.
    pub fn from_agent(u: &UpgradeSection) -> Option<BootEnvSpec> {
        match u.bootloader? {
            BootloaderKind::Grub => u.grubenv.clone().map(BootEnvSpec::Grub),
            BootloaderKind::Uboot => u.uboot_env_config.clone().map(BootEnvSpec::Uboot),
            BootloaderKind::Gpt => match (&u.gpt_disk, u.gpt_partitions.as_deref()) {
                (Some(d), Some([a, b])) => Some(BootEnvSpec::Gpt {
                    disk: d.clone(),
                    a: *a,
                    b: *b,
                }),
                _ => None,
            },
        }
    }
}

/// Where the A/B parts of a node are: slots, boot env, kernel command line, reboot command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeWiring {
    /// `None`: no slots (an overlay install); upgrades are reported unsupported.
    pub slots: Option<SlotPaths>,
    /// `None`: no boot env configured; upgrades are reported unsupported.
    pub boot_env: Option<BootEnvSpec>,
    /// The file carrying `bosun.slot=` (`<root>/proc/cmdline` by default).
    pub cmdline: PathBuf,
    /// The reboot command, argv style.
    pub reboot_argv: Vec<String>,
}

impl UpgradeWiring {
    /// The wiring an agent config's `upgrade:` section describes, or `None` without one
    /// (pure). Slot devices and boot-env files are host paths; the command line defaults to
    /// `<root>/proc/cmdline`.
    pub fn from_agent(cfg: &AgentConfig) -> Option<UpgradeWiring> {
        let u = cfg.upgrade.as_ref()?;
        let slots = u.slots.as_ref().and_then(|s| match (&s.a, &s.b) {
            (Some(a), Some(b)) => Some(SlotPaths {
                a: a.clone(),
                b: b.clone(),
            }),
            _ => None,
        });
        Some(UpgradeWiring {
            slots,
            boot_env: BootEnvSpec::from_agent(u),
            cmdline: u
                .cmdline
                .clone()
                .unwrap_or_else(|| cfg.root.join("proc/cmdline")),
            reboot_argv: u.reboot_command.clone().unwrap_or_else(default_reboot_argv),
        })
    }
}

/// [`DEFAULT_REBOOT_COMMAND`] as argv.
pub fn default_reboot_argv() -> Vec<String> {
    DEFAULT_REBOOT_COMMAND.map(String::from).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(root: &str) -> Target {
        Target {
            hostname: "n".into(),
            root: root.into(),
            state_dir: "/nonexistent/state".into(),
            load: LoadOptions::default(),
            render: RenderSettings::for_user("rancher"),
            keys: KeyFetcherConfig::new(Path::new("/nonexistent/state")),
            durability: Default::default(),
        }
    }

    #[test]
    fn only_the_live_root_gets_real_runners() {
        // A dry runner records instead of spawning: asking it to run a program that does not
        // exist succeeds, where a real runner fails to spawn it.
        let argv = vec!["/nonexistent/bosun-test-program".to_string()];
        let dry = Node::new(target("/tmp/not-the-root"));
        assert!(!dry.live());
        for r in [&dry.effects, &dry.health, &dry.reboot] {
            assert!(r.run(&argv).unwrap().success());
        }
        let live = Node::new(target("/"));
        assert!(live.live());
        for r in [&live.effects, &live.health, &live.reboot] {
            assert!(r.run(&argv).is_err());
        }
    }

    #[test]
    fn boot_env_spec_needs_a_complete_agent_section() {
        let mut u = UpgradeSection::default();
        assert_eq!(BootEnvSpec::from_agent(&u), None);
        u.bootloader = Some(BootloaderKind::Gpt);
        u.gpt_disk = Some("/dev/sda".into());
        u.gpt_partitions = Some(vec![2]);
        assert_eq!(BootEnvSpec::from_agent(&u), None);
        u.gpt_partitions = Some(vec![2, 3]);
        assert_eq!(
            BootEnvSpec::from_agent(&u),
            Some(BootEnvSpec::Gpt {
                disk: "/dev/sda".into(),
                a: 2,
                b: 3
            })
        );
        u.bootloader = Some(BootloaderKind::Grub);
        assert_eq!(BootEnvSpec::from_agent(&u), None);
        u.grubenv = Some("/boot/bosun.env".into());
        assert_eq!(
            BootEnvSpec::from_agent(&u),
            Some(BootEnvSpec::Grub("/boot/bosun.env".into()))
        );
    }
}
