//! Polling the remote: read the ref advertisement, and fetch a pack only when the ref moved.
//!
//! Invariants:
//! - An idle poll (advertised id == cached id) opens one connection, reads the advertisement and
//!   downloads no pack data.
//! - `depth` applies to the first fetch of a ref; later fetches are incremental from the cached
//!   tip, so the history between two fetched tips stays connected.
//! - Only the configured ref is fetched, into `refs/bosun/remote/<name without refs/>`; tags are
//!   not auto-followed.
//! - A full commit id as the reference never touches the network once the commit is cached
//!   (commit ids are immutable).

use std::sync::atomic::{AtomicU64, Ordering};

use git2::{AutotagOption, Direction, FetchOptions, RemoteCallbacks};

use super::budget::{self, FetchBudget, TooLarge};
use super::known_hosts::KnownHosts;
use super::transport::{Failure, Scope, Settings, SshTarget};
use super::verify::Refusal;
use super::{Cache, Oid, SourceConfig, SourceError, DEFAULT_TOKEN_USERNAME};

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The remote ref still points where the cache has it; nothing was downloaded.
    Unchanged {
        /// The commit the ref points to.
        commit: Oid,
    },
    /// New objects were fetched; the ref now resolves to `commit`.
    Updated {
        /// The commit the ref now points to.
        commit: Oid,
    },
}

impl FetchOutcome {
    /// The commit the configured reference resolves to.
    pub fn commit(&self) -> Oid {
        match self {
            FetchOutcome::Unchanged { commit } | FetchOutcome::Updated { commit } => *commit,
        }
    }
}

/// Running totals of network work, shared by the caller across polls (e.g. for metrics, or to
/// prove that idle polls download nothing). Bytes and objects are pack data as counted by
/// libgit2's indexer; the ref advertisement itself is not counted.
#[derive(Debug, Default)]
pub struct TransferCounters {
    polls: AtomicU64,
    pack_fetches: AtomicU64,
    received_bytes: AtomicU64,
    received_objects: AtomicU64,
}

/// A copy of [`TransferCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferTotals {
    /// Connections that read the ref advertisement.
    pub polls: u64,
    /// Fetches that negotiated a pack (whether or not it had objects).
    pub pack_fetches: u64,
    /// Pack bytes received (as libgit2's indexer counts them).
    pub received_bytes: u64,
    /// Objects received in packs.
    pub received_objects: u64,
}

impl TransferCounters {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of the counters (relaxed loads: each value is exact, the set is not taken
    /// atomically).
    pub fn totals(&self) -> TransferTotals {
        TransferTotals {
            polls: self.polls.load(Ordering::Relaxed),
            pack_fetches: self.pack_fetches.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            received_objects: self.received_objects.load(Ordering::Relaxed),
        }
    }
}

/// What `SourceConfig::reference` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Named(String),
    Commit(Oid),
}

fn parse_target(reference: &str) -> Result<Target, SourceError> {
    let r = reference.trim();
    if r.is_empty() {
        return Err(SourceError::InvalidConfig(
            "reference is empty (expected a branch, a tag or a full commit id)".into(),
        ));
    }
    if (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        let oid = Oid::from_str(r).map_err(|e| {
            SourceError::InvalidConfig(format!("reference {r:?} is not a commit id: {e}"))
        })?;
        return Ok(Target::Commit(oid));
    }
    if r.contains("..") || r.contains(char::is_whitespace) || r.ends_with('/') {
        return Err(SourceError::InvalidConfig(format!(
            "reference {r:?} is not a valid branch or tag name"
        )));
    }
    Ok(Target::Named(r.to_string()))
}

