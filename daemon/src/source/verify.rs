//! Trust decisions about a fetched commit: is it signed by a trusted key, and does it descend
//! from the last applied commit (anti-rollback)?
//!
//! Invariants:
//! - `VerifyMode::Head` checks the signature of the commit that will be applied (the ref's
//!   head), not every commit in between; a trusted signer vouches for the whole tree it signs.
//! - Trust roots come only from the agent config ([`VerifyConfig`]), never from the repo.
//! - Refusals are typed ([`Refusal`]) so the daemon can report and keep the last applied state.
//! - Time is the verifier's: SSH keys' `valid-after`/`valid-before` are checked against the
//!   node's clock, not the commit's date (which the signer writes; git itself compares with the
//!   commit's date, see `allowed_signers`), so an expired key cannot sign backdated commits. A
//!   signed commit dated more than [`MAX_COMMIT_AHEAD_SECS`] ahead of the node's clock is
//!   refused. [`verify_commit_at`] takes the time as a parameter; [`verify_commit`] reads the
//!   system clock.
//! - Ancestry in a shallow cache is never guessed: [`check_descends`] answers
//!   [`SourceError::ShallowAncestry`] when the history needed is cut off, and
//!   [`check_descends_or_deepen`] then unshallows the ref and asks again.

use std::path::PathBuf;

use super::allowed_signers::AllowedSigners;
use super::budget::TooLarge;
use super::openpgp::OpenPgpKeyring;
use super::{fetch, Cache, Oid, SourceConfig, SourceError, TransferCounters};

/// Whether commits must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Apply unsigned commits (anti-rollback still applies).
    #[default]
    Off,
    /// The head commit must carry a valid signature by a trusted key.
    Head,
}

/// Where the allowed signers (git's `gpg.ssh.allowedSignersFile` format) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignersSource {
    /// A file on the node, read at each verification.
    Path(PathBuf),
    /// The file's contents, inline in the agent config.
    Contents(String),
}

/// Verification settings from the local agent config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyConfig {
    /// Whether the head commit must be signed.
    pub mode: VerifyMode,
    /// SSH keys trusted to sign commits (git's allowed signers format); `None`: no SSH key is
    /// trusted.
    pub allowed_signers: Option<SignersSource>,
    /// Armored OpenPGP public keys.
    pub openpgp_keys: Vec<String>,
    /// Accept commits that do not descend from the last applied one (force-pushes, rollbacks).
    pub allow_history_rewrite: bool,
}

/// Why a commit is not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Verification is on and the commit carries no signature.
    #[error("the commit is not signed, and verification is on")]
    Unsigned,
    /// The signing key is not trusted: not listed, not valid at the commit's time, or restricted to
    /// other namespaces.
    #[error("signed by {key}, which is not a trusted key (allowed_signers / openpgp_keys)")]
    UnknownKey {
        /// The key, as `SSH key SHA256:…` or `OpenPGP key <fingerprint>`, with the restriction when
        /// there is one.
        key: String,
    },
    /// The signature does not parse or does not match the commit's content.
    #[error("bad signature: {detail}")]
    BadSignature {
        /// What failed, naming the key.
        detail: String,
    },
    /// The SSH signature was made for another namespace than `git` (e.g. `file`).
    #[error("SSH signature is for namespace {namespace:?}, git commits use \"git\"")]
    WrongNamespace {
        /// The namespace the signature carries.
        namespace: String,
    },
    /// The commit does not descend from the last applied one and `allow_history_rewrite` is off (a
    /// force-push or a replayed old commit).
    #[error(
        "it does not descend from the last applied commit {last_applied} (history was rewritten \
         or rolled back; set allow_history_rewrite to accept this)"
    )]
    NotDescendant {
        /// The commit applied last.
        last_applied: Oid,
    },
    /// Not even fetched in full: it is over `source.max_fetch_bytes` or the per-object limit
    /// (see `source::budget`).
    #[error("{0}")]
    FetchTooLarge(TooLarge),
}

impl Refusal {
    /// The `reason` label of `bosun_source_refused_total` (stable).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownKey { .. } => "unknown_key",
            Refusal::BadSignature { .. } => "bad_signature",
            Refusal::WrongNamespace { .. } => "wrong_namespace",
            Refusal::NotDescendant { .. } => "not_descendant",
            Refusal::FetchTooLarge(_) => "fetch_too_large",
        }
    }
}

