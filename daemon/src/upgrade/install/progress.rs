//! The resumable progress record in the state dir, and the resume design it serves.
//!
//! Only [`super::install`] writes the record (atomically, [`crate::statefile::write_atomic`]);
//! it names the image, hash, slot and compression it belongs to, so a record left by another
//! install is never resumed ([`InstallProgress::matches`]).
//!
//! # Resume design (and its trade-off)
//! Neither a zstd/gzip decoder nor a `sha2` hasher can be checkpointed to disk, so a resumed
//! install must re-derive both from bytes that are already on local storage:
//! - **Uncompressed image (`Direct`)**: the downloaded bytes *are* the slot bytes. Progress
//!   records the durable (synced) offset N; a resume re-hashes slot `[0, N)` (a local read)
//!   and asks the server for `Range: bytes=N-`.
//! - **Compressed image with room on the data partition (`Spool`)**: the compressed download
//!   is kept in a spool file next to the progress file (`<progress>.spool`, the size of the
//!   compressed image, often a fraction of the slot). A resume re-hashes the spool prefix and
//!   requests `Range: bytes=<spool length>-`. Only after the whole spool matches the SHA-256 is
//!   it decompressed into the slot, so unverified bytes are never decompressed and a crash
//!   during decompression restarts only the local decompression, not the download.
//! - **Compressed image without room (`Stream`)**: with [`super::SpoolPolicy::Auto`], when the free
//!   space under the progress file's directory is below the image size plus
//!   [`super::InstallOptions::spool_reserve`] (or the size is unknown), the download is hashed and
//!   decompressed straight into the slot. This needs no extra disk space, but an interruption
//!   restarts the download from byte 0: a 1 GB edge node with a tiny data partition cannot
//!   afford both a spool and resumability.
//! - **Local path (`Local`)**: read, hashed and decompressed in one pass; no resume needed.
//!
//! How the server's answer to a range request is judged is in the `http` module; when the
//! offsets are made durable, in the `pipeline` module.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{spool_path, InstallError, InstallMode, InstallRequest};
use crate::config::Compression;
use crate::statefile;

/// Phase recorded in the progress file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressPhase {
    /// Bytes `[0, downloaded)` are durable in the slot (`direct`) or spool (`spool`).
    Downloading,
    /// The spool holds the whole image and matched the SHA-256; decompression is pending.
    Downloaded,
    /// Verified, written and synced.
    Complete,
}

/// The progress file's content (JSON). Only [`install`](super::install) writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallProgress {
    /// The image source (URL or path) the record belongs to.
    pub source: String,
    /// The expected SHA-256 of the download (hex) the record belongs to.
    pub sha256: String,
    /// The slot the record belongs to.
    pub slot: PathBuf,
    /// `none`, `gzip` or `zstd`.
    pub compression: String,
    /// How the bytes are moved; a resume continues in the same mode.
    pub mode: InstallMode,
    /// How far the install got.
    pub phase: ProgressPhase,
    /// Bytes `[0, downloaded)` of the image are durable in the slot (`direct`) or spool (`spool`);
    /// a resume asks for `Range: bytes=<downloaded>-`.
    pub downloaded: u64,
    /// Download size when known.
    pub total: Option<u64>,
    /// Strong ETag of the response the download started with.
    pub etag: Option<String>,
    /// `Last-Modified` of the response the download started with (the `If-Range` validator when
    /// there is no strong ETag).
    pub last_modified: Option<String>,
    /// Set when complete.
    pub written: Option<u64>,
    /// SHA-256 (hex) of the bytes written to the slot; set when complete.
    pub written_sha256: Option<String>,
}

impl InstallProgress {
    /// A fresh record for `req`: its identity (image, hash, slot, compression), nothing
    /// downloaded yet.
    pub fn for_request(req: &InstallRequest, mode: InstallMode) -> InstallProgress {
        InstallProgress {
            source: req.source.clone(),
            sha256: hex::encode(req.sha256),
            slot: req.slot.clone(),
            compression: compression_name(req.compression).into(),
            mode,
            phase: ProgressPhase::Downloading,
            downloaded: 0,
            total: None,
            etag: None,
            last_modified: None,
            written: None,
            written_sha256: None,
        }
    }

    /// Whether this record belongs to `req` (same image, hash, slot and compression).
    pub fn matches(&self, req: &InstallRequest) -> bool {
        self.source == req.source
            && self.sha256 == hex::encode(req.sha256)
            && self.slot == req.slot
            && self.compression == compression_name(req.compression)
    }
    /// Whether the install finished: verified, written and synced.
    pub fn is_complete(&self) -> bool {
        self.phase == ProgressPhase::Complete
    }
}

/// The progress record's name for a compression (`none`, `gzip`, `zstd`). Pure.
fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// Reads the progress file; `None` if absent or unreadable as a progress record (a corrupt
/// record only costs a restart). Reads the filesystem only.
pub fn read_progress(path: &Path) -> Result<Option<InstallProgress>, InstallError> {
    Ok(statefile::read_optional(path)?.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Writes the progress record atomically. Writes to disk.
pub(super) fn write_progress(path: &Path, p: &InstallProgress) -> Result<(), InstallError> {
    let bytes = serde_json::to_vec_pretty(p).map_err(|e| InstallError::Task(e.to_string()))?;
    Ok(statefile::write_atomic(path, &bytes, 0o600)?)
}

/// Removes the progress file and the spool (after a verification failure). Writes to disk.
pub(super) fn discard(req: &InstallRequest) -> Result<(), InstallError> {
    statefile::remove_durable(&spool_path(&req.progress_file))?;
    statefile::remove_durable(&req.progress_file)?;
    Ok(())
}

/// The record of a finished install of `req`: `complete`, with the image size and the size
/// and SHA-256 of what was written. Pure.
pub(super) fn complete_record(
    req: &InstallRequest,
    mode: InstallMode,
    image_size: u64,
    written: u64,
    digest: Option<[u8; 32]>,
) -> InstallProgress {
    InstallProgress {
        phase: ProgressPhase::Complete,
        downloaded: image_size,
        total: Some(image_size),
        written: Some(written),
        written_sha256: digest.map(hex::encode),
        ..InstallProgress::for_request(req, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_matches_only_the_same_request() {
        let req = InstallRequest {
            source: "/srv/os.img".into(),
            sha256: [7; 32],
            size: None,
            compression: Compression::None,
            slot: "/dev/b".into(),
            progress_file: "/state/p.json".into(),
            verify_written: false,
        };
        let p = complete_record(&req, InstallMode::Local, 1, 1, Some([0; 32]));
        assert!(p.matches(&req));
        let mut other = req.clone();
        other.sha256 = [8; 32];
        assert!(!p.matches(&other));
        let mut other = req.clone();
        other.slot = "/dev/a".into();
        assert!(!p.matches(&other));
        assert_eq!(
            spool_path(Path::new("/state/p.json")),
            PathBuf::from("/state/p.json.spool")
        );
    }
}
