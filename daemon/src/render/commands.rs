//! `init_cmd`, `boot_cmd`, `run_cmd`: shell command lines (run with `sh -c`, as k3os ran them)
//! that fire once per boot. No files.
//!
//! Invariant: one [`EffectRule`] per non-empty list, in phase order init → boot → run, each
//! with [`Trigger::OncePerBoot`]; the runner decides when a phase is due (init/boot before the
//! first apply of a boot, run after the first successful one).

use super::Builder;
use crate::config::NodeConfig;
use crate::desired::{CommandPhase, Effect, EffectRule, Trigger};

pub(crate) fn render_commands(cfg: &NodeConfig, b: &mut Builder) {
    for (phase, commands) in [
        (CommandPhase::Init, &cfg.init_cmd),
        (CommandPhase::Boot, &cfg.boot_cmd),
        (CommandPhase::Run, &cfg.run_cmd),
    ] {
        if commands.is_empty() {
            continue;
        }
        b.effects.push(EffectRule {
            effect: Effect::RunCommands {
                phase,
                commands: commands.clone(),
            },
            trigger: Trigger::OncePerBoot,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn each_phase_once_per_boot_in_order_without_files() {
        let cfg = NodeConfig {
            run_cmd: vec!["echo run".into(), "touch /tmp/x".into()],
            boot_cmd: vec!["echo boot".into()],
            init_cmd: vec!["echo init".into()],
            ..Default::default()
        };
        let plain = render(&NodeConfig::default(), &env()).unwrap();
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(r.state.files, plain.state.files);
        let rules: Vec<&EffectRule> = r
            .state
            .effects
            .iter()
            .filter(|e| e.trigger == Trigger::OncePerBoot)
            .collect();
        let expect = [
            (CommandPhase::Init, vec!["echo init"]),
            (CommandPhase::Boot, vec!["echo boot"]),
            (CommandPhase::Run, vec!["echo run", "touch /tmp/x"]),
        ];
        assert_eq!(rules.len(), 3);
        for (rule, (phase, cmds)) in rules.iter().zip(expect) {
            assert_eq!(
                rule.effect,
                Effect::RunCommands {
                    phase,
                    commands: cmds.into_iter().map(String::from).collect()
                }
            );
        }
    }

    #[test]
    fn empty_phases_render_no_rule() {
        let cfg = NodeConfig {
            boot_cmd: vec!["echo boot".into()],
            ..Default::default()
        };
        let r = render(&cfg, &env()).unwrap();
        let n = r
            .state
            .effects
            .iter()
            .filter(|e| e.trigger == Trigger::OncePerBoot)
            .count();
        assert_eq!(n, 1);
    }
}
