//! Git fixtures for integration tests: a real `git daemon` on 127.0.0.1, work repos with commit
//! helpers (plain, SSH-signed, OpenPGP-signed), and signature tampering.
//!
//! Every git command runs with `GIT_CONFIG_GLOBAL=/dev/null`, `GIT_CONFIG_NOSYSTEM=1` and an
//! explicit author/committer, so the host's git configuration never leaks into a test.
#![allow(dead_code)] // Shared by several test modules; not each uses every helper.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AUTHOR_NAME: &str = "Bosun Test";
pub const AUTHOR_EMAIL: &str = "test@example.invalid";

/// A `git` command with the host configuration shut out.
pub fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    isolate(&mut cmd).current_dir(dir);
    cmd
}

/// Shuts the host's git configuration and identity out of `cmd`.
pub fn isolate(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
}

/// Runs a command, panics with its stderr on failure, returns trimmed stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `git args…` in `dir`.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run(git_cmd(dir).args(args))
}

/// Runs `git args…` in `dir` with `input` on stdin.
pub fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = git_cmd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn git");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it right away).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A real `git daemon` serving every repository under `base` on 127.0.0.1. Killed on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
    pub base: PathBuf,
}

impl GitDaemon {
    /// Starts `git daemon --export-all --base-path=BASE` and waits until its port accepts.
    pub fn start(base: &Path) -> GitDaemon {
        Self::start_on(base, free_port())
    }

