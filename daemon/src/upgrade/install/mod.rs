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
    /// Whether a compressed HTTP download is spooled (resumable) or streamed into the slot.
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
    /// An uncompressed image written straight into the slot; resumes from the synced offset.
    Direct,
    /// A compressed image downloaded into the spool file, verified, then decompressed into the
    /// slot; resumes from the spool's length.
    Spool,
    /// A compressed image hashed and decompressed straight into the slot (no room or no size for a
    /// spool); an interruption restarts from byte 0.
    Stream,
    /// A local image path, read, hashed and decompressed in one pass.
    Local,
}

/// What a successful [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// How the bytes were moved.
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
    /// SHA-256 of the bytes written to the slot. For a raw image it is the image's own; for a
    /// compressed one it is computed only with [`InstallRequest::verify_written`] (which
    /// compares it with the read-back): the verified image's SHA-256 already fixes what
    /// decompression writes, and a second SHA-256 pass over the decompressed bytes cost a
    /// third of an install's CPU (bench/install).
    pub written_sha256: Option<[u8; 32]>,
}

/// Errors of [`install`]; each names the image, slot, spool or URL involved.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The image source is not an `https://` URL, a loopback `http://` URL or an absolute path to a
    /// regular file.
    #[error("image source {image:?}: {reason}")]
    InvalidSource {
        /// The source as configured.
        image: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The slot does not exist or is neither a block device nor a regular file.
    #[error("slot {path}: {reason}")]
    InvalidSlot {
        /// The slot path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Opening, sizing, writing, syncing or reading back the slot failed.
    #[error("slot {path}: {op} failed: {source}")]
    SlotIo {
        /// The slot path.
        path: PathBuf,
        /// The operation that failed (`open`, `write`, `fdatasync`, …).
        op: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// An uncompressed image of known size is larger than the slot block device; checked before
    /// anything is written.
    #[error("slot {path} holds {capacity} bytes but the image needs {needed}; use a larger slot")]
    SlotTooSmall {
        /// The slot block device.
        path: PathBuf,
        /// The slot's size in bytes.
        capacity: u64,
        /// The image's size in bytes.
        needed: u64,
    },
    /// Opening or reading a local image file failed.
    #[error("image file {path}: {op} failed: {source}")]
    SourceIo {
        /// The local image path.
        path: PathBuf,
        /// The operation that failed (`open`, `stat`, `read`).
        op: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Creating, writing, syncing or reading the spool file failed (ENOSPC when `spool: always` has
    /// no room).
    #[error("spool {path}: {op} failed: {source}")]
    SpoolIo {
        /// The spool path (next to the progress file).
        path: PathBuf,
        /// The operation that failed.
        op: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Reading, writing or removing the progress file failed.
    #[error(transparent)]
    Progress(#[from] StateFileError),
    /// The HTTP request failed before the response headers arrived (connect, TLS, DNS); transient.
    #[error("GET {url}: {source}")]
    Request {
        /// The image URL.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something other than 200 or 206 (a 206 for a range not asked for counts
    /// too); 5xx and 429 are transient.
    #[error("GET {url}: server answered {status}, expected 200 or 206")]
    Status {
        /// The image URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// No response headers or body bytes arrived for [`InstallOptions::idle_timeout`]; transient,
    /// the progress is saved.
    #[error("GET {url}: no data for {idle:?} at byte {offset}; progress saved, retry resumes")]
    IdleTimeout {
        /// The image URL.
        url: String,
        /// How long nothing arrived.
        idle: Duration,
        /// Download offset (bytes of the image received) when it stalled.
        offset: u64,
    },
    /// The connection broke mid-body; transient, the progress is saved.
    #[error(
        "GET {url}: connection lost at byte {offset}; progress saved, retry resumes: {source}"
    )]
    Interrupted {
        /// The image URL.
        url: String,
        /// Download offset when the connection broke.
        offset: u64,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The image's size differs from the configured `size` (from `Content-Length`/`Content-Range`,
    /// the local file's length, or more bytes than declared arriving); the progress is discarded.
    #[error("image {image}: the config declares {expected} bytes but the image has {actual}")]
    SizeMismatch {
        /// The image source.
        image: String,
        /// The size the config declares, in bytes.
        expected: u64,
        /// The size found, in bytes.
        actual: u64,
    },
    /// The download ended before the declared size; transient, the progress is saved and a retry
    /// resumes.
    #[error("image {image}: ended after {got} of {expected} bytes; progress saved, retry resumes")]
    ShortImage {
        /// The image source.
        image: String,
        /// Bytes received in total.
        got: u64,
        /// The declared size in bytes.
        expected: u64,
    },
    /// The SHA-256 of the bytes as downloaded differs from the configured hash; the progress and
    /// spool are discarded and the slot must not be booted.
    #[error("image {image}: sha256 is {actual} but the config expects {expected}; the slot is not usable")]
    HashMismatch {
        /// The image source.
        image: String,
        /// The configured SHA-256 (hex).
        expected: String,
        /// The SHA-256 of the bytes received (hex).
        actual: String,
    },
    /// The zstd or gzip stream is corrupt or truncated (or its window exceeds
    /// [`InstallOptions::zstd_window_log_max`]); the progress is discarded.
    #[error("image {image}: invalid {format} data: {source}")]
    Decompress {
        /// The image source.
        image: String,
        /// `zstd` or `gzip`.
        format: &'static str,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// With `verify_written`, the slot read back after dropping it from the page cache hashes
    /// differently from what was written (a bad disk); the progress is discarded.
    #[error("slot {path}: read-back sha256 {actual} differs from the written {expected}")]
    VerifyWritten {
        /// The slot path.
        path: PathBuf,
        /// SHA-256 of the bytes written (hex).
        expected: String,
        /// SHA-256 of the bytes read back (hex).
        actual: String,
    },
    /// The blocking install task (local path) panicked or was cancelled, or the progress record
    /// could not be serialised.
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