/// The refs a connected remote advertised, as `(name, id)`. A name that is not UTF-8 is left
/// out: it cannot be the configured reference (the agent config is UTF-8), and git2's
/// `RemoteHead::name` panics on it, which a hostile remote could use to abort every poll.
/// Reads libgit2's list directly for that reason. Reads memory libgit2 owns only.
#[allow(unsafe_code)] // libgit2's advertised head list: see the SAFETY comments.
fn advertised(remote: &git2::Remote<'_>) -> Result<Vec<(String, Oid)>, git2::Error> {
    use git2::Binding;
    let mut base: *mut *const libgit2_sys::git_remote_head = std::ptr::null_mut();
    // libc's size_t, usize on every target Rust supports here.
    let mut size: usize = 0;
    // SAFETY: `remote` is a live, connected git_remote (libgit2 returns an error otherwise);
    // `base` and `size` are plain out-parameters.
    let rc = unsafe { libgit2_sys::git_remote_ls(&mut base, &mut size, remote.raw()) };
    if rc < 0 {
        return Err(git2::Error::last_error(rc));
    }
    if base.is_null() || size == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: libgit2 returned `size` head pointers at `base`, owned by the remote, which
    // outlives this function; the slice is not kept.
    let heads = unsafe { std::slice::from_raw_parts(base, size) };
    let mut out = Vec::with_capacity(heads.len());
    for &head in heads {
        // SAFETY: each entry is null or a git_remote_head owned by the remote, whose `name` is
        // null or a NUL-terminated string (libgit2's pkt parser builds it).
        let (name, oid) = unsafe {
            if head.is_null() || (*head).name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr((*head).name);
            (name, Oid::from_raw(&(*head).oid))
        };
        if let Ok(name) = name.to_str() {
            out.push((name.to_string(), oid));
        }
    }
    Ok(out)
}

/// Picks the advertised ref a short name means: exact `refs/...` or `HEAD`, else
/// `refs/heads/<name>`, else `refs/tags/<name>`.
fn resolve_advertised<'a>(heads: &'a [(String, Oid)], name: &str) -> Option<&'a (String, Oid)> {
    let candidates: Vec<String> = if name.starts_with("refs/") || name == "HEAD" {
        vec![name.to_string()]
    } else {
        vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
    };
    candidates
        .iter()
        .find_map(|c| heads.iter().find(|(n, _)| n == c))
}

/// Local ref that mirrors a remote ref in the cache.
fn tracking_ref(remote_ref: &str) -> String {
    let rest = remote_ref.strip_prefix("refs/").unwrap_or(remote_ref);
    format!("refs/bosun/remote/{rest}")
}

/// libgit2's local transport cannot fetch shallow; depth is ignored there.
fn is_local_url(url: &str) -> bool {
    url.starts_with("file://") || url.starts_with('/') || url.starts_with('.')
}

