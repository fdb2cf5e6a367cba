//! The daemon's persisted status: `<state_dir>/status.json`, written atomically after every
//! poll and correction, read by `bosun status`.
//!
//! It is also where the daemon remembers the last applied commit across restarts, which
//! anti-rollback needs: a status file that exists but cannot be parsed is an error (fail
//! closed), never "nothing was applied".

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::statefile;

/// File name inside the state dir.
pub const STATUS_FILE: &str = "status.json";
const VERSION: u32 = 1;

/// What the daemon last did. Timestamps are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: u32,
    pub node_name: String,
    pub source_url: String,
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
    pub last_error_at: Option<u64>,
    /// The last refused commit and why.
    pub last_refusal: Option<String>,
    /// Refusals since the state dir was created.
    pub refused_total: u64,
    /// Files reverted after manual changes, since the state dir was created.
    pub drift_corrections_total: u64,
    pub next_poll_at: Option<u64>,
    /// Ref-advertisement reads (polls) of this daemon run.
    pub polls: u64,
    /// Fetches that downloaded a pack, this run.
    pub pack_fetches: u64,
    /// Pack bytes downloaded, this run.
    pub fetch_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("status file {}: not valid status JSON ({message}); it records the last applied commit for anti-rollback, so bosun will not guess: fix or remove it", path.display())]
    Corrupt { path: PathBuf, message: String },
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

    /// Human-readable summary (pure; `now` in Unix seconds).
    pub fn render_text(&self, now: u64) -> String {
        let ago = |t: Option<u64>| match t {
            Some(t) => format!("{} ({}s ago)", t, now.saturating_sub(t)),
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
        if let Some(r) = &self.last_refusal {
            out.push_str(&format!("last refusal:    {r}\n"));
        }
        out.push_str(&format!("refused:         {}\n", self.refused_total));
        out.push_str(&format!(
            "drift corrected: {}\n",
            self.drift_corrections_total
        ));
        if let Some(n) = self.next_poll_at {
            out.push_str(&format!(
                "next poll:       {n} (in {}s)\n",
                n.saturating_sub(now)
            ));
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
        let t = s.render_text(100);
        assert!(t.contains("applied commit:  abc123"), "{t}");
        assert!(t.contains("fetch failed"), "{t}");
        assert!(t.contains("in 30s"), "{t}");
    }

    #[test]
    fn unknown_future_fields_are_tolerated_but_garbage_is_not() {
        let ok: Status = serde_json::from_str(r#"{"last_applied_commit":"x","extra":1}"#).unwrap();
        assert_eq!(ok.last_applied_commit.as_deref(), Some("x"));
        assert!(serde_json::from_str::<Status>("{not json").is_err());
    }
}
