//! Verified, streaming, resumable installation of an OS image into the inactive A/B slot.
//!
//! Owns: the image download (HTTP(S) or a local path), its SHA-256 verification, on-the-fly
//! decompression (zstd, gzip or none), writing the slot at increasing offsets, periodic
//! `fdatasync` of what was written, and the resumable progress record in the state dir.
//!
//! # Invariants
//! - **Install never touches the boot environment.** It only writes the slot it is given.
//!   [`install`] returns `Ok` only after the SHA-256 of the bytes as downloaded matched the
//!   expected digest, the declared size (if any) was reached exactly, the decompressor saw a
//!   complete stream, and the slot was `fdatasync`ed (and, with `verify_written`, read back and
//!   compared). On any `Err` the caller must not mark the slot bootable; the slot content is
//!   then undefined (it is the inactive slot, so that is harmless).
//! - The progress file claims `complete` only after all of the above. A verification failure
//!   (hash mismatch, size mismatch, corrupt compressed data, read-back mismatch) removes the
//!   progress file and the spool, so the next attempt starts from byte 0 instead of resuming
//!   into bad data.
//! - Memory is bounded by fixed-size buffers (1 MiB slot write buffer, 256 KiB read buffers,
//!   an 8-chunk channel between the network task and the writer thread, and the zstd window,
//!   capped by [`InstallOptions::zstd_window_log_max`]); the image is never held in memory.
//!
//! # Layout
//! [`install`] parses the source and probes the slot, then hands over to one path; each
//! concern has its own file:
//! - `source`: what [`InstallRequest::source`] names (an HTTP(S) URL or a local path); pure.
//! - `http`: the HTTP download: which resume to attempt, `Range`/`If-Range` requests and how
//!   a server's answer is judged, the network task feeding the writer thread.
//! - `sink`: the writer thread of an HTTP download: opens the target, feeds it, verifies and
//!   finishes it.
//! - `local`: a local image path, read, hashed and decompressed in one pass.
//! - `pipeline`: hashes the downloaded bytes, forwards them to the target and takes the
//!   durable checkpoints (the durability rules live there).
//! - `decode`: the zstd/gzip/raw decoders into the slot and finishing the slot (sync,
//!   read-back).
//! - `slot`: the slot itself: probing it, the buffered hashing writer, background
//!   `fdatasync` and page-cache release.
//! - `spool`: the compressed-download spool: when it is used, and its decompression.
//! - `progress`: the progress record and the resume design (and its trade-off): how each
//!   [`InstallMode`] resumes.
//! - `installer`: [`StreamingInstaller`], the upgrade actor's `Installer` seam.
//!
//! Retrying is the caller's job (the upgrade actor): [`InstallError::is_transient`] says
//! whether calling [`install`] again may succeed.

mod decode;
mod http;
mod installer;
mod local;
mod pipeline;
mod progress;
mod sink;
mod slot;
mod source;
mod spool;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Compression;
use crate::statefile::StateFileError;

pub use http::http_client;
pub use installer::StreamingInstaller;
pub use progress::{read_progress, InstallProgress, ProgressPhase};
pub use spool::spool_path;

use source::Source;

/// Read buffer for local files (spool, local image, slot re-reads).
const READ_BUF: usize = 256 << 10;

/// What to install where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRequest {
    /// `https://…`, `http://…` (loopback hosts only) or an absolute local path.
    pub source: String,
    /// SHA-256 of the bytes as downloaded (before decompression).
    pub sha256: [u8; 32],
    /// Size in bytes of the download, when known; enforced exactly.
    pub size: Option<u64>,
    /// See [`resolve_compression`].
    pub compression: Compression,
    /// The inactive slot: a block device or a regular file (which must exist).
    pub slot: PathBuf,
    /// Resumable progress record in the state dir; the spool lives next to it
    /// ([`spool_path`]).
    pub progress_file: PathBuf,
    /// After writing, drop the slot from the page cache, read it back and compare its SHA-256
    /// with the hash computed while writing.
    pub verify_written: bool,
}

/// Whether a compressed HTTP download is kept in a spool file (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpoolPolicy {
    /// Spool when the size is known and fits in the free space plus the reserve.
    #[default]
    Auto,
    /// Always spool compressed downloads (fails with ENOSPC if there is no room).
    Always,
    /// Never spool: stream into the slot; an interruption restarts from byte 0.
    Never,
}

/// Tunables; [`Default`] holds the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// TCP/TLS connect timeout (used by [`http_client`]).
    pub connect_timeout: Duration,
    /// Longest wait for response headers or for the next body chunk.
    pub idle_timeout: Duration,
    /// Bytes between `fdatasync` + progress checkpoints.
    pub sync_interval: u64,
    pub spool: SpoolPolicy,
    /// Free space that must remain on the spool's filesystem after spooling.
    pub spool_reserve: u64,
    /// Largest zstd window accepted (log2 bytes); bounds decoder memory. 23 = 8 MiB, enough
    /// for every standard level (`--ultra`/`--long` images need a larger value and RAM).
    pub zstd_window_log_max: u32,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            sync_interval: 64 << 20,
            spool: SpoolPolicy::Auto,
            spool_reserve: 64 << 20,
            zstd_window_log_max: 23,
        }
    }
}

/// How an install moved the bytes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallMode {
    Direct,
    Spool,
    Stream,
    Local,
}