    /// Starts `git daemon` on a given port (e.g. the port of one that was killed, to bring a
    /// remote back at the same URL).
    pub fn start_on(base: &Path, port: u16) -> GitDaemon {
        // Run git-daemon itself, not the `git daemon` wrapper: killing the wrapper would
        // orphan the real daemon, which keeps listening.
        let exec_path = git(base, &["--exec-path"]);
        let mut cmd = Command::new(Path::new(&exec_path).join("git-daemon"));
        let child = isolate(&mut cmd)
            .current_dir(base)
            .env("GIT_EXEC_PATH", &exec_path)
            .args([
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                "--export-all",
                "--reuseaddr",
                "--informative-errors",
                &format!("--base-path={}", base.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn git daemon");
        let mut daemon = GitDaemon {
            child,
            port,
            base: base.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("git daemon exited early ({status}); port {port} taken?");
            }
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        daemon
    }

    /// `git://127.0.0.1:PORT/NAME` for a repository directory `BASE/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A non-bare work repository on branch `main` (served as-is by `git daemon` or `file://`).
pub struct WorkRepo {
    pub dir: PathBuf,
}

impl WorkRepo {
    /// `git init -b main` in `dir` (created).
    pub fn init(dir: &Path) -> WorkRepo {
        std::fs::create_dir_all(dir).expect("create repo dir");
        git(dir, &["init", "-q", "-b", "main"]);
        WorkRepo {
            dir: dir.to_path_buf(),
        }
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Writes a file (parents created).
    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
        std::fs::write(&path, content).expect("write file");
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.dir.join(rel)).expect("remove file");
        self
    }

    /// Commits everything (unsigned); returns the commit id.
    pub fn commit(&self, msg: &str) -> String {
        self.commit_with(&[], false, msg)
    }

    /// Commits everything signed with an SSH private key file.
    pub fn commit_ssh_signed(&self, key: &Path, msg: &str) -> String {
        let signingkey = format!("user.signingkey={}", key.display());
        self.commit_with(&["-c", "gpg.format=ssh", "-c", &signingkey], true, msg)
    }

    /// Commits everything signed with the OpenPGP key `uid` of `gpg`'s home.
    pub fn commit_gpg_signed(&self, gpg: &GpgHome, uid: &str, msg: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        let signingkey = format!("user.signingkey={uid}");
        run(git_cmd(&self.dir).env("GNUPGHOME", &gpg.home).args([
            "-c",
            "gpg.program=gpg",
            "-c",
            &signingkey,
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            msg,
        ]));
        self.head()
    }

    fn commit_with(&self, config: &[&str], sign: bool, msg: &str) -> String {
        git(&self.dir, &["add", "-A"]);
        let mut args: Vec<&str> = config.to_vec();
        args.extend(["commit", "-q", "--allow-empty"]);
        if sign {
            args.push("-S");
        }
        args.extend(["-m", msg]);
        git(&self.dir, &args);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    /// `git reset --hard REV` on `main`: what a force-push to an older commit looks like to
    /// a fetcher.
    pub fn reset_hard(&self, rev: &str) {
        git(&self.dir, &["reset", "-q", "--hard", rev]);
    }

    /// Writes a copy of `commit` whose message is replaced but whose signature header is
    /// kept, and points `main` at it. Returns the new id (a commit with a stale signature).
    pub fn tamper_message(&self, commit: &str, new_message: &str) -> String {
        let raw = git(&self.dir, &["cat-file", "commit", commit]);
        let (headers, _old) = raw.split_once("\n\n").expect("commit has a message");
        let forged = format!("{headers}\n\n{new_message}\n");
        let id = git_stdin(
            &self.dir,
            &["hash-object", "-t", "commit", "-w", "--stdin"],
            forged.as_bytes(),
        );
        git(&self.dir, &["update-ref", "refs/heads/main", &id]);
        git(&self.dir, &["reset", "-q", "--hard", &id]);
        id
    }

    /// Adds a `gpgsig` header holding `armored` to the (unsigned) `commit`, writes it and points
    /// `main` at it. Returns the new id.
    pub fn attach_signature(&self, commit: &str, armored: &str) -> String {
        let raw = git(&self.dir, &["cat-file", "commit", commit]);
        let (headers, message) = raw.split_once("\n\n").expect("commit has a message");
        let sig = armored.trim_end().replace('\n', "\n ");
        let forged = format!("{headers}\ngpgsig {sig}\n\n{message}\n");
        let id = git_stdin(
            &self.dir,
            &["hash-object", "-t", "commit", "-w", "--stdin"],
            forged.as_bytes(),
        );
        git(&self.dir, &["update-ref", "refs/heads/main", &id]);
        git(&self.dir, &["reset", "-q", "--hard", &id]);
        id
    }

    /// The exact bytes git signs for `commit` (the commit object without a signature).
    pub fn payload(&self, commit: &str) -> String {
        format!("{}\n", git(&self.dir, &["cat-file", "commit", commit]))
    }
}

/// An ed25519 SSH key pair made by `ssh-keygen` in `dir`.
pub struct SshKey {
    pub private: PathBuf,
    /// `ssh-ed25519 AAAA… comment`
    pub public: String,
}

impl SshKey {
    pub fn generate(dir: &Path, name: &str) -> SshKey {
        let private = dir.join(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private));
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .expect("read public key")
            .trim()
            .to_string();
        SshKey { private, public }
    }

    /// `principals keytype base64` line for an allowed signers file.
    pub fn allowed_signers_line(&self, principals: &str) -> String {
        let mut parts = self.public.split_whitespace();
        let kind = parts.next().unwrap();
        let b64 = parts.next().unwrap();
        format!("{principals} {kind} {b64}")
    }

    /// Signs `data` with `ssh-keygen -Y sign -n NAMESPACE`; returns the armored signature.
    pub fn sign(&self, namespace: &str, data: &[u8]) -> String {
        let mut child = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
            .arg(&self.private)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssh-keygen");
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen -Y sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A throwaway GnuPG home (`GNUPGHOME`) with keys made by `gpg --quick-gen-key`. Its agent is
/// stopped on drop.
pub struct GpgHome {
    pub home: PathBuf,
}

impl GpgHome {
    pub fn new(dir: &Path) -> GpgHome {
        // Short path: gpg-agent's socket path must fit in sockaddr_un.
        std::fs::create_dir_all(dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        GpgHome {
            home: dir.to_path_buf(),
        }
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home)
            .args(["--batch", "--quiet"]);
        cmd
    }

    /// Creates an ed25519 signing key for `uid` (e.g. `Test <t@example.invalid>`) with no
    /// passphrase. Returns its fingerprint (upper-case hex).
    pub fn generate(&self, uid: &str) -> String {
        run(self.gpg().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]));
        let listing = run(self.gpg().args(["--with-colons", "--list-keys", uid]));
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
            .expect("fingerprint in gpg listing")
            .to_string()
    }

    /// Adds an ed25519 signing subkey to the key `fpr`. Returns the subkey's fingerprint.
    pub fn add_signing_subkey(&self, fpr: &str) -> String {
        run(self.gpg().args([
            "--passphrase",
            "",
            "--quick-add-key",
            fpr,
            "ed25519",
            "sign",
            "never",
        ]));
        let listing = run(self.gpg().args(["--with-colons", "--list-keys", fpr]));
        // Lines: pub, fpr (primary), uid, sub, fpr (subkey): take the fpr after the last sub.
        let mut after_sub = false;
        let mut sub_fpr = None;
        for line in listing.lines() {
            if line.starts_with("sub:") {
                after_sub = true;
            } else if after_sub && line.starts_with("fpr:") {
                sub_fpr = line.split(':').find(|f| f.len() >= 40).map(str::to_string);
                after_sub = false;
            }
        }
        sub_fpr.expect("subkey fingerprint in gpg listing")
    }

    /// The armored public key of `uid`.
    pub fn export(&self, uid: &str) -> String {
        run(self.gpg().args(["--armor", "--export", uid]))
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Pack files in a bare repository's object store (to show that a poll downloaded nothing).
pub fn pack_files(bare: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bare.join("objects/pack"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A real OpenSSH server on 127.0.0.1 serving git over `ssh://` to one client key, for the
/// current user (repos are addressed by absolute path). Killed on drop.
pub struct SshServer {
    child: Child,
    pub port: u16,
    pub user: String,
    /// Private key the server accepts.
    pub client_key: PathBuf,
    /// `ssh-ed25519 AAAA…` of the server's host key.
    pub host_key_public: String,
}

impl SshServer {
    pub fn start(dir: &Path) -> SshServer {
        std::fs::create_dir_all(dir).unwrap();
        let host = SshKey::generate(dir, "host_key");
        let client = SshKey::generate(dir, "client_key");
        std::fs::write(dir.join("authorized_keys"), format!("{}\n", client.public)).unwrap();
        let user = run(Command::new("id").arg("-un"));
        // sshd running as root wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\n\
             LogLevel ERROR\n",
            host = host.private.display(),
            auth = dir.join("authorized_keys").display(),
        );
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /usr/sbin/sshd (package openssh-server)");
        let mut server = SshServer {
            child,
            port,
            user,
            client_key: client.private,
            host_key_public: host
                .public
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("sshd exited early ({status})");
            }
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    /// `ssh://USER@127.0.0.1:PORT/ABS/PATH`.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// The known_hosts line pinning this server's host key.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key_public)
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real smart-HTTP git server on 127.0.0.1: axum in front of `git http-backend` (CGI), with
/// HTTP Basic auth against one username/token, over plain HTTP or HTTPS (rustls). Counts
/// rejected (401) requests. Stopped on drop.
pub struct GitHttpServer {
    pub port: u16,
    scheme: &'static str,
    pub rejected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Requests other than GET sent to a `/moved-NAME/…` URL (a client that lost track of
    /// the redirect).
    pub moved_posts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct HttpState {
    base: PathBuf,
    expected_auth: String,
    rejected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    moved_posts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl GitHttpServer {
    /// Serves every repository under `base` at `http://127.0.0.1:PORT/NAME`.
    pub fn start(base: &Path, user: &str, token: &str) -> GitHttpServer {
        Self::spawn(base, user, token, None)
    }

    /// Serves every repository under `base` at `https://127.0.0.1:PORT/NAME`.
    pub fn start_tls(
        base: &Path,
        user: &str,
        token: &str,
        tls: std::sync::Arc<rustls::ServerConfig>,
    ) -> GitHttpServer {
        Self::spawn(base, user, token, Some(tls))
    }

    fn spawn(
        base: &Path,
        user: &str,
        token: &str,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> GitHttpServer {
        use base64::Engine;
        let rejected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let moved_posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let state = std::sync::Arc::new(HttpState {
            base: base.to_path_buf(),
            expected_auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
            ),
            rejected: rejected.clone(),
            moved_posts: moved_posts.clone(),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let app = axum::Router::new().fallback(cgi).with_state(state);
                let server = match tls {
                    Some(config) => super::tls::serve_https(config, app).await,
                    None => super::tls::serve_http(app).await,
                };
                port_tx.send(server.addr.port()).expect("report port");
                let _ = rx.await;
                drop(server);
            });
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("git http server started");
        wait_for_port(port, Duration::from_secs(10));
        GitHttpServer {
            port,
            scheme,
            rejected,
            moved_posts,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/{name}", self.scheme, self.port)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn cgi(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<HttpState>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    // `/moved-NAME/…` is a repository that moved to `/NAME/…` (as a renamed GitHub repo).
    if let Some(rest) = req.uri().path().strip_prefix("/moved-") {
        if req.method() != axum::http::Method::GET {
            state
                .moved_posts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let location = format!("/{rest}{query}");
        return (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, HeaderValue::from_str(&location).unwrap())],
        )
            .into_response();
    }
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == state.expected_auth.as_bytes());
    if !authorized {
        state
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut resp = (StatusCode::UNAUTHORIZED, "token required").into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"bosun-test\""),
        );
        return resp;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .expect("request body");
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let git_protocol = parts
        .headers
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let base = state.base.clone();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("git");
        isolate(&mut cmd);
        let mut child = cmd
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &base)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", content_type)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("GIT_PROTOCOL", git_protocol)
            .env("REMOTE_USER", "bosun")
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn git http-backend");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let out = child.wait_with_output().expect("git http-backend");
        let _ = writer.join();
        out.stdout
    })
    .await
    .expect("join http-backend");
    // CGI response: headers, blank line, body.
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        return (StatusCode::BAD_GATEWAY, "malformed CGI output").into_response();
    };
    let head = String::from_utf8_lossy(&output[..at]).to_string();
    let mut resp =
        axum::response::Response::new(axum::body::Body::from(output[at + sep..].to_vec()));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok());
            if let Some(code) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                *resp.status_mut() = code;
            }
        } else if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}