/// Outcome of a signature check that did not refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Verification is off; nothing was checked.
    NotChecked,
    /// Signed by a trusted key: the SSH principals, or the OpenPGP primary key fingerprint.
    Verified {
        /// Who signed: the SSH key's principals field, or the OpenPGP primary key fingerprint.
        signer: String,
    },
}

/// How a new commit relates to the last applied one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestry {
    /// Nothing was applied before.
    FirstApply,
    /// The same commit.
    Same,
    /// Strictly newer history.
    Descendant,
    /// Not a descendant, accepted because `allow_history_rewrite` is set.
    Rewritten,
}

/// Trust roots loaded from a [`VerifyConfig`].
struct TrustRoots {
    ssh: AllowedSigners,
    openpgp: OpenPgpKeyring,
}

impl TrustRoots {
    /// Reads the allowed signers file when configured by path.
    fn load(cfg: &VerifyConfig) -> Result<Self, SourceError> {
        let ssh = match &cfg.allowed_signers {
            None => AllowedSigners::default(),
            Some(SignersSource::Contents(text)) => AllowedSigners::parse(text, "allowed_signers")?,
            Some(SignersSource::Path(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SourceError::ReadFile {
                        what: "allowed signers file",
                        path: path.clone(),
                        source,
                    })?;
                AllowedSigners::parse(&text, &path.display().to_string())?
            }
        };
        let openpgp = OpenPgpKeyring::parse(&cfg.openpgp_keys)?;
        if ssh.is_empty() && openpgp.is_empty() {
            return Err(SourceError::InvalidConfig(
                "signature verification is on but no trusted key is configured \
                 (allowed_signers and openpgp_keys are both empty)"
                    .to_string(),
            ));
        }
        Ok(TrustRoots { ssh, openpgp })
    }
}

/// How far ahead of the node's clock a signed commit's committer date may be. A commit's date
/// comes from the signer's machine, so some skew is honest: a day covers clocks set to local
/// time instead of UTC (up to 14 h off) and a node whose clock is still catching up after boot.
/// Beyond it, a date can only be a mistake or a signer placing a commit where tools that judge
/// keys by the commit's date (git) and the rollout wave clock (which starts at the commit's
/// date) would misread it. Refusal is not final: the same commit is accepted once the node's
/// clock reaches its date minus this tolerance.
pub const MAX_COMMIT_AHEAD_SECS: i64 = 24 * 3600;

const SSH_ARMOR: &str = "-----BEGIN SSH SIGNATURE-----";
const PGP_ARMOR: &str = "-----BEGIN PGP SIGNATURE-----";

/// [`verify_commit_at`] the system clock's current time. Reads the clock, the cache (and the
/// allowed signers file when configured by path).
pub fn verify_commit(
    cache: &Cache,
    commit: Oid,
    cfg: &VerifyConfig,
) -> Result<Verdict, SourceError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    verify_commit_at(cache, commit, cfg, now)
}

/// Checks `commit`'s signature as `cfg` asks, at time `now` (unix seconds): keys must be valid
/// at `now`, and the commit may not be dated more than [`MAX_COMMIT_AHEAD_SECS`] after it.
/// Reads the cache (and the allowed signers file when configured by path). A refusal is
/// `Err(SourceError::Refused { .. })`.
pub fn verify_commit_at(
    cache: &Cache,
    commit: Oid,
    cfg: &VerifyConfig,
    now: i64,
) -> Result<Verdict, SourceError> {
    if cfg.mode == VerifyMode::Off {
        return Ok(Verdict::NotChecked);
    }
    let roots = TrustRoots::load(cfg)?;
    let refused = |reason| SourceError::Refused { commit, reason };
    let c = cache
        .repo
        .find_commit(commit)
        .map_err(|e| cache.err("read commit", e))?;
    let commit_time = c.committer().when().seconds();
    let (signature, signed_data) = match cache.repo.extract_signature(&commit, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(refused(Refusal::Unsigned)),
        Err(e) => return Err(cache.err("extract signature", e)),
    };
    let Ok(armored) = std::str::from_utf8(&signature) else {
        return Err(refused(Refusal::BadSignature {
            detail: "signature is not text".to_string(),
        }));
    };
    let armored = armored.trim();
    let result = if armored.starts_with(SSH_ARMOR) {
        roots.ssh.verify(armored, &signed_data, now)
    } else if armored.starts_with(PGP_ARMOR) {
        roots.openpgp.verify(armored, &signed_data)
    } else {
        let first = armored.lines().next().unwrap_or("");
        Err(Refusal::BadSignature {
            detail: format!("unsupported signature format {first:?} (expected SSH or OpenPGP)"),
        })
    };
    match result.and_then(|signer| check_commit_date(commit_time, now).map(|()| signer)) {
        Ok(signer) => Ok(Verdict::Verified { signer }),
        Err(reason) => Err(refused(reason)),
    }
}

