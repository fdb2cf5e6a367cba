//! Test fakes, for bosun's own tests and integration tests: never used on a production code
//! path. [`RecordingRunner`] scripts command answers; [`ManualClock`] is virtual time.
//!
//! (The installer for local image paths, `upgrade::actor::LocalCopyInstaller`, is not a fake:
//! the streaming installer uses it for images given as absolute paths.)

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::runner::{CommandOutput, CommandRunner, RunError};

/// One scripted answer of a [`RecordingRunner`].
pub enum Scripted {
    /// The command ran and gave this output.
    Output(CommandOutput),
    /// The command could not be run (spawn failure, timeout).
    Error(RunError),
}

impl fmt::Debug for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scripted::Output(o) => f.debug_tuple("Output").field(o).finish(),
            Scripted::Error(e) => f.debug_tuple("Error").field(&e.to_string()).finish(),
        }
    }
}

/// Records every argv it is asked to run and runs nothing.
///
/// Answers, in order of precedence: the next queued answer ([`RecordingRunner::push`]), else
/// the first rule whose argv prefix matches ([`RecordingRunner::on`]), else exit status 0.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    calls: Mutex<Vec<Vec<String>>>,
    queue: Mutex<VecDeque<Scripted>>,
    rules: Mutex<Vec<(Vec<String>, CommandOutput)>>,
}

impl RecordingRunner {
    /// A runner that answers exit status 0 to everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `output` to every argv starting with `prefix` (a persistent rule).
    pub fn on<S: AsRef<str>>(self, prefix: &[S], output: CommandOutput) -> Self {
        let prefix = prefix.iter().map(|s| s.as_ref().to_string()).collect();
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((prefix, output));
        self
    }

    /// Queues a one-shot answer for the next call (FIFO), whatever its argv.
    pub fn push(&self, answer: Scripted) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(answer);
    }

    /// Every argv run so far, in call order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CommandRunner for RecordingRunner {
    /// Records `argv`; no side effects on the system.
    fn run(&self, argv: &[String]) -> Result<CommandOutput, RunError> {
        if argv.is_empty() {
            return Err(RunError::EmptyArgv);
        }
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(argv.to_vec());
        if let Some(answer) = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            return match answer {
                Scripted::Output(o) => Ok(o),
                Scripted::Error(e) => Err(e),
            };
        }
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        Ok(rules
            .iter()
            .find(|(prefix, _)| argv.starts_with(prefix))
            .map(|(_, out)| out.clone())
            .unwrap_or_else(CommandOutput::ok))
    }
}

/// Virtual time: starts at the moment it is created, and only moves when [`ManualClock::advance`]
/// or `sleep` is called (sleep returns at once after advancing).
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock at the current instant that moves only when advanced.
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves virtual time forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner()) += d;
    }

    /// Virtual time passed since creation.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.advance(d);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recording_runner_records_and_answers_queue_then_rules_then_success() {
        let r = RecordingRunner::new().on(&["systemctl", "is-active"], CommandOutput::exit(3));
        r.push(Scripted::Output(CommandOutput::exit(7)));
        assert_eq!(
            r.run(&argv(&["modprobe", "br_netfilter"])).unwrap().code,
            Some(7)
        );
        assert_eq!(
            r.run(&argv(&["systemctl", "is-active", "--quiet", "k3s"]))
                .unwrap()
                .code,
            Some(3)
        );
        assert!(r
            .run(&argv(&["systemctl", "restart", "k3s"]))
            .unwrap()
            .success());
        assert_eq!(
            r.calls(),
            vec![
                argv(&["modprobe", "br_netfilter"]),
                argv(&["systemctl", "is-active", "--quiet", "k3s"]),
                argv(&["systemctl", "restart", "k3s"]),
            ]
        );
    }
}
