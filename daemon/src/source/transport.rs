//! bosun's own network transports for libgit2: `http(s)://` over reqwest (rustls) and `ssh://`
//! (and scp-like `user@host:path`) through the system's OpenSSH client. libgit2 still speaks the
//! Git protocol (ref advertisement, negotiation, pack indexing); these only carry its bytes.
//!
//! Why not libgit2's built-in transports: they need OpenSSL (libgit2's TLS stream and libssh2's
//! crypto), and initialising OpenSSL 3 maps about 4.4 MiB of libcrypto/libssl into the daemon for
//! good. Here HTTPS uses the same rustls stack as every other HTTPS connection bosun makes (key
//! sources, health checks, image downloads), and SSH uses the OpenSSH that operators already
//! know and audit (its key types, its `known_hosts` matching and `@revoked` handling).
//! See docs/ARCHITECTURE.md.
//!
//! Credentials are per fetch: [`Scope::enter`] puts them in a thread-local that the transport
//! factory reads when libgit2 opens a connection on the same thread, and collects what went
//! wrong in a form richer than libgit2's flattened error string ([`Failure`]).
//!
//! Invariants:
//! - Only fetching is supported; a push service is refused.
//! - Every byte read is counted against `Settings::max_fetch_bytes` (all connections of one
//!   fetch together); past it the read fails and the fetch reports [`Failure::TooLarge`].
//! - HTTP: the token is sent only to the configured origin (reqwest drops `Authorization` on a
//!   cross-host redirect) and never after a redirect from `https` to `http`. Every read has a
//!   deadline ([`IO_TIMEOUT`]) so a dead link cannot hang a poll.
//! - SSH: BatchMode (never prompts), no `~/.ssh/config` (`-F none`), strict host key checking.
//!   With a pinned `known_hosts` file only that file is consulted. The child is killed and reaped
//!   when the connection closes or is dropped.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};

/// Deadline for establishing a connection (TCP + TLS, or the SSH handshake); the same as
/// libgit2's for `git://`.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(super::CONNECT_TIMEOUT_MS as u64);
/// Deadline for each read from the remote; a stalled transfer fails instead of hanging.
const IO_TIMEOUT: Duration = Duration::from_millis(super::SERVER_TIMEOUT_MS as u64);
/// At most this much of ssh's stderr is kept for error messages.
const STDERR_LIMIT: usize = 16 * 1024;

/// What one fetch's connections need from the agent config.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `(username, token)` sent as HTTP Basic credentials.
    pub token: Option<(String, String)>,
    /// PEM bundle trusted for `https://`, in addition to the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Private key for ssh (`-i`); without it ssh tries its default identities.
    pub ssh_key_file: Option<PathBuf>,
    /// The only `known_hosts` file ssh consults; without it, the system's files.
    pub ssh_known_hosts: Option<PathBuf>,
    /// The most the connections of this fetch may read, all together (ref advertisement,
    /// negotiation and pack); `None`: no limit.
    pub max_fetch_bytes: Option<u64>,
}

/// Why a connection failed, as the transport saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The SSH server's host key was refused.
    HostKey(String),
    /// The remote refused (or asked for) credentials.
    Auth(String),
    /// Anything else the transport saw go wrong (libgit2 does not always pass the message on).
    Other(String),
    /// The fetch read more than `Settings::max_fetch_bytes` (`seen` bytes when it stopped).
    TooLarge { limit: u64, seen: u64 },
}

impl Failure {
    /// What went wrong, for an error message.
    pub fn message(&self) -> String {
        match self {
            Failure::HostKey(m) | Failure::Auth(m) | Failure::Other(m) => m.clone(),
            Failure::TooLarge { limit, seen } => format!(
                "the remote sent more than source.max_fetch_bytes ({limit} bytes; stopped at {seen})"
            ),
        }
    }
}

