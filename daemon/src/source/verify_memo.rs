//! Remembering that a commit verified, so an idle poll (same commit, same trust roots) does not
//! parse keys and check the signature again. On a node that keeps verification on, that code
//! would otherwise run at every poll and stay resident (about 0.4 MiB of code for SSH, 0.7 MiB
//! for OpenPGP, `bench/daemon`).
//!
//! Invariant: a remembered verdict is only used when re-verifying would give the same answer:
//! the same commit, the same trust-root inputs (the agent config's verification settings and,
//! for an `allowed_signers` file, its bytes, read at every poll), and a time `now` in
//! `[checked_at, recheck_at)`, where `recheck_at` is the next `valid-after`/`valid-before`
//! boundary of any allowed signer. Between boundaries no key changes validity, and a commit
//! whose date was acceptable stays acceptable as the clock moves on. Refusals are never
//! remembered (a commit dated ahead is accepted once the clock catches up).

use super::verify::{verify_commit_at, SignersSource, Verdict, VerifyConfig, VerifyMode};
use super::{AllowedSigners, Cache, Oid, SourceError};

/// The last accepted verification of one daemon.
#[derive(Debug, Default)]
pub struct VerifyMemo {
    last: Option<Accepted>,
}

#[derive(Debug)]
struct Accepted {
    commit: Oid,
    cfg: VerifyConfig,
    /// The allowed signers file's bytes, when configured by path.
    signers_file: Option<Vec<u8>>,
    verdict: Verdict,
    checked_at: i64,
    recheck_at: Option<i64>,
}

impl VerifyMemo {
    /// [`verify_commit_at`], answered from memory when that gives the same result (see the
    /// module docs). Reads the allowed signers file; on a miss also the cache.
    pub fn verify(
        &mut self,
        cache: &Cache,
        commit: Oid,
        cfg: &VerifyConfig,
        now: i64,
    ) -> Result<Verdict, SourceError> {
        if cfg.mode == VerifyMode::Off {
            return verify_commit_at(cache, commit, cfg, now);
        }
        let signers_file = match &cfg.allowed_signers {
            Some(SignersSource::Path(p)) => match std::fs::read(p) {
                Ok(bytes) => Some(bytes),
                // Fails closed: verification reports the unreadable file.
                Err(_) => return verify_commit_at(cache, commit, cfg, now),
            },
            _ => None,
        };
        if let Some(a) = &self.last {
            let same = a.commit == commit && a.cfg == *cfg && a.signers_file == signers_file;
            if same && now >= a.checked_at && a.recheck_at.is_none_or(|t| now < t) {
                return Ok(a.verdict.clone());
            }
        }
        self.last = None;
        let verdict = verify_commit_at(cache, commit, cfg, now)?;
        let text = match (&cfg.allowed_signers, &signers_file) {
            (Some(SignersSource::Contents(t)), _) => Some(t.clone()),
            (_, Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        };
        let Some(recheck_at) = text
            .map(|t| AllowedSigners::parse(&t, "allowed_signers").map(|s| next_change(&s, now)))
            .transpose()
            .ok()
        else {
            return Ok(verdict); // the file changed under us: remember nothing
        };
        self.last = Some(Accepted {
            commit,
            cfg: cfg.clone(),
            signers_file,
            verdict: verdict.clone(),
            checked_at: now,
            recheck_at: recheck_at.flatten(),
        });
        Ok(verdict)
    }
}

/// The first time after `now` at which some allowed signer becomes valid (`valid-after`) or
/// stops being valid (one second past `valid-before`). Pure.
fn next_change(signers: &AllowedSigners, now: i64) -> Option<i64> {
    signers
        .entries()
        .iter()
        .flat_map(|e| [e.valid_after, e.valid_before.map(|t| t.saturating_add(1))])
        .flatten()
        .filter(|&t| t > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGYq2ZJ5rLQSBMG3rSBjDFB4gYw9sBa0dJyv8KSj6hnO";

    #[test]
    fn the_next_change_is_the_nearest_validity_boundary_ahead() {
        let text = format!(
            "a@x valid-after=\"20250101\" {KEY}\nb@x valid-before=\"20300101\" {KEY}\nc@x {KEY}\n"
        );
        let s = AllowedSigners::parse(&text, "t").unwrap();
        let after = s.entries()[0].valid_after.unwrap();
        let before = s.entries()[1].valid_before.unwrap();
        assert_eq!(next_change(&s, after - 10), Some(after));
        assert_eq!(next_change(&s, after), Some(before + 1));
        assert_eq!(next_change(&s, before), Some(before + 1));
        assert_eq!(next_change(&s, before + 1), None);
        let plain = AllowedSigners::parse(&format!("c@x {KEY}\n"), "t").unwrap();
        assert_eq!(next_change(&plain, 0), None);
    }
}
