//! ssh key sources: resolves `ssh_authorized_keys` entries (literal, `github:U`, `gitlab:U`,
//! https URL) to `authorized_keys` lines, with a per-source cache of the last good fetch.
//!
//! Owns: HTTP fetching of key lists (reqwest + rustls) and the key cache directory
//! (`<state dir>/ssh-keys/`, one file per source).
//!
//! Invariants:
//! - Only `https://` is fetched, except `http://` to a loopback IP literal or `localhost`
//!   (tests). Redirects are followed (at most 5) under the same rule.
//! - Connect and total timeouts and a body size cap bound every fetch.
//! - All or nothing per response: every non-blank, non-`#` line must parse as an OpenSSH
//!   public key (`ssh_key::PublicKey::from_openssh`, so no `authorized_keys` options can be
//!   injected). A single junk line (an HTML error page, a captive portal) makes the whole fetch
//!   count as failed: partially trusting a response we do not understand is worse than using
//!   the last good one.
//! - A good fetch replaces the cache atomically (temp file, fsync, rename, fsync dir). A failed
//!   one (status, timeout, oversize, garbage, transport) falls back to the cached keys with a
//!   warning; with nothing cached the source contributes no keys and a warning saying so.
//!   [`KeyResolution::for_render`] never hands rendering an empty set caused by failures.
//! - An empty 200 response is a valid answer (the account has no keys) and is cached.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{AuthorizedKey, KeySource, Origin};
use crate::error_chain::error_chain;

/// Where and how keys are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetcherConfig {
    /// Base of `github:U` → `<github_base>/U.keys`. Default `https://github.com`.
    pub github_base: String,
    /// Base of `gitlab:U` → `<gitlab_base>/U.keys`. Default `https://gitlab.com`.
    pub gitlab_base: String,
    /// Longest wait for the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Whole request including the body.
    pub timeout: Duration,
    /// Largest accepted response body, in bytes.
    pub max_body: usize,
    /// Directory of cached key lists (created on first write).
    pub cache_dir: PathBuf,
    /// Extra PEM CA certificates trusted besides the bundled web PKI roots (a self-hosted GitLab
    /// behind a private CA; tests).
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// Use a source's cached keys without asking the network when there are any (re-plans that
    /// must be quick and work offline: drift corrections, start-up). New commits and periodic
    /// resyncs fetch.
    pub cache_first: bool,
}

impl KeyFetcherConfig {
    /// Defaults (GitHub/GitLab, 10 s connect, 30 s total, 64 KiB) with the cache under
    /// `<state_dir>/ssh-keys`.
    pub fn new(state_dir: &Path) -> Self {
        KeyFetcherConfig {
            github_base: "https://github.com".into(),
            gitlab_base: "https://gitlab.com".into(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_body: 64 * 1024,
            cache_dir: state_dir.join("ssh-keys"),
            extra_ca_pem: Vec::new(),
            cache_first: false,
        }
    }
}

/// Why fetching one source failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is neither `https://` nor `http://` to a loopback host (a redirect to such a URL
    /// fails as [`FetchError::Transport`]).
    #[error("{url}: refusing to fetch keys over {scheme}:// (https only; http only to loopback)")]
    Insecure {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The source does not form a valid URL (a bad `github:`/`gitlab:` user name or base).
    #[error("{url}: not a valid URL: {reason}")]
    BadUrl {
        /// The URL as formed.
        url: String,
        /// The parse error.
        reason: String,
    },
    /// The server answered with a status other than 200.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Connecting or reading the whole response took longer than the limit.
    #[error("{url}: timed out (limit {limit:?})")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit that was hit (connect or total).
        limit: Duration,
    },
    /// The body is larger than `max_body`.
    #[error("{url}: response body exceeds {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap in bytes.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("{url}: response is not UTF-8 text")]
    NotText {
        /// The URL.
        url: String,
    },
    /// A non-blank, non-comment line is not an OpenSSH public key; the whole response is refused.
    #[error("{url}: line {line} is not an SSH public key ({reason}): {snippet:?}")]
    NotAKey {
        /// The URL.
        url: String,
        /// 1-based line number in the response.
        line: usize,
        /// The key parser's error.
        reason: String,
        /// The line's first 40 characters, for the message.
        snippet: String,
    },
    /// The request failed: DNS, TCP, TLS, more than 5 redirects, or a redirect to a URL that is
    /// not allowed.
    #[error("{url}: {detail}")]
    Transport {
        /// The URL.
        url: String,
        /// The HTTP client's error.
        detail: String,
    },
}