/// What a successful [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub mode: InstallMode,
    /// Download offset this call resumed from (0: from the start).
    pub resumed_from: u64,
    /// A resume was attempted but the server sent the whole image (no range support, changed
    /// validator), so the download restarted from byte 0.
    pub restarted: bool,
    /// Bytes received over the network (or read from the local file) by this call.
    pub fetched: u64,
    /// Size of the image as downloaded (compressed).
    pub image_size: u64,
    /// Bytes written to the slot (decompressed).
    pub written: u64,
    /// SHA-256 of the bytes written to the slot.
    pub written_sha256: [u8; 32],
}

/// Errors of [`install`]; each names the image, slot, spool or URL involved.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("image source {image:?}: {reason}")]
    InvalidSource { image: String, reason: String },
    #[error("slot {path}: {reason}")]
    InvalidSlot { path: PathBuf, reason: String },
    #[error("slot {path}: {op} failed: {source}")]
    SlotIo {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("slot {path} holds {capacity} bytes but the image needs {needed}; use a larger slot")]
    SlotTooSmall {
        path: PathBuf,
        capacity: u64,
        needed: u64,
    },
    #[error("image file {path}: {op} failed: {source}")]
    SourceIo {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("spool {path}: {op} failed: {source}")]
    SpoolIo {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Progress(#[from] StateFileError),
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: server answered {status}, expected 200 or 206")]
    Status { url: String, status: u16 },
    #[error("GET {url}: no data for {idle:?} at byte {offset}; progress saved, retry resumes")]
    IdleTimeout {
        url: String,
        idle: Duration,
        offset: u64,
    },
    #[error(
        "GET {url}: connection lost at byte {offset}; progress saved, retry resumes: {source}"
    )]
    Interrupted {
        url: String,
        offset: u64,
        #[source]
        source: reqwest::Error,
    },
    #[error("image {image}: the config declares {expected} bytes but the image has {actual}")]
    SizeMismatch {
        image: String,
        expected: u64,
        actual: u64,
    },
    #[error("image {image}: ended after {got} of {expected} bytes; progress saved, retry resumes")]
    ShortImage {
        image: String,
        got: u64,
        expected: u64,
    },
    #[error("image {image}: sha256 is {actual} but the config expects {expected}; the slot is not usable")]
    HashMismatch {
        image: String,
        expected: String,
        actual: String,
    },
    #[error("image {image}: invalid {format} data: {source}")]
    Decompress {
        image: String,
        format: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("slot {path}: read-back sha256 {actual} differs from the written {expected}")]
    VerifyWritten {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("install task failed: {0}")]
    Task(String),
}

impl InstallError {
    /// Whether calling [`install`] again may succeed (network trouble, server errors); the
    /// progress was saved, so a retry resumes where possible.
    pub fn is_transient(&self) -> bool {
        match self {
            InstallError::Request { .. }
            | InstallError::IdleTimeout { .. }
            | InstallError::Interrupted { .. }
            | InstallError::ShortImage { .. } => true,
            InstallError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Failures that prove the downloaded or written bytes wrong: progress is discarded.
    fn discards_progress(&self) -> bool {
        matches!(
            self,
            InstallError::SizeMismatch { .. }
                | InstallError::HashMismatch { .. }
                | InstallError::Decompress { .. }
                | InstallError::VerifyWritten { .. }
        )
    }
}

/// The compression of an image: the configured one, else from the name's suffix (`.zst`,
/// `.zstd` → zstd; `.gz` → gzip; a URL's query and fragment are ignored), else none. Pure.
pub fn resolve_compression(configured: Option<Compression>, image: &str) -> Compression {
    if let Some(c) = configured {
        return c;
    }
    let name = image.split(['?', '#']).next().unwrap_or(image);
    if name.ends_with(".zst") || name.ends_with(".zstd") {
        Compression::Zstd
    } else if name.ends_with(".gz") {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// Installs `req.source` into `req.slot` (see the module docs for the stream, the resume
/// design and the guarantees). Writes the slot, the progress file and the spool; performs
/// network I/O for URL sources. Never touches the boot environment. `Ok` only after full
/// verification and sync; on `Err` the slot must not be marked bootable.
pub async fn install(
    req: &InstallRequest,
    http: &reqwest::Client,
    opts: &InstallOptions,
) -> Result<InstallReport, InstallError> {
    let source = source::parse_source(&req.source)?;
    let slot = slot::probe_slot(&req.slot)?;
    if let (Some(cap), Some(size), Compression::None) = (slot.capacity, req.size, req.compression) {
        if size > cap {
            return Err(InstallError::SlotTooSmall {
                path: req.slot.clone(),
                capacity: cap,
                needed: size,
            });
        }
    }
    let result = match source {
        Source::Local(path) => {
            let (req2, opts2) = (req.clone(), opts.clone());
            tokio::task::spawn_blocking(move || local::install_local(&path, &req2, &slot, &opts2))
                .await
                .map_err(|e| InstallError::Task(e.to_string()))?
        }
        Source::Http(url) => http::install_http(url, req, &slot, http, opts).await,
    };
    if let Err(e) = &result {
        if e.discards_progress() {
            progress::discard(req)?;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_from_config_or_suffix() {
        assert_eq!(
            resolve_compression(Some(Compression::Gzip), "x.zst"),
            Compression::Gzip
        );
        assert_eq!(
            resolve_compression(None, "https://h/os.img.zst?sig=1"),
            Compression::Zstd
        );
        assert_eq!(
            resolve_compression(None, "/a/os.img.zstd"),
            Compression::Zstd
        );
        assert_eq!(resolve_compression(None, "/a/os.img.gz"), Compression::Gzip);
        assert_eq!(resolve_compression(None, "/a/os.img"), Compression::None);
        assert_eq!(resolve_compression(None, "/a/zst.img"), Compression::None);
    }
}