/// Whether `url` is plain `http://` to a host other than loopback.
fn cleartext_to_network(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// The credentials and receive budget of one fetch, handed to bosun's transports (see
/// `transport`) for as long as this value lives on the calling thread.
struct Credentials {
    scope: Scope,
    budget: FetchBudget,
}

impl Credentials {
    /// Reads the token file and checks the key and known_hosts files (reads the filesystem).
    fn load(cfg: &SourceConfig) -> Result<Self, SourceError> {
        let token = match &cfg.token_file {
            None => None,
            Some(path) => {
                if cleartext_to_network(&cfg.url) {
                    return Err(SourceError::InvalidConfig(format!(
                        "token_file {} with {}: a plain http:// URL would send the token in clear \
                         over the network; use https://",
                        path.display(),
                        cfg.url
                    )));
                }
                let raw =
                    std::fs::read_to_string(path).map_err(|source| SourceError::ReadFile {
                        what: "token file",
                        path: path.clone(),
                        source,
                    })?;
                let token = raw.trim().to_string();
                if token.is_empty() {
                    return Err(SourceError::InvalidConfig(format!(
                        "token file {} is empty",
                        path.display()
                    )));
                }
                let user = cfg
                    .token_username
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TOKEN_USERNAME.to_string());
                Some((user, token))
            }
        };
        if let Some(key) = &cfg.ssh_key_file {
            if !key.is_file() {
                return Err(SourceError::InvalidConfig(format!(
                    "ssh_key_file {} does not exist or is not a file",
                    key.display()
                )));
            }
        }
        if let Some(file) = &cfg.ssh_known_hosts {
            let text = std::fs::read_to_string(file).map_err(|source| SourceError::ReadFile {
                what: "ssh known_hosts file",
                path: file.clone(),
                source,
            })?;
            let hosts = KnownHosts::parse(&text, &file.display().to_string())?;
            // ssh would refuse too, after connecting; refusing here names the reason exactly.
            if let Some(target) = SshTarget::parse(&cfg.url) {
                let port = target.port.unwrap_or(22);
                if !hosts.lists(&target.host, port) {
                    return Err(SourceError::HostKeyRejected {
                        url: cfg.url.clone(),
                        reason: format!(
                            "host key of {} is for a host not listed in {}",
                            target.known_hosts_name(),
                            file.display()
                        ),
                    });
                }
            }
        }
        let scope = Scope::enter(Settings {
            token,
            ca_file: cfg.ca_file.clone(),
            ssh_key_file: cfg.ssh_key_file.clone(),
            ssh_known_hosts: cfg.ssh_known_hosts.clone(),
            max_fetch_bytes: Some(cfg.max_fetch_bytes),
        });
        Ok(Credentials {
            scope,
            budget: FetchBudget {
                limit: cfg.max_fetch_bytes,
            },
        })
    }

    /// Turns a libgit2 failure into a `SourceError`, preferring the transport's own reason.
    fn error(&self, url: &str, op: &'static str, source: git2::Error) -> SourceError {
        match self.scope.take_failure() {
            Some(Failure::HostKey(reason)) => SourceError::HostKeyRejected {
                url: url.to_string(),
                reason,
            },
            Some(failure @ (Failure::Auth(_) | Failure::Other(_) | Failure::TooLarge { .. })) => {
                SourceError::Remote {
                    url: url.to_string(),
                    op,
                    source: git2::Error::from_str(&failure.message()),
                }
            }
            None => SourceError::Remote {
                url: url.to_string(),
                op,
                source,
            },
        }
    }

    /// [`Self::error`] for the download of `commit`: going over the budget is a refusal of
    /// that commit, remembered in `cache` so the next poll does not download it again.
    fn fetch_error(
        &self,
        cache: &Cache,
        url: &str,
        commit: Oid,
        source: git2::Error,
    ) -> SourceError {
        match self.scope.take_failure() {
            Some(Failure::TooLarge { limit, seen }) => {
                refuse_too_large(cache, commit, limit, TooLarge::Bytes { limit, seen })
            }
            Some(other) => {
                self.scope.record(other);
                self.error(url, "fetch", source)
            }
            None if budget::is_rebuilt_too_large(&source) => {
                refuse_too_large(cache, commit, self.budget.limit, TooLarge::Rebuilt)
            }
            None => self.error(url, "fetch", source),
        }
    }

    /// Callbacks that count received bytes and stop the transfer once over the budget (the
    /// network transports report every 100 KiB of pack data; `file://` every object).
    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        cb.transfer_progress(move |p| {
            let seen = p.received_bytes() as u64;
            if self.budget.exceeded(seen) {
                self.scope.record(Failure::TooLarge {
                    limit: self.budget.limit,
                    seen,
                });
                return false;
            }
            true
        });
        cb
    }
}

/// Remembers and returns the refusal of `commit` for its size.
fn refuse_too_large(cache: &Cache, commit: Oid, limit: u64, why: TooLarge) -> SourceError {
    budget::remember(cache, commit, limit, &why);
    SourceError::Refused {
        commit,
        reason: Refusal::FetchTooLarge(why),
    }
}

/// Refuses `commit` before any download when it was refused for its size before (under the
/// same or a higher limit), or when the `file://` transport would have to copy too much.
/// Reads the cache (and, for a local remote, the remote repository).
fn check_size_first(
    cache: &Cache,
    cfg: &SourceConfig,
    commit: Oid,
    wants: &[Oid],
) -> Result<(), SourceError> {
    if let Some(why) = budget::remembered(cache, commit, cfg.max_fetch_bytes) {
        return Err(SourceError::Refused {
            commit,
            reason: Refusal::FetchTooLarge(why),
        });
    }
    if is_local_url(&cfg.url) {
        let limit = FetchBudget {
            limit: cfg.max_fetch_bytes,
        };
        let source = budget::local_path(&cfg.url);
        if let Some(why) = budget::local_preflight(&source, cache, wants, limit)? {
            return Err(refuse_too_large(cache, commit, cfg.max_fetch_bytes, why));
        }
    }
    Ok(())
}