/// Errors setting up the fetcher.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The HTTP client could not be built (TLS backend setup).
    #[error("building the HTTP client for ssh key sources: {0}")]
    Client(#[source] reqwest::Error),
    /// An `extra_ca_pem` entry is not a PEM certificate.
    #[error("extra CA certificate #{index} for ssh key sources is not valid PEM: {source}")]
    Ca {
        /// Position of the certificate in `extra_ca_pem` (0-based).
        index: usize,
        /// The parse error.
        #[source]
        source: reqwest::Error,
    },
}

/// What happened to one configured source.
#[derive(Debug)]
pub enum SourceOutcome {
    /// A literal key, used as is.
    Literal,
    /// Fetched now (and cached).
    Fetched {
        /// Keys the response held.
        count: usize,
        /// The fetch succeeded but the cache could not be written.
        cache_error: Option<String>,
    },
    /// Fetch failed; the last good keys from the cache are used.
    Cached {
        /// Why the fetch failed.
        error: FetchError,
        /// Keys taken from the cache.
        count: usize,
    },
    /// Taken from the cache without fetching (`cache_first`).
    FromCache {
        /// Keys taken from the cache.
        count: usize,
    },
    /// Fetch failed and nothing was cached: the source contributes no keys.
    Missing {
        /// Why the fetch failed.
        error: FetchError,
    },
}

/// What happened to one configured source (the warnings are made from it).
#[derive(Debug)]
pub struct SourceReport {
    /// The configured source.
    pub source: KeySource,
    /// Where it is configured.
    pub origin: Origin,
    /// Whether its keys came from the network, the cache, or nowhere.
    pub outcome: SourceOutcome,
}

/// The keys of all sources, in configuration order, without duplicates.
#[derive(Debug, Default)]
pub struct KeyResolution {
    /// The `authorized_keys` lines, in configuration order, without duplicates.
    pub keys: Vec<String>,
    /// One report per configured source, in order.
    pub reports: Vec<SourceReport>,
}

impl KeyResolution {
    /// True when some source fell back to the cache or contributed nothing.
    pub fn any_failed(&self) -> bool {
        self.reports.iter().any(|r| {
            matches!(
                r.outcome,
                SourceOutcome::Cached { .. } | SourceOutcome::Missing { .. }
            )
        })
    }

    /// What rendering should manage (`RenderEnv::ssh_keys`): `None` when no source is
    /// configured, or when failures left no key at all (never lock the node out because of the
    /// network); otherwise exactly the resolved keys.
    pub fn for_render(&self) -> Option<Vec<String>> {
        if self.reports.is_empty() || (self.keys.is_empty() && self.any_failed()) {
            None
        } else {
            Some(self.keys.clone())
        }
    }

    /// Human-readable warnings (no secrets in key lists; URLs are shown).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.reports {
            let what = format!(
                "{}: ssh_authorized_keys {}",
                r.origin,
                source_label(&r.source)
            );
            match &r.outcome {
                SourceOutcome::Literal | SourceOutcome::FromCache { .. } => {}
                SourceOutcome::Fetched { count, cache_error } => {
                    if *count == 0 {
                        out.push(format!("{what}: the server lists no keys"));
                    }
                    if let Some(e) = cache_error {
                        out.push(format!("{what}: could not update the key cache: {e}"));
                    }
                }
                SourceOutcome::Cached { error, count } => out.push(format!(
                    "{what}: fetch failed ({error}); using {count} cached key(s) from the last \
                     good fetch"
                )),
                SourceOutcome::Missing { error } => out.push(format!(
                    "{what}: fetch failed ({error}) and nothing is cached: this source \
                     contributes no keys until a fetch succeeds"
                )),
            }
        }
        out
    }
}

/// `github:alice`, `gitlab:bob`, the URL, or `literal key` for display and cache naming.
pub fn source_label(s: &KeySource) -> String {
    match s {
        KeySource::Literal(_) => "literal key".into(),
        KeySource::GitHub(u) => format!("github:{u}"),
        KeySource::GitLab(u) => format!("gitlab:{u}"),
        KeySource::Url(u) => u.clone(),
    }
}

/// Whether `url` may be fetched: https anywhere, http only to loopback.
fn check_url(url: &str) -> Result<reqwest::Url, FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::BadUrl {
        url: url.into(),
        reason: e.to_string(),
    })?;
    if url_allowed(&parsed) {
        Ok(parsed)
    } else {
        Err(FetchError::Insecure {
            url: url.into(),
            scheme: parsed.scheme().into(),
        })
    }
}