#[derive(Clone)]
struct Current {
    settings: Arc<Settings>,
    failure: Arc<Mutex<Option<Failure>>>,
    /// Bytes read by every connection of this fetch.
    received: Arc<AtomicU64>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// The credentials of the fetch running on this thread. Dropping it clears them.
pub struct Scope {
    failure: Arc<Mutex<Option<Failure>>>,
    previous: Option<Current>,
}

impl Scope {
    /// Makes `settings` the credentials of every connection libgit2 opens on this thread until
    /// the returned scope is dropped.
    pub fn enter(settings: Settings) -> Scope {
        let current = Current {
            settings: Arc::new(settings),
            failure: Arc::new(Mutex::new(None)),
            received: Arc::new(AtomicU64::new(0)),
        };
        let failure = current.failure.clone();
        let previous = CURRENT.with(|c| c.borrow_mut().replace(current));
        Scope { failure, previous }
    }

    /// Takes the reason of the last failed connection, if the transport recorded one.
    pub fn take_failure(&self) -> Option<Failure> {
        lock(&self.failure).take()
    }

    /// Records why the fetch stopped when it was not a connection that failed (the progress
    /// callback aborting it).
    pub fn record(&self, failure: Failure) {
        *lock(&self.failure) = Some(failure);
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

fn current() -> Current {
    CURRENT
        .with(|c| c.borrow().clone())
        .unwrap_or_else(|| Current {
            settings: Arc::new(Settings::default()),
            failure: Arc::new(Mutex::new(None)),
            received: Arc::new(AtomicU64::new(0)),
        })
}

impl Current {
    /// Records `failure` for the fetch and returns it as the stream error.
    fn fail(&self, failure: Failure) -> io::Error {
        let err = other(failure.message());
        *lock(&self.failure) = Some(failure);
        err
    }

    /// Counts `n` bytes read from the remote; an error once the fetch is over its limit.
    fn count(&self, n: usize) -> io::Result<usize> {
        let seen = self.received.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        match self.settings.max_fetch_bytes {
            Some(limit) if seen > limit => Err(self.fail(Failure::TooLarge { limit, seen })),
            _ => Ok(n),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers the transports with libgit2.
///
/// # Safety
/// libgit2's transport registry is an unsynchronised global: this must run before any other
/// thread uses libgit2 (bosun calls it from `main`, through `init_git_globals`).
#[allow(unsafe_code)] // libgit2's transport registry is a C global: see `# Safety`.
pub unsafe fn register() -> Result<(), git2::Error> {
    for scheme in ["http", "https"] {
        // SAFETY: `git2::transport::register` must not race with libgit2 creating a transport
        // (a fetch on another thread), since both use the global transport registry. This
        // function's `# Safety` contract hands that requirement to its caller, and
        // `init_git_globals` meets it by running before any thread uses libgit2. The factory
        // is `Send + Sync` and reads only the calling thread's fetch scope.
        unsafe {
            git2::transport::register(scheme, |remote| {
                let current = current();
                // libgit2 drops a factory's error message; the fetch reads it from the scope.
                let http = Http::new(current.clone()).map_err(|msg| {
                    current.fail(Failure::Other(msg.clone()));
                    git2::Error::from_str(&msg)
                })?;
                Transport::smart(remote, true, http)
            })?;
        }
    }
    for scheme in ["ssh", "ssh+git", "git+ssh"] {
        // SAFETY: as for the http(s) schemes above: the caller guarantees that no transport is
        // created concurrently (this function's `# Safety` contract).
        unsafe {
            git2::transport::register(scheme, |remote| {
                Transport::smart(remote, false, Ssh::new(current()))
            })?;
        }
    }
    Ok(())
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn fetch_only(service: Service) -> Result<(), git2::Error> {
    match service {
        Service::UploadPackLs | Service::UploadPack => Ok(()),
        Service::ReceivePackLs | Service::ReceivePack => Err(git2::Error::from_str(
            "bosun only fetches; pushing is not supported",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Smart HTTP

/// One connection's HTTP client and the runtime that drives it. Its own current-thread runtime
/// keeps it independent of the caller: the daemon calls from `spawn_blocking`, the CLI and tests
/// from plain threads.
struct Http {
    current: Current,
    runtime: Arc<tokio::runtime::Runtime>,
    client: reqwest::Client,
    /// Where the ref advertisement was finally served from, when a redirect moved the
    /// repository: the pack request goes there directly (a redirected POST would lose its body).
    moved_to: Arc<Mutex<Option<String>>>,
}

impl Http {
    fn new(current: Current) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the HTTP runtime: {e}"))?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("git/2.0 (bosun ", env!("CARGO_PKG_VERSION"), ")"))
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade {
                    attempt.error("refusing a redirect from https to plain http")
                } else if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }));
        if let Some(file) = &current.settings.ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| format!("reading ca_file {}: {e}", file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "ca_file {}: no PEM certificate in it",
                    file.display()
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Http {
            current,
            runtime: Arc::new(runtime),
            client,
            moved_to: Arc::new(Mutex::new(None)),
        })
    }
}

impl SmartSubtransport for Http {
    fn action(
        &self,
        url: &str,
        service: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        fetch_only(service)?;
        let (endpoint, post) = match service {
            Service::UploadPack => (UPLOAD_PACK, true),
            _ => (ADVERTISEMENT, false),
        };
        let base = match (post, lock(&self.moved_to).as_ref()) {
            (true, Some(moved)) => moved.clone(),
            _ => url.trim_end_matches('/').to_string(),
        };
        Ok(Box::new(HttpStream {
            current: self.current.clone(),
            runtime: self.runtime.clone(),
            client: self.client.clone(),
            moved_to: self.moved_to.clone(),
            url: format!("{base}{endpoint}"),
            post,
            body: Vec::new(),
            response: None,
            pending: Vec::new(),
            pos: 0,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

const ADVERTISEMENT: &str = "/info/refs?service=git-upload-pack";
const UPLOAD_PACK: &str = "/git-upload-pack";

/// The repository URL that served a ref advertisement from `final_url` (the request URL after
/// redirects), when it is a smart-HTTP advertisement URL. Pure.
fn repository_base(final_url: &reqwest::Url) -> Option<String> {
    let mut u = final_url.clone();
    if u.query() != Some("service=git-upload-pack") {
        return None;
    }
    u.set_query(None);
    let base = u.as_str().strip_suffix("/info/refs")?.to_string();
    Some(base)
}

/// One request: libgit2 writes the request body, then reads the response.
struct HttpStream {
    current: Current,
    runtime: Arc<tokio::runtime::Runtime>,
    client: reqwest::Client,
    moved_to: Arc<Mutex<Option<String>>>,
    url: String,
    post: bool,
    body: Vec<u8>,
    response: Option<reqwest::Response>,
    /// The chunk being handed out, and how much of it libgit2 has read.
    pending: Vec<u8>,
    pos: usize,
}

impl HttpStream {
    fn send(&mut self) -> io::Result<reqwest::Response> {
        let mut request = if self.post {
            self.client
                .post(&self.url)
                .header("Content-Type", "application/x-git-upload-pack-request")
                .header("Accept", "application/x-git-upload-pack-result")
                .body(std::mem::take(&mut self.body))
        } else {
            self.client.get(&self.url)
        };
        if let Some((user, token)) = &self.current.settings.token {
            request = request.basic_auth(user, Some(token));
        }
        let fail = |msg: String| self.current.fail(Failure::Other(msg));
        let response = self
            .runtime
            .block_on(async { tokio::time::timeout(IO_TIMEOUT, request.send()).await })
            .map_err(|_| fail(format!("{}: no response within {IO_TIMEOUT:?}", self.url)))?
            .map_err(|e| fail(describe_reqwest(&self.url, &e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let msg = if self.current.settings.token.is_some() {
                format!("authentication failed: the remote rejected the configured token (HTTP {status})")
            } else {
                format!("authentication failed: the remote asks for credentials (HTTP {status}) but no token_file is configured")
            };
            return Err(self.current.fail(Failure::Auth(msg)));
        }
        if !status.is_success() {
            return Err(fail(format!("{}: HTTP {status}", response.url())));
        }
        if !self.post && response.url().as_str() != self.url {
            if let Some(base) = repository_base(response.url()) {
                tracing::info!(from = %self.url, to = %base, "the Git server redirected the repository");
                *lock(&self.moved_to) = Some(base);
            }
        }
        let expected = if self.post {
            "application/x-git-upload-pack-result"
        } else {
            "application/x-git-upload-pack-advertisement"
        };
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.split(';').next().map(str::trim) != Some(expected) {
            return Err(fail(format!(
                "{}: the server is not a smart-HTTP Git server (Content-Type {content_type:?}, expected {expected})",
                response.url()
            )));
        }
        Ok(response)
    }
}

fn describe_reqwest(url: &str, e: &reqwest::Error) -> String {
    // reqwest's Display stops at the outermost layer; the cause chain says what failed.
    let mut msg = format!("{url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

impl Read for HttpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.response = Some(self.send()?);
        }
        while self.pos == self.pending.len() {
            let Some(response) = self.response.as_mut() else {
                return Ok(0);
            };
            let chunk = self
                .runtime
                .block_on(async { tokio::time::timeout(IO_TIMEOUT, response.chunk()).await })
                .map_err(|_| {
                    let msg = format!("{}: stalled for {IO_TIMEOUT:?}", self.url);
                    self.current.fail(Failure::Other(msg))
                })?
                .map_err(|e| {
                    let msg = describe_reqwest(&self.url, &e);
                    self.current.fail(Failure::Other(msg))
                })?;
            match chunk {
                Some(bytes) => {
                    self.pending.clear();
                    self.pending.extend_from_slice(&bytes);
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        self.current.count(n)
    }
}

impl Write for HttpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(other("write after the request was sent"));
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// SSH through OpenSSH

/// Where an ssh URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The login user (`git` in `git@host:repo`), when given.
    pub user: Option<String>,
    /// Host name or address (without the brackets of an IPv6 literal).
    pub host: String,
    /// TCP port, when given (ssh's default 22 otherwise).
    pub port: Option<u16>,
    /// Repository path on the server; `~user/…` for a home-relative path.
    pub path: String,
}

impl SshTarget {
    /// Parses `ssh://[user@]host[:port]/path` (also `ssh+git://`, `git+ssh://`) and scp-like
    /// `[user@]host:path`. Pure.
    pub fn parse(url: &str) -> Option<SshTarget> {
        let scheme_rest = ["ssh://", "ssh+git://", "git+ssh://"]
            .iter()
            .find_map(|s| url.strip_prefix(s));
        if let Some(rest) = scheme_rest {
            let (authority, path) = rest.split_at(rest.find('/')?);
            let (user, hostport) = split_user(authority);
            let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            } else {
                match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (hostport, None),
                }
            };
            let port = match port {
                Some(p) if !p.is_empty() => Some(p.parse().ok()?),
                _ => None,
            };
            // `ssh://host/~user/repo` means a path relative to that user's home.
            let path = path
                .strip_prefix("/~")
                .map_or(path.to_string(), |p| format!("~{p}"));
            return (!host.is_empty()).then(|| SshTarget {
                user,
                host: host.to_string(),
                port,
                path,
            });
        }
        if url.contains("://") {
            return None;
        }
        let (user, rest) = split_user(url);
        let (host, path) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':')?)
        } else {
            rest.split_once(':')?
        };
        // As in git: a slash before the colon makes it a local path (`./a:b`).
        let local = host.contains('/');
        (!local && !host.is_empty() && !path.is_empty()).then(|| SshTarget {
            user,
            host: host.to_string(),
            port: None,
            path: path.to_string(),
        })
    }

    /// The host as `known_hosts` names it: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        super::known_hosts::host_name(&self.host, self.port.unwrap_or(22))
    }
}

fn split_user(s: &str) -> (Option<String>, &str) {
    match s.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, s),
    }
}

/// Quotes `s` for the remote shell, as git does (`'…'`, with `'` and `!` escaped).
fn shell_quote(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\'' | '!' => {
                out.push_str("'\\");
                out.push(c);
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The `ssh` command line for `git-upload-pack` on `target`. Pure.
pub fn ssh_command(settings: &Settings, target: &SshTarget) -> Vec<String> {
    let mut args: Vec<String> = ["-F", "none", "-T", "-x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut opt = |o: String| {
        args.push("-o".into());
        args.push(o);
    };
    opt("BatchMode=yes".into());
    opt("StrictHostKeyChecking=yes".into());
    opt("UpdateHostKeys=no".into());
    opt("CheckHostIP=no".into());
    opt(format!("ConnectTimeout={}", CONNECT_TIMEOUT.as_secs()));
    // A dead link is noticed after ServerAliveInterval × ServerAliveCountMax = 60 s (IO_TIMEOUT).
    opt("ServerAliveInterval=15".into());
    opt("ServerAliveCountMax=4".into());
    if let Some(file) = &settings.ssh_known_hosts {
        opt(format!("UserKnownHostsFile={}", file.display()));
        opt("GlobalKnownHostsFile=none".into());
    }
    if let Some(key) = &settings.ssh_key_file {
        opt("IdentitiesOnly=yes".into());
        opt(format!("IdentityFile={}", key.display()));
    }
    if let Some(port) = target.port {
        args.push("-p".into());
        args.push(port.to_string());
    }
    args.push("-l".into());
    args.push(target.user.clone().unwrap_or_else(|| "git".into()));
    args.push("--".into());
    args.push(target.host.clone());
    args.push(format!("git-upload-pack {}", shell_quote(&target.path)));
    args
}

/// Reads OpenSSH's complaint and says what it means. Pure.
pub fn classify_ssh_failure(
    stderr: &str,
    settings: &Settings,
    target: &SshTarget,
) -> Option<Failure> {
    let name = target.known_hosts_name();
    let pinned = settings
        .ssh_known_hosts
        .as_ref()
        .map_or("the system known_hosts files".to_string(), |f| {
            f.display().to_string()
        });
    let host_key = |why: &str| {
        Some(Failure::HostKey(format!(
            "host key of {name} {why} {pinned}"
        )))
    };
    if stderr.contains("REVOKED HOST KEY") || stderr.contains("marked as revoked") {
        host_key("is revoked in")
    } else if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        host_key("does not match the key(s) listed in")
    } else if stderr.contains("host key is known for") {
        host_key("is for a host not listed in")
    } else if stderr.contains("Host key verification failed") {
        host_key("could not be verified against")
    } else if stderr.contains("Permission denied") {
        let key = match &settings.ssh_key_file {
            Some(k) => format!("the key in ssh_key_file {}", k.display()),
            None => "ssh's default identities (no ssh_key_file is configured)".to_string(),
        };
        Some(Failure::Auth(format!(
            "authentication failed: the server refused {key}"
        )))
    } else {
        None
    }
}

struct Ssh {
    current: Current,
    conn: Mutex<Option<Arc<Mutex<SshConn>>>>,
}

impl Ssh {
    fn new(current: Current) -> Self {
        Ssh {
            current,
            conn: Mutex::new(None),
        }
    }
}

impl SmartSubtransport for Ssh {
    fn action(
        &self,
        url: &str,
        service: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        fetch_only(service)?;
        let mut slot = lock(&self.conn);
        // Stateful protocol: the upload-pack after the ref listing continues the same session.
        if service == Service::UploadPack {
            if let Some(conn) = slot.as_ref() {
                return Ok(Box::new(SshStream { conn: conn.clone() }));
            }
        }
        let target = SshTarget::parse(url)
            .ok_or_else(|| git2::Error::from_str(&format!("{url}: not an ssh URL")))?;
        let conn = Arc::new(Mutex::new(SshConn::spawn(self.current.clone(), target)?));
        *slot = Some(conn.clone());
        Ok(Box::new(SshStream { conn }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        lock(&self.conn).take();
        Ok(())
    }
}

struct SshConn {
    current: Current,
    target: SshTarget,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl SshConn {
    fn spawn(current: Current, target: SshTarget) -> Result<Self, git2::Error> {
        let args = ssh_command(&current.settings, &target);
        let mut child = Command::new("ssh")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                git2::Error::from_str(&format!(
                    "starting ssh (the OpenSSH client, needed for ssh:// sources): {e}"
                ))
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::Builder::new()
            .name("bosun-ssh-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = err_pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut sink = lock(&sink);
                    let room = STDERR_LIMIT.saturating_sub(sink.len());
                    sink.extend_from_slice(&buf[..n.min(room)]);
                }
            })
            .map_err(|e| git2::Error::from_str(&format!("ssh stderr reader: {e}")))?;
        Ok(SshConn {
            current,
            target,
            child,
            stdin,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        })
    }

    /// The error to report once the connection broke: what ssh said, classified.
    fn failure(&mut self, cause: &str) -> io::Error {
        let status = self.child.wait().ok();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let stderr = String::from_utf8_lossy(&lock(&self.stderr)).into_owned();
        if let Some(failure) = classify_ssh_failure(&stderr, &self.current.settings, &self.target) {
            return self.current.fail(failure);
        }
        let said = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let status = status.map_or("did not exit".to_string(), |s| s.to_string());
        self.current
            .fail(Failure::Other(format!("ssh {cause} ({status}): {said}")))
    }
}

impl Drop for SshConn {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

/// A handle on the connection (libgit2 asks for a stream per service, over one session).
struct SshStream {
    conn: Arc<Mutex<SshConn>>,
}

impl Read for SshStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = lock(&self.conn);
        match conn.stdout.read(buf) {
            Ok(0) if !buf.is_empty() => {
                // The session ended: clean when ssh exits 0, otherwise say why it stopped.
                match conn.child.wait() {
                    Ok(status) if status.success() => Ok(0),
                    _ => Err(conn.failure("closed the connection")),
                }
            }
            Ok(n) => conn.current.count(n),
            Err(e) => Err(conn.failure(&format!("read failed: {e}"))),
        }
    }
}

impl Write for SshStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut conn = lock(&self.conn);
        let result = match conn.stdin.as_mut() {
            Some(stdin) => stdin.write_all(data).and_then(|()| stdin.flush()),
            None => Err(other("ssh stdin is closed")),
        };
        match result {
            Ok(()) => Ok(data.len()),
            Err(e) => Err(conn.failure(&format!("write failed: {e}"))),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Option<SshTarget> {
        Some(SshTarget {
            user: user.map(String::from),
            host: host.into(),
            port,
            path: path.into(),
        })
    }

    #[test]
    fn a_redirected_advertisement_names_the_new_repository_url() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            repository_base(&u(
                "https://git.example/org/new.git/info/refs?service=git-upload-pack"
            )),
            Some("https://git.example/org/new.git".to_string())
        );
        assert_eq!(
            repository_base(&u("https://git.example/login?next=/x")),
            None
        );
        assert_eq!(
            repository_base(&u("https://git.example/org/new.git/info/refs")),
            None
        );
    }

    #[test]
    fn ssh_urls_and_scp_like_paths() {
        assert_eq!(
            SshTarget::parse("ssh://git@example.org:2222/fleet.git"),
            t(Some("git"), "example.org", Some(2222), "/fleet.git")
        );
        assert_eq!(
            SshTarget::parse("ssh://[::1]:22/srv/fleet"),
            t(None, "::1", Some(22), "/srv/fleet")
        );
        assert_eq!(
            SshTarget::parse("git+ssh://h/~ops/fleet"),
            t(None, "h", None, "~ops/fleet")
        );
        assert_eq!(
            SshTarget::parse("git@example.org:org/fleet.git"),
            t(Some("git"), "example.org", None, "org/fleet.git")
        );
        assert_eq!(
            SshTarget::parse("[::1]:fleet"),
            t(None, "::1", None, "fleet")
        );
        for bad in [
            "https://h/x",
            "ssh://h",
            "ssh:///x",
            "ssh://h:port/x",
            "h:",
            ":x",
            "./a:b",
            "/srv/a:b",
        ] {
            assert_eq!(SshTarget::parse(bad), None, "{bad}");
        }
        assert_eq!(
            SshTarget::parse("ssh://h:2222/x")
                .unwrap()
                .known_hosts_name(),
            "[h]:2222"
        );
        assert_eq!(SshTarget::parse("h:x").unwrap().known_hosts_name(), "h");
    }

    #[test]
    fn the_remote_command_is_quoted_and_checking_is_strict() {
        let settings = Settings {
            ssh_key_file: Some("/etc/bosun/id".into()),
            ssh_known_hosts: Some("/etc/bosun/known_hosts".into()),
            ..Settings::default()
        };
        let target = SshTarget::parse("ssh://deploy@h:2222/srv/it's!").unwrap();
        let args = ssh_command(&settings, &target);
        assert_eq!(
            args.last().unwrap(),
            r"git-upload-pack '/srv/it'\''s'\!''",
            "{args:?}"
        );
        let joined = args.join(" ");
        for want in [
            "-F none",
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
            "-o UserKnownHostsFile=/etc/bosun/known_hosts",
            "-o GlobalKnownHostsFile=none",
            "-o IdentitiesOnly=yes",
            "-o IdentityFile=/etc/bosun/id",
            "-p 2222",
            "-l deploy -- h",
        ] {
            assert!(joined.contains(want), "{want} missing from {joined}");
        }
        let plain = ssh_command(&Settings::default(), &SshTarget::parse("h:x").unwrap()).join(" ");
        assert!(
            plain.contains("-l git -- h") && !plain.contains("IdentityFile"),
            "{plain}"
        );
        assert!(!plain.contains("KnownHostsFile"), "{plain}");
    }

    #[test]
    fn openssh_complaints_are_named() {
        let settings = Settings {
            ssh_known_hosts: Some("/k".into()),
            ..Settings::default()
        };
        let target = SshTarget::parse("ssh://h:2222/x").unwrap();
        let c = |s: &str| classify_ssh_failure(s, &settings, &target);
        assert_eq!(
            c("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n"),
            Some(Failure::HostKey(
                "host key of [h]:2222 does not match the key(s) listed in /k".into()
            ))
        );
        assert_eq!(
            c("No ED25519 host key is known for [h]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n"),
            Some(Failure::HostKey("host key of [h]:2222 is for a host not listed in /k".into()))
        );
        assert_eq!(
            c("@@@ WARNING: REVOKED HOST KEY DETECTED! @@@\nHost key verification failed.\n"),
            Some(Failure::HostKey(
                "host key of [h]:2222 is revoked in /k".into()
            ))
        );
        assert!(matches!(
            c("git@h: Permission denied (publickey)."),
            Some(Failure::Auth(m)) if m.contains("no ssh_key_file")
        ));
        assert_eq!(
            c("ssh: connect to host h port 2222: Connection refused"),
            None
        );
    }
}
