//! The daemon's persisted status: `<state_dir>/status.json`, written atomically after every
//! poll and correction, read by `bosun status`.
//!
//! It is also where the daemon remembers the last applied commit across restarts, which
//! anti-rollback needs: a status file that exists but cannot be parsed is an error (fail
//! closed), never "nothing was applied".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::utc_rfc3339;
use crate::metrics::{Metrics, ReconcileResult};
use crate::statefile;

/// File name inside the state dir.
pub const STATUS_FILE: &str = "status.json";
const VERSION: u32 = 1;

/// What the daemon last did. Timestamps are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// Status file format version (1).
    pub version: u32,
    /// The node name the daemon applies for.
    pub node_name: String,
    /// The config repo URL.
    pub source_url: String,
    /// The configured branch, tag or commit.
    pub reference: String,
    /// The commit whose files are on disk (anti-rollback baseline).
    pub last_applied_commit: Option<String>,
    /// Who signed it (`None` when verification is off).
    pub signer: Option<String>,
    /// When that commit was first applied.
    pub last_applied_at: Option<u64>,
    /// The last poll that ended in a decision (applied, no-op or refused).
    pub last_success_at: Option<u64>,
    /// The last error (fetch, config, apply); cleared by the next success.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<u64>,
    /// The last refused commit and why.
    pub last_refusal: Option<String>,
    /// Refusals since the state dir was created.
    pub refused_total: u64,
    /// Files reverted after manual changes, since the state dir was created.
    pub drift_corrections_total: u64,
    /// Warnings in the applied config (unknown keys, k3os leniencies such as a skipped
    /// placeholder ssh key; `bosun validate` lists them).
    pub config_warnings: u64,
    /// When the next poll is due.
    pub next_poll_at: Option<u64>,
    /// Ref-advertisement reads (polls) of this daemon run.
    pub polls: u64,
    /// Fetches that downloaded a pack, this run.
    pub pack_fetches: u64,
    /// Pack bytes downloaded, this run.
    pub fetch_bytes: u64,
    /// What a health wait in progress judges (`commit abc…` or `the trial boot`).
    pub health_wait: Option<String>,
    /// When that wait gives up (Unix seconds).
    pub health_wait_until: Option<u64>,
    /// The rollout gate the node waits at (`idle`, `waiting-wave`, `waiting-window`,
    /// `waiting-lock`, `draining`, `trial`, `halted`, `backoff`).
    pub rollout_state: Option<String>,
    /// Why (the lock's holders, a coordination error), when known.
    pub rollout_detail: Option<String>,
    /// The change waiting for the gates: what it needs and the commit that introduced it.
    pub rollout_change: Option<String>,
}

