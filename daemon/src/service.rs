//! The connection to the service manager (systemd): `READY=1`, `STATUS=`, `STOPPING=1` and
//! watchdog keepalives, through `sd-notify`. Without `NOTIFY_SOCKET` every call is a no-op.

use std::future::Future;
use std::time::Duration;

use tracing::debug;

/// The service manager connection: `NOTIFY_SOCKET` and the watchdog period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Systemd {
    notify: bool,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this process.
    ping_every: Option<Duration>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (which, when set, must be this
    /// process, as `sd_watchdog_enabled` requires).
    pub fn from_env() -> Self {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let ping_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok && notify)
            .map(|u| Duration::from_micros(u / 2));
        Systemd { notify, ping_every }
    }

    /// Sends `states` (no-op without `NOTIFY_SOCKET`; a failure is logged at debug level).
    pub fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        if self.notify {
            if let Err(e) = sd_notify::notify(states) {
                debug!("sd_notify: {e}");
            }
        }
    }

    /// Sends `STATUS=`.
    pub fn status(&self, text: &str) {
        self.send(&[sd_notify::NotifyState::Status(text)]);
    }

    /// Awaits `fut`, sending `WATCHDOG=1` keepalives meanwhile (a step may take long, e.g. a
    /// slow fetch; it is bounded by the source's and runner's timeouts).
    pub async fn guard<F: Future>(self, fut: F) -> F::Output {
        let Some(every) = self.ping_every else {
            return fut.await;
        };
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tick.tick() => self.send(&[sd_notify::NotifyState::Watchdog]),
            }
        }
    }
}

impl Systemd {
    /// How often the watchdog wants a keepalive (half of `WATCHDOG_USEC`), when it is on.
    pub fn ping_every(&self) -> Option<Duration> {
        self.ping_every
    }

    /// Sends `READY=1` with the first status line.
    pub fn ready(&self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    /// Sends one `WATCHDOG=1` keepalive.
    pub fn ping(&self) {
        self.send(&[sd_notify::NotifyState::Watchdog]);
    }

    /// Sends `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(&[sd_notify::NotifyState::Stopping]);
    }
}