/// Opens the configured remote on `cache` with this fetch's credentials in scope.
fn open_remote<'c>(
    cache: &'c Cache,
    cfg: &SourceConfig,
) -> Result<(Credentials, git2::Remote<'c>), SourceError> {
    let creds = Credentials::load(cfg)?;
    let remote = cache
        .repo
        .remote_anonymous(&cfg.url)
        .map_err(|source| SourceError::Remote {
            url: cfg.url.clone(),
            op: "parse url",
            source,
        })?;
    Ok((creds, remote))
}

/// Polls the remote and fetches the configured ref when it moved. Opens (or creates) the cache
/// in `cfg.cache_dir`, talks to the network, writes objects and `refs/bosun/*` to the cache.
pub fn fetch(cfg: &SourceConfig) -> Result<FetchOutcome, SourceError> {
    fetch_counted(cfg, &TransferCounters::new())
}

/// [`fetch`], adding the work done to `counters`.
pub fn fetch_counted(
    cfg: &SourceConfig,
    counters: &TransferCounters,
) -> Result<FetchOutcome, SourceError> {
    let target = parse_target(&cfg.reference)?;
    let cache = Cache::open(&cfg.cache_dir)?;
    if let Target::Commit(oid) = target {
        if cache.has_commit(oid) {
            return Ok(FetchOutcome::Unchanged { commit: oid });
        }
    }
    let (creds, mut remote) = open_remote(&cache, cfg)?;
    let remote_err = |op, source| SourceError::Remote {
        url: cfg.url.clone(),
        op,
        source,
    };

    let heads: Vec<(String, Oid)> = {
        let mut conn = remote
            .connect_auth(Direction::Fetch, Some(creds.callbacks()), None)
            .map_err(|e| creds.error(&cfg.url, "connect", e))?;
        counters.polls.fetch_add(1, Ordering::Relaxed);
        advertised(conn.remote()).map_err(|e| remote_err("list refs", e))?
    };

    match target {
        Target::Named(name) => {
            fetch_named(&cache, cfg, &mut remote, &creds, &heads, name, counters)
        }
        Target::Commit(oid) => {
            fetch_pinned(&cache, cfg, &mut remote, &creds, &heads, oid, counters)
        }
    }
}

/// Fetches the ref `name` (as the remote advertised it in `heads`) into its tracking ref,
/// unless the cache already holds the advertised commit; the first fetch of a ref is shallow
/// when a depth is configured. Talks to the network, writes objects and the tracking ref.
fn fetch_named(
    cache: &Cache,
    cfg: &SourceConfig,
    remote: &mut git2::Remote<'_>,
    creds: &Credentials,
    heads: &[(String, Oid)],
    name: String,
    counters: &TransferCounters,
) -> Result<FetchOutcome, SourceError> {
    let Some((remote_ref, advertised)) = resolve_advertised(heads, &name).cloned() else {
        return Err(SourceError::RefNotFound {
            url: cfg.url.clone(),
            reference: name,
            available: advertised_names(heads),
        });
    };
    let local = tracking_ref(&remote_ref);
    if cache.repo.refname_to_id(&local).ok() == Some(advertised)
        && cache.repo.find_object(advertised, None).is_ok()
    {
        let commit = peel_commit(cache, cfg, &name, advertised)?;
        return Ok(FetchOutcome::Unchanged { commit });
    }
    // Depth limits only the first fetch of a ref. Later fetches are incremental from
    // the cached tip anyway, and fetching them shallow again would cut the history
    // between the last applied commit and the new one (forcing an unshallow for every
    // ancestry check).
    let depth = match cache.repo.refname_to_id(&local) {
        Ok(_) => None,
        Err(_) => effective_depth(cfg),
    };
    check_size_first(cache, cfg, advertised, &[advertised])?;
    download(
        remote,
        creds,
        &[format!("+{remote_ref}:{local}")],
        depth,
        counters,
    )
    .map_err(|e| creds.fetch_error(cache, &cfg.url, advertised, e))?;
    let fetched = cache
        .repo
        .refname_to_id(&local)
        .map_err(|e| cache.err("read fetched ref", e))?;
    let commit = peel_commit(cache, cfg, &name, fetched)?;
    Ok(FetchOutcome::Updated { commit })
}