/// Why the status file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The status file exists but cannot be read.
    #[error("status file {}: {source}", path.display())]
    Read {
        /// The status file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The status file is not valid status JSON; it holds the anti-rollback baseline, so bosun
    /// stops instead of guessing.
    #[error("status file {}: not valid status JSON ({message}); it records the last applied commit for anti-rollback, so bosun will not guess: fix or remove it", path.display())]
    Corrupt {
        /// The status file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
    /// Writing the status file atomically failed.
    #[error(transparent)]
    Write(#[from] statefile::StateFileError),
}

impl Status {
    /// A fresh status for a node.
    pub fn new(node_name: &str, url: &str, reference: &str) -> Self {
        Status {
            version: VERSION,
            node_name: node_name.into(),
            source_url: url.into(),
            reference: reference.into(),
            ..Default::default()
        }
    }

    /// Human-readable summary (pure; `now` in Unix seconds). Times are RFC 3339 UTC with their
    /// distance from `now` (`n s ago`, `in n s`).
    pub fn render_text(&self, now: u64) -> String {
        let ago = |t: Option<u64>| match t {
            Some(t) if t <= now => format!("{} ({} s ago)", utc_rfc3339(t), now - t),
            Some(t) => format!("{} (in {} s)", utc_rfc3339(t), t - now),
            None => "never".into(),
        };
        let mut out = String::new();
        out.push_str(&format!("node:            {}\n", self.node_name));
        out.push_str(&format!(
            "source:          {} ({})\n",
            self.source_url, self.reference
        ));
        out.push_str(&format!(
            "applied commit:  {}\n",
            self.last_applied_commit.as_deref().unwrap_or("none")
        ));
        out.push_str(&format!(
            "signer:          {}\n",
            self.signer.as_deref().unwrap_or("(not verified)")
        ));
        out.push_str(&format!("applied at:      {}\n", ago(self.last_applied_at)));
        out.push_str(&format!("last success:    {}\n", ago(self.last_success_at)));
        if let Some(e) = &self.last_error {
            out.push_str(&format!(
                "last error:      {e} (at {})\n",
                ago(self.last_error_at)
            ));
        }
        if let Some(w) = &self.health_wait {
            let left = self.health_wait_until.map(|t| t.saturating_sub(now));
            out.push_str(&format!(
                "health wait:     {w} ({} s left)\n",
                left.map_or("?".to_string(), |l| l.to_string())
            ));
        }
        if let Some(r) = &self.rollout_state {
            let change = self.rollout_change.as_deref().unwrap_or("nothing pending");
            out.push_str(&format!("rollout:         {r} ({change})\n"));
            if let Some(d) = &self.rollout_detail {
                out.push_str(&format!("rollout detail:  {d}\n"));
            }
        }
        if let Some(r) = &self.last_refusal {
            out.push_str(&format!("last refusal:    {r}\n"));
        }
        out.push_str(&format!("refused:         {}\n", self.refused_total));
        out.push_str(&format!(
            "drift corrected: {}\n",
            self.drift_corrections_total
        ));
        if self.config_warnings > 0 {
            out.push_str(&format!(
                "config warnings: {} (in the applied config; `bosun validate` lists them)\n",
                self.config_warnings
            ));
        }
        if let Some(n) = self.next_poll_at {
            out.push_str(&format!("next poll:       {}\n", ago(Some(n))));
        }
        out.push_str(&format!(
            "polls:           {} ({} pack fetches, {} bytes)\n",
            self.polls, self.pack_fetches, self.fetch_bytes
        ));
        out
    }
}

/// Path of the status file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATUS_FILE)
}

/// Reads the status; `Ok(None)` when the file does not exist. Reads the disk.
pub fn read(state_dir: &Path) -> Result<Option<Status>, StatusError> {
    let p = path(state_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StatusError::Read { path: p, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StatusError::Corrupt {
            path: p,
            message: e.to_string(),
        })
}

/// Writes the status atomically (mode 0644: it holds no secrets). Writes to disk.
pub fn write(state_dir: &Path, status: &Status) -> Result<(), StatusError> {
    let mut bytes = serde_json::to_vec_pretty(status).unwrap_or_default();
    bytes.push(b'\n');
    statefile::write_atomic(&path(state_dir), &bytes, 0o644)?;
    Ok(())
}

/// The daemon's account of what it did: the persisted [`Status`] and the Prometheus
/// [`Metrics`], always updated together so `bosun status` and `/metrics` agree.
#[derive(Debug)]
pub struct Ledger {
    state_dir: PathBuf,
    /// What `status.json` holds (written by [`Ledger::save`]).
    pub status: Status,
    /// The counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// The first 12 characters of a commit id (or the whole text when shorter).
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

impl Ledger {
    /// A ledger for a daemon writing its status into `state_dir`.
    pub fn new(state_dir: &Path, status: Status, metrics: Arc<Metrics>) -> Self {
        Ledger {
            state_dir: state_dir.to_path_buf(),
            status,
            metrics,
        }
    }

    /// The short id of the applied commit, or `nothing`.
    pub fn applied_text(&self) -> String {
        self.status
            .last_applied_commit
            .as_deref()
            .map(short)
            .unwrap_or("nothing")
            .to_string()
    }

    /// Takes over what a previous run persisted: the applied commit (the anti-rollback
    /// baseline), its signer and time, and the totals.
    pub fn restore(&mut self, previous: Status) {
        if let Some(c) = &previous.last_applied_commit {
            self.metrics.set_applied_commit(c);
        }
        self.status.last_applied_commit = previous.last_applied_commit;
        self.status.signer = previous.signer;
        self.status.last_applied_at = previous.last_applied_at;
        self.status.refused_total = previous.refused_total;
        self.config_warnings(previous.config_warnings);
        self.status.drift_corrections_total = previous.drift_corrections_total;
    }

    /// A poll ended in a decision: stamps the success, clears the last error.
    pub fn succeeded(&mut self, now: u64) {
        self.status.last_success_at = Some(now);
        self.status.last_error = None;
        self.status.last_error_at = None;
    }

    /// Counts a reconcile decision (`bosun_reconcile_total`).
    pub fn reconciled(&self, result: ReconcileResult, now: u64) {
        self.metrics.reconcile(result, now);
    }

    /// Records `what` as the last error and counts an error decision.
    pub fn error(&mut self, what: &str, now: u64) {
        self.metrics.reconcile(ReconcileResult::Error, now);
        self.status.last_error = Some(what.to_string());
        self.status.last_error_at = Some(now);
    }

    /// Records that `commit` is applied; `first` when it was not applied before.
    pub fn applied(&mut self, commit: &str, signer: Option<String>, first: bool, now: u64) {
        if first {
            self.status.last_applied_at = Some(now);
            self.status.signer = signer;
        }
        self.status.last_applied_commit = Some(commit.to_string());
        self.metrics.set_applied_commit(commit);
    }

    /// Records a refusal (`text`); `first` counts it (once per commit and reason).
    pub fn refused(&mut self, label: &'static str, text: String, first: bool, now: u64) {
        if first {
            self.metrics.refused(label);
            self.status.refused_total += 1;
        }
        self.status.last_refusal = Some(text);
        self.status.last_success_at = Some(now);
    }

    /// Records how many warnings the applied config has (status and gauge).
    pub fn config_warnings(&mut self, count: u64) {
        self.metrics.set_config_warnings(count);
        self.status.config_warnings = count;
    }

    /// Counts `files` reverted after manual changes.
    pub fn drift_corrected(&mut self, files: u64) {
        self.metrics.drift_corrected(files);
        self.status.drift_corrections_total += files;
    }

    /// Writes `status.json` with the transfer totals of this run (atomically); a failure is
    /// logged, never fatal. Writes to disk.
    pub fn save(&mut self) {
        let t = self.metrics.transfer.totals();
        self.status.polls = t.polls;
        self.status.pack_fetches = t.pack_fetches;
        self.status.fetch_bytes = t.received_bytes;
        if let Err(e) = write(&self.state_dir, &self.status) {
            tracing::error!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_summary_names_commit_error_and_next_poll() {
        let mut s = Status::new("edge-01", "git://h/f", "main");
        s.last_applied_commit = Some("abc123".into());
        s.last_error = Some("fetch failed".into());
        s.last_error_at = Some(90);
        s.next_poll_at = Some(130);
        s.config_warnings = 2;
        let t = s.render_text(100);
        assert!(t.contains("config warnings: 2"), "{t}");
        assert!(t.contains("applied commit:  abc123"), "{t}");
        assert!(t.contains("fetch failed"), "{t}");
        assert!(t.contains("1970-01-01T00:02:10Z (in 30 s)"), "{t}");
        assert!(t.contains("1970-01-01T00:01:30Z (10 s ago)"), "{t}");
    }

    #[test]
    fn unknown_future_fields_are_tolerated_but_garbage_is_not() {
        let ok: Status = serde_json::from_str(r#"{"last_applied_commit":"x","extra":1}"#).unwrap();
        assert_eq!(ok.last_applied_commit.as_deref(), Some("x"));
        assert!(serde_json::from_str::<Status>("{not json").is_err());
    }
}
