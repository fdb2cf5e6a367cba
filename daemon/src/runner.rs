//! The command-runner seam: every external program bosun starts (`systemctl`, `modprobe`,
//! `sysctl`, `reboot`, health-check commands) goes through [`CommandRunner`].
//!
//! Two implementations:
//! - [`SystemRunner`] really spawns the program (no shell), captures stdout/stderr and kills the
//!   whole process group when the timeout expires.
//! - [`DryRunner`] runs nothing: bosun uses it when `--root` is not `/` (effects on the live
//!   system are recorded, logged and reported, never run). It answers success to everything.
//!
//! Tests script answers with `crate::testing::RecordingRunner`, which is not part of any
//! production code path. Which runner a command of bosun gets, and with which timeout, is
//! decided in one place: [`crate::node`].
//!
//! Invariants: argv is passed verbatim (`argv[0]` is the program, looked up in `PATH`); an empty
//! argv is an error, never a no-op; a runner never returns before the child is reaped.

use std::io;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// Exit code; `None` when the process was ended by a signal.
    pub code: Option<i32>,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// An output with the given exit code and no captured text.
    pub fn exit(code: i32) -> Self {
        CommandOutput {
            code: Some(code),
            ..Default::default()
        }
    }

    /// Exit code 0 with no captured text.
    pub fn ok() -> Self {
        CommandOutput::exit(0)
    }

    /// Adds captured stderr (builder style, for scripting `crate::testing::RecordingRunner`).
    pub fn with_stderr(mut self, stderr: impl Into<Vec<u8>>) -> Self {
        self.stderr = stderr.into();
        self
    }

    /// Adds captured stdout (builder style, for scripting `crate::testing::RecordingRunner`).
    pub fn with_stdout(mut self, stdout: impl Into<Vec<u8>>) -> Self {
        self.stdout = stdout.into();
        self
    }

    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Human-readable exit status: `exit status 3` or `killed by a signal`.
    pub fn status_text(&self) -> String {
        match self.code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        }
    }
}

/// Why a command could not be run to completion. Every variant names the command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The argv was empty (a caller bug).
    #[error("cannot run an empty command line")]
    EmptyArgv,
    /// The process could not be started (no such program, no permission).
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line, as [`display_argv`] shows it.
        command: String,
        /// The spawn error.
        #[source]
        source: io::Error,
    },
    /// The command ran longer than its timeout; its whole process group was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    TimedOut {
        /// The command line.
        command: String,
        /// The timeout it exceeded.
        timeout: Duration,
    },
    /// Waiting for the process or reading its output failed.
    #[error("waiting for `{command}` failed: {source}")]
    Wait {
        /// The command line.
        command: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Runs external programs. Implementations must be usable from several threads.
pub trait CommandRunner: Send + Sync {
    /// Runs `argv` (no shell) to completion and returns its output. A non-zero exit is an
    /// `Ok` output, not an error. Side effects: whatever the program does (for
    /// [`SystemRunner`]); none for [`DryRunner`].
    fn run(&self, argv: &[String]) -> Result<CommandOutput, RunError>;
}

/// Renders argv for messages: words joined by spaces, words with spaces or quotes quoted.
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Spawns real processes with `std::process`, each in its own process group, killed (with the
/// whole group) after `timeout`.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    timeout: Duration,
}

impl SystemRunner {
    /// Default per-command timeout: long enough for `systemctl restart k3s`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

    /// A runner killing each command (and its process group) after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        SystemRunner { timeout }
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Default for SystemRunner {
    fn default() -> Self {
        SystemRunner::new(Self::DEFAULT_TIMEOUT)
    }
}

impl CommandRunner for SystemRunner {
    /// Spawns the program (side effects: whatever it does). Stdin is `/dev/null`.
    fn run(&self, argv: &[String]) -> Result<CommandOutput, RunError> {
        use std::os::unix::process::CommandExt;

        let (program, args) = argv.split_first().ok_or(RunError::EmptyArgv)?;
        let command = display_argv(argv);
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so a timeout kills grandchildren (`sh -c ...`) too.
            .process_group(0)
            .spawn()
            .map_err(|source| RunError::Spawn {
                command: command.clone(),
                source,
            })?;
        let pid = child.id();

        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("bosun-cmd-wait".into())
            .spawn(move || {
                // Reads both pipes to EOF and reaps the child.
                let _ = tx.send(child.wait_with_output());
            })
            .map_err(|source| RunError::Spawn {
                command: command.clone(),
                source,
            })?;

        let (result, timed_out) = match rx.recv_timeout(self.timeout) {
            Ok(result) => (result, false),
            Err(_) => {
                // The waiter still holds the unreaped child, so the group id is still ours.
                if let Some(pgid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ =
                        rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                }
                match rx.recv() {
                    Ok(result) => (result, true),
                    Err(_) => {
                        return Err(RunError::Wait {
                            command,
                            source: io::Error::other("waiter thread vanished"),
                        })
                    }
                }
            }
        };
        let output = result.map_err(|source| RunError::Wait {
            command: command.clone(),
            source,
        })?;
        if timed_out {
            return Err(RunError::TimedOut {
                command,
                timeout: self.timeout,
            });
        }
        Ok(CommandOutput {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

/// Runs nothing: with a root other than `/`, effects on the live system are only recorded (for
/// the caller's report) and logged. Answers exit status 0 to every non-empty argv.
#[derive(Debug, Default)]
pub struct DryRunner {
    calls: Mutex<Vec<Vec<String>>>,
}

impl DryRunner {
    /// A runner that runs nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every argv it was asked to run, in call order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CommandRunner for DryRunner {
    /// Records and logs `argv`; no side effects on the system.
    fn run(&self, argv: &[String]) -> Result<CommandOutput, RunError> {
        if argv.is_empty() {
            return Err(RunError::EmptyArgv);
        }
        tracing::info!("not run (root is not /): {}", display_argv(argv));
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(argv.to_vec());
        Ok(CommandOutput::ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_argv_is_an_error_for_both_runners() {
        assert!(matches!(
            DryRunner::new().run(&[]),
            Err(RunError::EmptyArgv)
        ));
        assert!(matches!(
            SystemRunner::default().run(&[]),
            Err(RunError::EmptyArgv)
        ));
    }

    #[test]
    fn display_argv_quotes_words_with_spaces() {
        assert_eq!(
            display_argv(&argv(&["sh", "-c", "echo it's"])),
            "sh -c 'echo it'\\''s'"
        );
    }
}