/// Fetches the pinned commit `oid`: through a ref in `heads` that points right at it, else
/// every branch and tag in full; then pins it with `refs/bosun/pinned` so no gc drops it.
/// Talks to the network, writes objects and refs to the cache.
fn fetch_pinned(
    cache: &Cache,
    cfg: &SourceConfig,
    remote: &mut git2::Remote<'_>,
    creds: &Credentials,
    heads: &[(String, Oid)],
    oid: Oid,
    counters: &TransferCounters,
) -> Result<FetchOutcome, SourceError> {
    // Prefer a ref that points right at it; otherwise fetch every branch and tag in
    // full (the commit may be anywhere in their history).
    // (`refs/tags/x^{}` is the peeled id of annotated tag `refs/tags/x`.)
    let tip = heads
        .iter()
        .find(|(_, o)| *o == oid)
        .map(|(name, _)| name.strip_suffix("^{}").unwrap_or(name));
    let specs: Vec<String> = match tip {
        Some(name) => vec![format!("+{name}:{}", tracking_ref(name))],
        None => vec![
            "+refs/heads/*:refs/bosun/remote/heads/*".to_string(),
            "+refs/tags/*:refs/bosun/remote/tags/*".to_string(),
        ],
    };
    let wants: Vec<Oid> = match tip {
        Some(_) => vec![oid],
        None => heads
            .iter()
            .filter(|(n, _)| n.starts_with("refs/heads/") || n.starts_with("refs/tags/"))
            .map(|(_, o)| *o)
            .collect(),
    };
    check_size_first(cache, cfg, oid, &wants)?;
    download(remote, creds, &specs, None, counters)
        .map_err(|e| creds.fetch_error(cache, &cfg.url, oid, e))?;
    if !cache.has_commit(oid) {
        return Err(SourceError::CommitNotFound {
            url: cfg.url.clone(),
            commit: oid,
        });
    }
    // Keep the pinned commit reachable from a ref so no gc can drop it.
    cache
        .repo
        .reference("refs/bosun/pinned", oid, true, "bosun: pinned commit")
        .map_err(|e| cache.err("write ref refs/bosun/pinned", e))?;
    Ok(FetchOutcome::Updated { commit: oid })
}

/// Fetches the configured ref's full history into a shallow cache (`--unshallow`), so that
/// ancestry checks can see every commit. Talks to the network, writes objects to the cache.
/// A no-op for caches that are not shallow.
pub fn unshallow(cfg: &SourceConfig, counters: &TransferCounters) -> Result<(), SourceError> {
    let cache = Cache::open(&cfg.cache_dir)?;
    if !cache.is_shallow() {
        return Ok(());
    }
    let (creds, mut remote) = open_remote(&cache, cfg)?;
    let specs = match parse_target(&cfg.reference)? {
        Target::Named(name) if !name.starts_with("refs/") && name != "HEAD" => {
            // Whichever of branch/tag exists locally is the one we fetched before.
            let branch = format!("refs/heads/{name}");
            if cache.repo.refname_to_id(&tracking_ref(&branch)).is_ok() {
                vec![format!("+{branch}:{}", tracking_ref(&branch))]
            } else {
                let tag = format!("refs/tags/{name}");
                vec![format!("+{tag}:{}", tracking_ref(&tag))]
            }
        }
        Target::Named(name) => vec![format!("+{name}:{}", tracking_ref(&name))],
        Target::Commit(_) => vec!["+refs/heads/*:refs/bosun/remote/heads/*".to_string()],
    };
    // libgit2's GIT_FETCH_DEPTH_UNSHALLOW.
    const UNSHALLOW: i32 = i32::MAX;
    download(&mut remote, &creds, &specs, Some(UNSHALLOW), counters)
        .map_err(|e| creds.error(&cfg.url, "unshallow fetch", e))
}

fn effective_depth(cfg: &SourceConfig) -> Option<i32> {
    match cfg.depth {
        Some(d) if d > 0 && !is_local_url(&cfg.url) => Some(i32::try_from(d).unwrap_or(i32::MAX)),
        _ => None,
    }
}

