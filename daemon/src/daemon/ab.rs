//! The A/B upgrade step of the loop: one pass of the lifecycle against the last good config
//! after every poll (see [`crate::upgrade::pass`]), with the trial reboot behind the rollout
//! gates, and the last good commit's config, derived once.

use std::sync::Arc;

use tracing::warn;

use super::gates::holding;
use super::{wait, Daemon};
use crate::config;
use crate::reconcile::SnapshotApplier;
use crate::rollout::DisruptionKind;

impl<A: SnapshotApplier> Daemon<A> {
    /// One pass of the A/B upgrade lifecycle against the last good config (see
    /// [`crate::upgrade::pass`]). May write a slot and the boot env, and reboot.
    pub(super) async fn upgrade_pass(&mut self) {
        let Some(actor) = self.upgrade.take() else {
            return;
        };
        let loaded = match self.last_good_config() {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                warn!("upgrade: the last good config does not load: {e}");
                self.upgrade = Some(actor);
                return;
            }
            None => {
                self.upgrade = Some(actor);
                return;
            }
        };
        use crate::upgrade::pass::{begin, Begun};
        let mut actor = actor;
        for _ in 0..2 {
            actor.trial_permitted = self.rollout.permits(DisruptionKind::Reboot);
            let (sd, policy) = (self.systemd, self.policy());
            let begun = holding(
                &mut self.rollout,
                &policy,
                sd.guard(begin(actor, &loaded.config)),
            );
            match begun.await {
                Begun::Done(pass) => {
                    let again = self.upgrade_gates(&pass).await;
                    self.upgrade_passed(pass);
                    match self.upgrade.take() {
                        Some(a) if again => actor = a,
                        other => return self.upgrade = other,
                    }
                }
                Begun::Judging(j) => return self.start_wait(wait::Origin::Upgrade(j)),
            }
        }
        self.upgrade = Some(actor);
    }

    /// The last good commit's config, loaded at most once per commit.
    pub(super) fn last_good_config(
        &mut self,
    ) -> Option<Result<Arc<config::Loaded>, config::ConfigError>> {
        let good = self.last_good.as_mut()?;
        if let Some(l) = &good.loaded {
            return Some(Ok(l.clone()));
        }
        let t = &self.node.target;
        Some(config::load(&good.snapshot, &t.hostname, &t.load).map(|l| {
            let l = Arc::new(l);
            good.loaded = Some(l.clone());
            l
        }))
    }
}