/// Refuses a commit dated more than [`MAX_COMMIT_AHEAD_SECS`] after `now`. Pure.
///
/// The refusal is a [`Refusal::BadSignature`]: the signed date is not believable. (A variant of
/// its own would need a new `reason` label in the daemon's metrics.)
fn check_commit_date(commit_time: i64, now: i64) -> Result<(), Refusal> {
    let ahead = commit_time.saturating_sub(now);
    if ahead <= MAX_COMMIT_AHEAD_SECS {
        return Ok(());
    }
    Err(Refusal::BadSignature {
        detail: format!(
            "the commit is dated {}, {} h ahead of this node's clock ({}); more than {} h ahead \
             is refused (if the node's clock is wrong, fix its time sync)",
            super::allowed_signers::format_utc(commit_time),
            ahead / 3600,
            super::allowed_signers::format_utc(now),
            MAX_COMMIT_AHEAD_SECS / 3600
        ),
    })
}

/// Anti-rollback: `new` must equal or descend from `last_applied`, unless
/// `allow_history_rewrite`. Reads the cache only. In a shallow cache whose history does not
/// reach `last_applied`, answers [`SourceError::ShallowAncestry`] instead of guessing.
pub fn check_descends(
    cache: &Cache,
    new: Oid,
    last_applied: Option<Oid>,
    allow_history_rewrite: bool,
) -> Result<Ancestry, SourceError> {
    let Some(last) = last_applied else {
        return Ok(Ancestry::FirstApply);
    };
    if new == last {
        return Ok(Ancestry::Same);
    }
    // `last` not in the object database at all: with full history that means it is not an
    // ancestor of anything fetched.
    let descends = cache.has_commit(last)
        && cache
            .repo
            .graph_descendant_of(new, last)
            .map_err(|e| cache.err("compare history", e))?;
    if descends {
        return Ok(Ancestry::Descendant);
    }
    if allow_history_rewrite {
        return Ok(Ancestry::Rewritten);
    }
    if cache.is_shallow() {
        return Err(SourceError::ShallowAncestry {
            new,
            last_applied: last,
        });
    }
    Err(SourceError::Refused {
        commit: new,
        reason: Refusal::NotDescendant { last_applied: last },
    })
}

/// [`check_descends`], and when a shallow cache cannot answer, fetch the ref's full history
/// ([`fetch::unshallow`]) and ask once more. May talk to the network and write to the cache.
pub fn check_descends_or_deepen(
    cfg: &SourceConfig,
    new: Oid,
    last_applied: Option<Oid>,
    allow_history_rewrite: bool,
    counters: &TransferCounters,
) -> Result<Ancestry, SourceError> {
    let cache = Cache::open(&cfg.cache_dir)?;
    match check_descends(&cache, new, last_applied, allow_history_rewrite) {
        Err(SourceError::ShallowAncestry { .. }) => {
            drop(cache);
            fetch::unshallow(cfg, counters)?;
            // A fresh handle: libgit2 keeps the old shallow grafts in memory.
            let cache = Cache::open(&cfg.cache_dir)?;
            check_descends(&cache, new, last_applied, allow_history_rewrite)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_labels_are_stable() {
        assert_eq!(Refusal::Unsigned.label(), "unsigned");
        assert_eq!(
            Refusal::NotDescendant {
                last_applied: Oid::ZERO_SHA1
            }
            .label(),
            "not_descendant"
        );
        assert_eq!(
            Refusal::UnknownKey { key: "k".into() }.label(),
            "unknown_key"
        );
    }

    #[test]
    fn commits_dated_past_the_tolerance_are_refused() {
        let now = 1_750_000_000;
        assert_eq!(check_commit_date(now - 86_400 * 365, now), Ok(()));
        assert_eq!(check_commit_date(now + MAX_COMMIT_AHEAD_SECS, now), Ok(()));
        let Err(Refusal::BadSignature { detail }) =
            check_commit_date(now + MAX_COMMIT_AHEAD_SECS + 1, now)
        else {
            panic!("accepted a commit dated past the tolerance");
        };
        assert!(
            detail.contains("24 h ahead of this node's clock"),
            "{detail}"
        );
        assert!(detail.contains("2025-06-16 "), "{detail}");
        assert!(check_commit_date(i64::MAX, i64::MIN).is_err());
    }
}