fn download(
    remote: &mut git2::Remote<'_>,
    creds: &Credentials,
    specs: &[String],
    depth: Option<i32>,
    counters: &TransferCounters,
) -> Result<(), git2::Error> {
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(creds.callbacks());
    fo.download_tags(AutotagOption::None);
    fo.update_fetchhead(false);
    if let Some(depth) = depth {
        fo.depth(depth);
    }
    remote.fetch(specs, Some(&mut fo), Some("bosun: fetch"))?;
    let stats = remote.stats();
    counters.pack_fetches.fetch_add(1, Ordering::Relaxed);
    counters
        .received_bytes
        .fetch_add(stats.received_bytes() as u64, Ordering::Relaxed);
    counters
        .received_objects
        .fetch_add(stats.received_objects() as u64, Ordering::Relaxed);
    Ok(())
}

fn peel_commit(
    cache: &Cache,
    cfg: &SourceConfig,
    name: &str,
    target: Oid,
) -> Result<Oid, SourceError> {
    let obj = cache
        .repo
        .find_object(target, None)
        .map_err(|e| cache.err("read fetched object", e))?;
    obj.peel_to_commit()
        .map(|c| c.id())
        .map_err(|_| SourceError::NotACommit {
            url: cfg.url.clone(),
            reference: name.to_string(),
            target,
        })
}

fn advertised_names(heads: &[(String, Oid)]) -> String {
    let mut names: Vec<&str> = heads
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !n.ends_with("^{}"))
        .collect();
    if names.is_empty() {
        return "no refs".to_string();
    }
    let more = names.len().saturating_sub(20);
    names.truncate(20);
    let mut s = names.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    #[test]
    fn full_commit_ids_are_commits_and_names_are_names() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse_target(hex).unwrap(),
            Target::Commit(Oid::from_str(hex).unwrap())
        );
        assert_eq!(parse_target("main").unwrap(), Target::Named("main".into()));
        // A short hex string is a name, not an abbreviated id.
        assert_eq!(
            parse_target("abcdef").unwrap(),
            Target::Named("abcdef".into())
        );
        assert!(parse_target("").is_err());
        assert!(parse_target("a..b").is_err());
        assert!(parse_target("feature/").is_err());
    }

    #[test]
    fn short_names_prefer_branches_over_tags() {
        let heads = vec![
            ("HEAD".to_string(), oid(1)),
            ("refs/heads/v1".to_string(), oid(2)),
            ("refs/tags/v1".to_string(), oid(3)),
            ("refs/tags/v2".to_string(), oid(4)),
        ];
        assert_eq!(resolve_advertised(&heads, "v1").unwrap().1, oid(2));
        assert_eq!(resolve_advertised(&heads, "v2").unwrap().1, oid(4));
        assert_eq!(
            resolve_advertised(&heads, "refs/tags/v1").unwrap().1,
            oid(3)
        );
        assert_eq!(resolve_advertised(&heads, "HEAD").unwrap().1, oid(1));
        assert!(resolve_advertised(&heads, "v3").is_none());
        // A short name never matches a longer ref by suffix.
        assert!(resolve_advertised(&heads, "heads/v1").is_none());
    }

    #[test]
    fn tracking_refs_live_under_refs_bosun() {
        assert_eq!(
            tracking_ref("refs/heads/main"),
            "refs/bosun/remote/heads/main"
        );
        assert_eq!(tracking_ref("HEAD"), "refs/bosun/remote/HEAD");
    }

    #[test]
    fn tokens_never_travel_over_cleartext_http_off_the_host() {
        assert!(cleartext_to_network("http://git.example.com/fleet"));
        assert!(cleartext_to_network("http://user@10.0.0.1:8080/fleet"));
        assert!(!cleartext_to_network("http://127.0.0.1:8080/fleet"));
        assert!(!cleartext_to_network("http://localhost/fleet"));
        assert!(!cleartext_to_network("http://[::1]:80/fleet"));
        assert!(!cleartext_to_network("https://git.example.com/fleet"));
        assert!(!cleartext_to_network("ssh://git.example.com/fleet"));
    }

    #[test]
    fn depth_is_dropped_for_local_transports() {
        let mut cfg = SourceConfig::new("file:///srv/repo", "main", "/tmp/c".into());
        cfg.depth = Some(1);
        assert_eq!(effective_depth(&cfg), None);
        cfg.url = "git://127.0.0.1:9418/repo".into();
        assert_eq!(effective_depth(&cfg), Some(1));
        cfg.depth = Some(0);
        assert_eq!(effective_depth(&cfg), None);
    }
}
