//! bosun's integration tests: one binary, one module per area. Each test uses its own temp dir
//! and real local components (the bosun binary, git daemons, HTTP(S) servers on loopback, and the
//! real boot-env tools).

mod support;
#[path = "support/apply.rs"]
mod support_apply;
#[path = "support/k3os.rs"]
mod support_k3os;
#[path = "support/upgrade.rs"]
mod support_upgrade;

mod apply_crash;
mod apply_fs;
mod architecture;
mod bootenv_grub_qemu;
mod bootenv_interop;
mod bootenv_powercut;
mod bootenv_uboot_qemu;
mod cli_messages;
mod config_cli;
mod config_fixtures;
mod config_merge;
mod daemon;
mod fleet;
mod fleetlock;
mod guarded_apply;
mod health;
mod image;
mod input_checks;
mod k3os_compat;
mod k3os_items;
mod keys;
mod kube_client;
mod kubectl;
mod node_files;
mod plan_cli;
mod render_secrets;
mod render_systemd;
mod replan;
mod runner;
mod scale;
mod source;
mod upgrade_install;
mod upgrade_scenarios;
mod verify_memo;
mod vm_ab;