fn url_allowed(u: &reqwest::Url) -> bool {
    crate::netpolicy::transport_allowed(u)
}

/// Parses a key list: every non-blank, non-comment line must be an OpenSSH public key.
pub fn parse_key_list(url: &str, body: &str) -> Result<Vec<String>, FetchError> {
    let mut keys = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = match crate::config::convert::key_entry_control_character(line) {
            Some(reason) => Err(reason),
            None => ssh_key::PublicKey::from_openssh(line)
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(reason) = parsed {
            return Err(FetchError::NotAKey {
                url: url.into(),
                line: i + 1,
                reason,
                snippet: line.chars().take(40).collect(),
            });
        }
        keys.push(line.to_string());
    }
    Ok(keys)
}

/// Resolves key sources over HTTP(S) with a cache. Reads and writes the cache directory.
pub struct KeyFetcher {
    client: reqwest::Client,
    cfg: KeyFetcherConfig,
}

impl KeyFetcher {
    /// A fetcher with an HTTP client built from `cfg` (rustls, the bundled roots plus
    /// `extra_ca_pem`, redirects only under the https rule). Touches nothing on disk.
    pub fn new(cfg: KeyFetcherConfig) -> Result<Self, KeysError> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if url_allowed(attempt.url()) {
                attempt.follow()
            } else {
                attempt.error("redirect to a URL that is neither https nor loopback http")
            }
        });
        let mut builder = reqwest::Client::builder();
        for (index, pem) in cfg.extra_ca_pem.iter().enumerate() {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|source| KeysError::Ca { index, source })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .redirect(policy)
            .user_agent(concat!("bosun/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(KeysError::Client)?;
        Ok(KeyFetcher { client, cfg })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &KeyFetcherConfig {
        &self.cfg
    }

    /// The URL a source is fetched from (`None` for literal keys).
    pub fn url_for(&self, source: &KeySource) -> Option<String> {
        match source {
            KeySource::Literal(_) => None,
            KeySource::GitHub(u) => Some(format!(
                "{}/{u}.keys",
                self.cfg.github_base.trim_end_matches('/')
            )),
            KeySource::GitLab(u) => Some(format!(
                "{}/{u}.keys",
                self.cfg.gitlab_base.trim_end_matches('/')
            )),
            KeySource::Url(u) => Some(u.clone()),
        }
    }

    /// Fetches and parses one URL. Network only: does not touch the cache.
    pub async fn fetch_url(&self, url: &str) -> Result<Vec<String>, FetchError> {
        let parsed = check_url(url)?;
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.into(),
                    limit: self.cfg.timeout,
                }
            } else {
                FetchError::Transport {
                    url: url.into(),
                    detail: error_chain(&e),
                }
            }
        };
        let mut resp = self.client.get(parsed).send().await.map_err(map_err)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                url: url.into(),
                status: resp.status().as_u16(),
            });
        }
        let limit = self.cfg.max_body;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(FetchError::TooLarge {
                url: url.into(),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge {
                    url: url.into(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| FetchError::NotText { url: url.into() })?;
        parse_key_list(url, &text)
    }

    fn cache_path(&self, source: &KeySource) -> PathBuf {
        let h = hex::encode(Sha256::digest(source_label(source).as_bytes()));
        self.cfg.cache_dir.join(format!("{}.keys", &h[..32]))
    }

    /// The cached keys of a source, if a readable, valid cache file exists. Reads disk.
    pub fn cached(&self, source: &KeySource) -> Option<Vec<String>> {
        let path = self.cache_path(source);
        let text = std::fs::read_to_string(&path).ok()?;
        parse_key_list(&path.display().to_string(), &text).ok()
    }

    /// Replaces the cache of a source atomically. Writes to disk (temp file, fsync, rename,
    /// fsync of the directory).
    pub fn store(&self, source: &KeySource, keys: &[String]) -> std::io::Result<()> {
        let dir = &self.cfg.cache_dir;
        std::fs::create_dir_all(dir)?;
        let path = self.cache_path(source);
        let tmp = path.with_extension("keys.tmp");
        let mut text = format!("# bosun: last good fetch of {}\n", source_label(source));
        for k in keys {
            text.push_str(k);
            text.push('\n');
        }
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Resolves every configured entry, in order, deduplicating keys. Performs HTTP requests
    /// and reads/writes the cache directory; never fails as a whole.
    pub async fn resolve(&self, entries: &[AuthorizedKey]) -> KeyResolution {
        let mut res = KeyResolution::default();
        for entry in entries {
            let (keys, outcome) = match &entry.source {
                KeySource::Literal(line) => (vec![line.trim().to_string()], SourceOutcome::Literal),
                source if self.cfg.cache_first => match self.cached(source) {
                    Some(keys) => {
                        let count = keys.len();
                        (keys, SourceOutcome::FromCache { count })
                    }
                    None => self.fetch_or_cached(source).await,
                },
                source => self.fetch_or_cached(source).await,
            };
            for k in keys {
                if !k.is_empty() && !res.keys.contains(&k) {
                    res.keys.push(k);
                }
            }
            res.reports.push(SourceReport {
                source: entry.source.clone(),
                origin: entry.origin.clone(),
                outcome,
            });
        }
        res
    }

    /// Fetches `source` (and caches the result); on failure, the cached keys if any.
    async fn fetch_or_cached(&self, source: &KeySource) -> (Vec<String>, SourceOutcome) {
        let url = self.url_for(source).expect("non-literal source has a URL");
        match self.fetch_url(&url).await {
            Ok(keys) => {
                let cache_error = self
                    .store(source, &keys)
                    .err()
                    .map(|e| format!("{}: {e}", self.cache_path(source).display()));
                let count = keys.len();
                (keys, SourceOutcome::Fetched { count, cache_error })
            }
            Err(error) => match self.cached(source) {
                Some(keys) => {
                    let count = keys.len();
                    (keys, SourceOutcome::Cached { error, count })
                }
                None => (Vec::new(), SourceOutcome::Missing { error }),
            },
        }
    }
}

impl fmt::Debug for KeyFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFetcher")
            .field("cfg", &self.cfg)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_policy() {
        for ok in [
            "https://github.com/a.keys",
            "http://127.0.0.1:8080/a.keys",
            "http://127.1.2.3/a.keys",
            "http://[::1]:99/a.keys",
            "http://localhost/a.keys",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://github.com/a.keys",
            "http://10.0.0.1/a.keys",
            "ftp://127.0.0.1/a.keys",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(check_url(bad), Err(FetchError::Insecure { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            check_url("not a url"),
            Err(FetchError::BadUrl { .. })
        ));
    }

    #[test]
    fn key_list_parsing_is_all_or_nothing() {
        let k = ssh_key::PublicKey::new(
            ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([7; 32])),
            "me@host",
        )
        .to_openssh()
        .unwrap();
        let body = format!("# comment\n\n  {k}  \n");
        assert_eq!(parse_key_list("u", &body).unwrap(), vec![k.clone()]);
        let err = parse_key_list("u", &format!("{k}\n<html>oops</html>\n")).unwrap_err();
        assert!(
            matches!(&err, FetchError::NotAKey { line: 2, snippet, .. } if snippet == "<html>oops</html>"),
            "{err}"
        );
        // authorized_keys options cannot be smuggled in.
        assert!(parse_key_list("u", &format!("command=\"sh\" {k}")).is_err());
        // Nor control characters (a carriage return, an escape sequence) in a line.
        for bad in [format!("{k}\rcommand=\"sh\" {k}"), format!("{k} \u{1b}[2K")] {
            let err = parse_key_list("u", &bad).unwrap_err();
            assert!(err.to_string().contains("control character"), "{err}");
        }
    }

    #[test]
    fn for_render_never_empties_because_of_failures() {
        let origin = Origin::default();
        let failed = |src: &str| SourceReport {
            source: KeySource::GitHub(src.into()),
            origin: origin.clone(),
            outcome: SourceOutcome::Missing {
                error: FetchError::Status {
                    url: "u".into(),
                    status: 500,
                },
            },
        };
        let none = KeyResolution::default();
        assert_eq!(none.for_render(), None);
        let all_failed = KeyResolution {
            keys: vec![],
            reports: vec![failed("a")],
        };
        assert_eq!(all_failed.for_render(), None);
        assert!(all_failed.warnings()[0].contains("fetch failed"));
        assert!(all_failed.warnings()[0].contains("and nothing is cached"));
        let partly = KeyResolution {
            keys: vec!["k".into()],
            reports: vec![failed("a")],
        };
        assert_eq!(partly.for_render(), Some(vec!["k".to_string()]));
        let empty_ok = KeyResolution {
            keys: vec![],
            reports: vec![SourceReport {
                source: KeySource::GitHub("a".into()),
                origin,
                outcome: SourceOutcome::Fetched {
                    count: 0,
                    cache_error: None,
                },
            }],
        };
        assert_eq!(empty_ok.for_render(), Some(vec![]));
    }
}
