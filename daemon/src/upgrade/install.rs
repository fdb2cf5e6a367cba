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
//! - **Compressed image without room (`Stream`)**: with [`SpoolPolicy::Auto`], when the free
//!   space under the progress file's directory is below the image size plus
//!   [`InstallOptions::spool_reserve`] (or the size is unknown), the download is hashed and
//!   decompressed straight into the slot. This needs no extra disk space, but an interruption
//!   restarts the download from byte 0: a 1 GB edge node with a tiny data partition cannot
//!   afford both a spool and resumability.
//! - **Local path (`Local`)**: read, hashed and decompressed in one pass; no resume needed.
//!
//! Range requests carry `If-Range` with the strong ETag (or else Last-Modified) recorded when
//! the download started. A server that ignores ranges (200), or whose validator changed
//! (200 by the If-Range rule), or that answers 416 / a mismatching `Content-Range`, makes the
//! download restart cleanly from byte 0. Without any validator a plain `Range` is sent: the
//! final SHA-256 check still catches a file that changed between attempts (and then resets).
//!
//! Durability: every [`InstallOptions::sync_interval`] bytes the slot (or spool) is
//! `fdatasync`ed and then the progress offset is written atomically
//! ([`crate::statefile::write_atomic`]); on a network error the same checkpoint is taken at
//! the exact offset reached before the error is returned, so a retry loses nothing. After a
//! crash at most one interval is downloaded again. Writes that are not resume points
//! (decompressing into the slot) are `fdatasync`ed every interval on a helper thread, so the
//! disk works while the decoder runs, and at most two intervals of dirty pages exist. Synced
//! ranges are dropped from the page cache (`POSIX_FADV_DONTNEED`) so an image write does not
//! evict the node's working set.
//!
//! Retrying is the caller's job (the upgrade actor): [`InstallError::is_transient`] says
//! whether calling [`install`] again may succeed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::Advice;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Compression;
use crate::statefile::{self, StateFileError};

/// Slot write buffer: writes reach the slot in chunks of this size.
const WRITE_BUF: usize = 1 << 20;
/// Read buffer for local files (spool, local image, slot re-reads).
const READ_BUF: usize = 256 << 10;
/// Chunks in flight between the network task and the writer thread.
const CHANNEL_CHUNKS: usize = 8;

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

/// The progress file's content (JSON). Only [`install`] writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallProgress {
    pub source: String,
    pub sha256: String,
    pub slot: PathBuf,
    /// `none`, `gzip` or `zstd`.
    pub compression: String,
    pub mode: InstallMode,
    pub phase: ProgressPhase,
    pub downloaded: u64,
    /// Download size when known.
    pub total: Option<u64>,
    /// Strong ETag of the response the download started with.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Set when complete.
    pub written: Option<u64>,
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
    pub fn is_complete(&self) -> bool {
        self.phase == ProgressPhase::Complete
    }
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

/// Where the compressed download is spooled: `<progress_file>.spool`.
pub fn spool_path(progress_file: &Path) -> PathBuf {
    let mut s = progress_file.as_os_str().to_owned();
    s.push(".spool");
    PathBuf::from(s)
}

/// An HTTP client with the connect timeout of `opts` (reads are bounded per chunk by
/// [`InstallOptions::idle_timeout`] inside [`install`]).
pub fn http_client(opts: &InstallOptions) -> Result<reqwest::Client, InstallError> {
    // Redirects obey the same rule as the configured URL: plain http only to loopback.
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if let Err(e) = parse_source(attempt.url().as_str()) {
            attempt.error(e)
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .redirect(policy)
        .build()
        .map_err(|e| InstallError::Task(format!("building the HTTP client: {e}")))
}

/// Reads the progress file; `None` if absent or unreadable as a progress record (a corrupt
/// record only costs a restart). Reads the filesystem only.
pub fn read_progress(path: &Path) -> Result<Option<InstallProgress>, InstallError> {
    Ok(statefile::read_optional(path)?.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Where the image comes from. Pure parsing of [`InstallRequest::source`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Http(url::Url),
    Local(PathBuf),
}

fn parse_source(image: &str) -> Result<Source, InstallError> {
    let bad = |reason: &str| InstallError::InvalidSource {
        image: image.to_string(),
        reason: reason.to_string(),
    };
    if image.starts_with('/') {
        return Ok(Source::Local(PathBuf::from(image)));
    }
    let url = url::Url::parse(image).map_err(|_| {
        bad("expected an https:// URL, an http:// URL on a loopback host, or an absolute path")
    })?;
    match url.scheme() {
        "https" => Ok(Source::Http(url)),
        "http" => {
            if crate::netpolicy::is_loopback_host(&url) {
                Ok(Source::Http(url))
            } else {
                Err(bad(
                    "plain http:// is only allowed on loopback hosts; use https://",
                ))
            }
        }
        _ => Err(bad(
            "expected an https:// URL, an http:// URL on a loopback host, or an absolute path",
        )),
    }
}

/// Parses `Content-Range: bytes START-END/TOTAL` into (start, total). Pure.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// The slot: kind and capacity (block devices only).
#[derive(Debug, Clone)]
struct SlotInfo {
    path: PathBuf,
    capacity: Option<u64>,
}

/// Checks that the slot exists and is a block device or a regular file. Reads the filesystem.
fn probe_slot(path: &Path) -> Result<SlotInfo, InstallError> {
    let meta = std::fs::metadata(path).map_err(|e| InstallError::InvalidSlot {
        path: path.to_path_buf(),
        reason: format!("cannot stat ({e}); expected an existing block device or file"),
    })?;
    let ft = meta.file_type();
    let capacity = if ft.is_block_device() {
        let mut f = File::open(path).map_err(slot_err(path, "open"))?;
        Some(f.seek(SeekFrom::End(0)).map_err(slot_err(path, "size"))?)
    } else if ft.is_file() {
        None
    } else {
        return Err(InstallError::InvalidSlot {
            path: path.to_path_buf(),
            reason: "not a block device or regular file".into(),
        });
    };
    Ok(SlotInfo {
        path: path.to_path_buf(),
        capacity,
    })
}

fn slot_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::SlotIo {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn spool_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::SpoolIo {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Buffered positional writer into the slot that hashes what it writes. Writes to disk.
struct SlotWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes of the file already written (everything before the buffer).
    flushed: u64,
    synced: u64,
    capacity: Option<u64>,
    hasher: Option<Sha256>,
    /// Sync every this many bytes by itself (0: only when asked), in the background.
    auto_sync: u64,
    /// A background `fdatasync` covering the slot up to this offset.
    pending: Option<(u64, std::thread::JoinHandle<io::Result<()>>)>,
    /// Set when an I/O error came from the slot (so a decoder error can be told apart).
    failed: Option<(&'static str, io::ErrorKind)>,
}

impl SlotWriter {
    /// Opens the slot for writing from `offset` (no truncation, no creation).
    fn open(
        slot: &SlotInfo,
        offset: u64,
        hash: bool,
        auto_sync: u64,
    ) -> Result<Self, InstallError> {
        // Read access too: a resumed direct download re-hashes the slot prefix.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slot.path)
            .map_err(slot_err(&slot.path, "open for writing"))?;
        Ok(SlotWriter {
            file,
            path: slot.path.clone(),
            buf: Vec::with_capacity(WRITE_BUF),
            flushed: offset,
            synced: offset,
            capacity: slot.capacity,
            hasher: hash.then(Sha256::new),
            auto_sync,
            pending: None,
            failed: None,
        })
    }

    fn position(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all_at(&self.buf, self.flushed) {
            self.failed = Some(("write", e.kind()));
            return Err(e);
        }
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Flushes, `fdatasync`s and drops the synced range from the page cache.
    fn sync(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.wait_pending()?;
        if let Err(e) = self.file.sync_data() {
            self.failed = Some(("fdatasync", e.kind()));
            return Err(e);
        }
        self.mark_synced(self.flushed);
        Ok(())
    }

    /// Periodic sync that overlaps with decompression: waits for the previous background
    /// `fdatasync`, then starts one for everything written so far. At most two intervals of
    /// dirty pages exist at any time.
    fn sync_in_background(&mut self) -> io::Result<()> {
        self.wait_pending()?;
        let file = match self.file.try_clone() {
            Ok(f) => f,
            Err(_) => return self.sync(),
        };
        let upto = self.flushed;
        let handle = std::thread::Builder::new()
            .name("slot-sync".into())
            .spawn(move || file.sync_data());
        match handle {
            Ok(h) => self.pending = Some((upto, h)),
            Err(_) => return self.sync(),
        }
        Ok(())
    }

    fn wait_pending(&mut self) -> io::Result<()> {
        if let Some((upto, h)) = self.pending.take() {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("fdatasync thread panicked")));
            if let Err(e) = r {
                self.failed = Some(("fdatasync", e.kind()));
                return Err(e);
            }
            self.mark_synced(upto);
        }
        Ok(())
    }

    fn mark_synced(&mut self, upto: u64) {
        if let Some(len) = NonZeroU64::new(upto.saturating_sub(self.synced)) {
            let _ = rustix::fs::fadvise(&self.file, self.synced, Some(len), Advice::DontNeed);
        }
        self.synced = self.synced.max(upto);
    }

    fn to_error(&self, e: io::Error) -> InstallError {
        InstallError::SlotIo {
            path: self.path.clone(),
            op: self.failed.map(|f| f.0).unwrap_or("write"),
            source: e,
        }
    }
}

impl Write for SlotWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(cap) = self.capacity {
            if self.position() + data.len() as u64 > cap {
                self.failed = Some(("write", io::ErrorKind::StorageFull));
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("image is larger than the slot ({cap} bytes)"),
                ));
            }
        }
        let n = data.len().min(WRITE_BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if let Some(h) = &mut self.hasher {
            h.update(&data[..n]);
        }
        if self.buf.len() == WRITE_BUF {
            self.flush_buf()?;
            let since = self.flushed - self.pending.as_ref().map_or(self.synced, |p| p.0);
            if self.auto_sync > 0 && since >= self.auto_sync {
                self.sync_in_background()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// Where downloaded bytes go.
// One value per install; boxing the writer would only add an indirection per chunk.
#[allow(clippy::large_enum_variant)]
enum Target {
    Direct(SlotWriter),
    Spool { file: File, path: PathBuf },
    Zstd(Box<zstd::stream::write::Decoder<'static, SlotWriter>>),
    Gzip(Box<flate2::write::MultiGzDecoder<SlotWriter>>),
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

fn format_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "raw",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// A decoding target writing into `slot`, hashing the written bytes.
fn decoding_target(
    compression: Compression,
    slot: SlotWriter,
    opts: &InstallOptions,
) -> Result<Target, InstallError> {
    Ok(match compression {
        Compression::None => Target::Direct(slot),
        Compression::Gzip => Target::Gzip(Box::new(flate2::write::MultiGzDecoder::new(slot))),
        Compression::Zstd => {
            let mut raw = zstd::stream::raw::Decoder::new()
                .map_err(|e| InstallError::Task(format!("zstd decoder: {e}")))?;
            raw.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
                opts.zstd_window_log_max,
            ))
            .map_err(|e| InstallError::Task(format!("zstd decoder: {e}")))?;
            Target::Zstd(Box::new(zstd::stream::write::Decoder::with_decoder(
                slot, raw,
            )))
        }
    })
}

/// Hashes the downloaded bytes and forwards them to the target; checkpoints progress.
struct Pipeline {
    target: Target,
    image: String,
    compression: Compression,
    hasher: Sha256,
    /// Download offset (including a resumed prefix).
    received: u64,
    fetched: u64,
    since_checkpoint: u64,
    sync_interval: u64,
    /// Resumable progress (Direct/Spool over HTTP).
    progress: Option<(PathBuf, InstallProgress)>,
}

impl Pipeline {
    /// Feeds downloaded bytes. Writes to the slot or spool.
    fn feed(&mut self, data: &[u8], limit: Option<u64>) -> Result<(), InstallError> {
        if let Some(limit) = limit {
            if self.received + data.len() as u64 > limit {
                return Err(InstallError::SizeMismatch {
                    image: self.image.clone(),
                    expected: limit,
                    actual: self.received + data.len() as u64,
                });
            }
        }
        self.hasher.update(data);
        let image = &self.image;
        let format = format_name(self.compression);
        match &mut self.target {
            Target::Direct(w) => w.write_all(data).map_err(|e| w.to_error(e))?,
            Target::Spool { file, path } => {
                file.write_all(data).map_err(spool_err(path, "write"))?
            }
            Target::Zstd(d) => d
                .write_all(data)
                .map_err(|e| decode_error(d.get_ref(), image, format, e))?,
            Target::Gzip(d) => d
                .write_all(data)
                .map_err(|e| decode_error(d.get_ref(), image, format, e))?,
        }
        self.received += data.len() as u64;
        self.fetched += data.len() as u64;
        self.since_checkpoint += data.len() as u64;
        if self.progress.is_some() && self.since_checkpoint >= self.sync_interval {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Makes `[0, received)` durable and records it. Writes to disk.
    fn checkpoint(&mut self) -> Result<(), InstallError> {
        self.since_checkpoint = 0;
        let Some((path, progress)) = &mut self.progress else {
            return Ok(());
        };
        match &mut self.target {
            Target::Direct(w) => w.sync().map_err(|e| w.to_error(e))?,
            Target::Spool { file, path } => {
                file.sync_data().map_err(spool_err(path, "fdatasync"))?
            }
            _ => return Ok(()),
        }
        progress.downloaded = self.received;
        write_progress(path, progress)
    }

    fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

fn decode_error(
    slot: &SlotWriter,
    image: &str,
    format: &'static str,
    e: io::Error,
) -> InstallError {
    if slot.failed.is_some() {
        slot.to_error(e)
    } else {
        InstallError::Decompress {
            image: image.to_string(),
            format,
            source: e,
        }
    }
}

fn write_progress(path: &Path, p: &InstallProgress) -> Result<(), InstallError> {
    let bytes = serde_json::to_vec_pretty(p).map_err(|e| InstallError::Task(e.to_string()))?;
    Ok(statefile::write_atomic(path, &bytes, 0o600)?)
}

/// Removes the progress file and the spool (after a verification failure). Writes to disk.
fn discard(req: &InstallRequest) -> Result<(), InstallError> {
    statefile::remove_durable(&spool_path(&req.progress_file))?;
    statefile::remove_durable(&req.progress_file)?;
    Ok(())
}

/// SHA-256 of `[0, len)` of a file. Reads the file.
fn hash_prefix(file: &File, len: u64) -> io::Result<Sha256> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut off = 0u64;
    while off < len {
        let want = (len - off).min(READ_BUF as u64) as usize;
        let n = file.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("ended at byte {off}, {len} expected"),
            ));
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h)
}

/// Finishes writing: ends the decoder, syncs the slot, optionally reads it back. Returns
/// (bytes written, their SHA-256). Writes to and reads from the slot.
fn finish_target(
    target: Target,
    download_digest: [u8; 32],
    req: &InstallRequest,
) -> Result<(u64, [u8; 32]), InstallError> {
    let format = format_name(req.compression);
    let mut slot = match target {
        Target::Direct(w) => w,
        Target::Zstd(d) => {
            let d = *d;
            // finish() fails on an incomplete frame: the decoder saw a truncated stream.
            let failed = d.get_ref().failed.is_some();
            d.finish().map_err(|e| {
                if failed {
                    InstallError::SlotIo {
                        path: req.slot.clone(),
                        op: "write",
                        source: e,
                    }
                } else {
                    InstallError::Decompress {
                        image: req.source.clone(),
                        format,
                        source: e,
                    }
                }
            })?
        }
        Target::Gzip(d) => {
            let mut d = *d;
            d.try_finish()
                .map_err(|e| decode_error(d.get_ref(), &req.source, format, e))?;
            d.finish()
                .map_err(|e| decode_error_path(&req.slot, &req.source, format, e))?
        }
        Target::Spool { .. } => return Err(InstallError::Task("spool is not a slot".into())),
    };
    slot.sync().map_err(|e| slot.to_error(e))?;
    let written = slot.flushed;
    let digest: [u8; 32] = match slot.hasher.take() {
        Some(h) => h.finalize().into(),
        None => download_digest,
    };
    if req.verify_written {
        let f = File::open(&req.slot).map_err(slot_err(&req.slot, "open for read-back"))?;
        if let Some(len) = NonZeroU64::new(written) {
            let _ = rustix::fs::fadvise(&f, 0, Some(len), Advice::DontNeed);
        }
        let actual: [u8; 32] = hash_prefix(&f, written)
            .map_err(slot_err(&req.slot, "read back"))?
            .finalize()
            .into();
        if actual != digest {
            return Err(InstallError::VerifyWritten {
                path: req.slot.clone(),
                expected: hex::encode(digest),
                actual: hex::encode(actual),
            });
        }
    }
    Ok((written, digest))
}

fn decode_error_path(slot: &Path, image: &str, format: &'static str, e: io::Error) -> InstallError {
    if e.kind() == io::ErrorKind::StorageFull {
        InstallError::SlotIo {
            path: slot.to_path_buf(),
            op: "write",
            source: e,
        }
    } else {
        InstallError::Decompress {
            image: image.to_string(),
            format,
            source: e,
        }
    }
}

fn check_hash(req: &InstallRequest, actual: [u8; 32]) -> Result<(), InstallError> {
    if actual != req.sha256 {
        return Err(InstallError::HashMismatch {
            image: req.source.clone(),
            expected: hex::encode(req.sha256),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

fn complete_record(
    req: &InstallRequest,
    mode: InstallMode,
    image_size: u64,
    written: u64,
    digest: [u8; 32],
) -> InstallProgress {
    InstallProgress {
        phase: ProgressPhase::Complete,
        downloaded: image_size,
        total: Some(image_size),
        written: Some(written),
        written_sha256: Some(hex::encode(digest)),
        ..InstallProgress::for_request(req, mode)
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
    let source = parse_source(&req.source)?;
    let slot = probe_slot(&req.slot)?;
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
            tokio::task::spawn_blocking(move || install_local(&path, &req2, &slot, &opts2))
                .await
                .map_err(|e| InstallError::Task(e.to_string()))?
        }
        Source::Http(url) => install_http(url, req, &slot, http, opts).await,
    };
    if let Err(e) = &result {
        if e.discards_progress() {
            discard(req)?;
        }
    }
    result
}

/// Local path: one pass of read → hash → decompress → slot. Reads the image, writes the
/// slot and the progress file.
fn install_local(
    path: &Path,
    req: &InstallRequest,
    slot: &SlotInfo,
    opts: &InstallOptions,
) -> Result<InstallReport, InstallError> {
    let src_err = |op| {
        move |source| InstallError::SourceIo {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let mut file = File::open(path).map_err(src_err("open"))?;
    let meta = file.metadata().map_err(src_err("stat"))?;
    if !meta.is_file() {
        return Err(InstallError::InvalidSource {
            image: req.source.clone(),
            reason: "not a regular file".into(),
        });
    }
    if let Some(size) = req.size {
        if size != meta.len() {
            return Err(InstallError::SizeMismatch {
                image: req.source.clone(),
                expected: size,
                actual: meta.len(),
            });
        }
    }
    statefile::remove_durable(&req.progress_file)?;
    let hash_written = req.compression != Compression::None;
    let writer = SlotWriter::open(slot, 0, hash_written, opts.sync_interval)?;
    let mut pipe = Pipeline {
        target: decoding_target(req.compression, writer, opts)?,
        image: req.source.clone(),
        compression: req.compression,
        hasher: Sha256::new(),
        received: 0,
        fetched: 0,
        since_checkpoint: 0,
        sync_interval: opts.sync_interval,
        progress: None,
    };
    if let Target::Direct(w) = &mut pipe.target {
        w.auto_sync = opts.sync_interval;
    }
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = file.read(&mut buf).map_err(src_err("read"))?;
        if n == 0 {
            break;
        }
        pipe.feed(&buf[..n], req.size)?;
    }
    let digest = pipe.digest();
    check_hash(req, digest)?;
    let image_size = pipe.received;
    let fetched = pipe.fetched;
    let (written, written_sha) = finish_target(pipe.target, digest, req)?;
    write_progress(
        &req.progress_file,
        &complete_record(req, InstallMode::Local, image_size, written, written_sha),
    )?;
    Ok(InstallReport {
        mode: InstallMode::Local,
        resumed_from: 0,
        restarted: false,
        fetched,
        image_size,
        written,
        written_sha256: written_sha,
    })
}

/// Free bytes on the filesystem holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// A resumable download found in the progress file.
struct Resume {
    progress: InstallProgress,
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// How the writer thread starts.
struct SinkSetup {
    req: InstallRequest,
    slot: SlotInfo,
    opts: InstallOptions,
    mode: InstallMode,
    start: u64,
    progress: InstallProgress,
    limit: Option<u64>,
}

enum Msg<B> {
    Data(B),
    End,
}

/// Writer-thread result.
enum SinkEnd {
    /// The body ended and everything verified: (image size, written, written sha256).
    Done(u64, u64, [u8; 32]),
    /// The network side stopped early; progress was checkpointed at this offset.
    Stopped(u64),
}

async fn install_http(
    url: url::Url,
    req: &InstallRequest,
    slot: &SlotInfo,
    http: &reqwest::Client,
    opts: &InstallOptions,
) -> Result<InstallReport, InstallError> {
    let spool = spool_path(&req.progress_file);
    let prior = read_progress(&req.progress_file)?.filter(|p| p.matches(req));
    // A verified spool waiting for decompression: no network needed.
    if let Some(p) = prior
        .as_ref()
        .filter(|p| p.mode == InstallMode::Spool && p.phase == ProgressPhase::Downloaded)
    {
        let (req2, slot2, opts2, total) = (req.clone(), slot.clone(), opts.clone(), p.downloaded);
        let (written, sha) =
            tokio::task::spawn_blocking(move || unspool(&req2, &slot2, &opts2, total, true))
                .await
                .map_err(|e| InstallError::Task(e.to_string()))??;
        return Ok(InstallReport {
            mode: InstallMode::Spool,
            resumed_from: total,
            restarted: false,
            fetched: 0,
            image_size: total,
            written,
            written_sha256: sha,
        });
    }
    let mut resume = prior
        .filter(|p| p.phase == ProgressPhase::Downloading && p.downloaded > 0)
        .filter(|p| match p.mode {
            InstallMode::Direct => true,
            InstallMode::Spool => std::fs::metadata(&spool)
                .map(|m| m.len() >= p.downloaded)
                .unwrap_or(false),
            _ => false,
        })
        .map(|progress| Resume { progress });
    let url_s = url.to_string();
    let resumed_attempt = resume.is_some();
    let (resp, start) = loop {
        let mut rb = http.get(url.clone());
        if let Some(r) = &resume {
            rb = rb.header(
                reqwest::header::RANGE,
                format!("bytes={}-", r.progress.downloaded),
            );
            if let Some(v) = r
                .progress
                .etag
                .as_ref()
                .or(r.progress.last_modified.as_ref())
            {
                rb = rb.header(reqwest::header::IF_RANGE, v.as_str());
            }
        }
        let resp = tokio::time::timeout(opts.idle_timeout, rb.send())
            .await
            .map_err(|_| InstallError::IdleTimeout {
                url: url_s.clone(),
                idle: opts.idle_timeout,
                offset: resume.as_ref().map_or(0, |r| r.progress.downloaded),
            })?
            .map_err(|source| InstallError::Request {
                url: url_s.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        match (status, &resume) {
            (200, _) => break (resp, 0),
            (206, Some(r)) => {
                let want = r.progress.downloaded;
                let ok = header(&resp, reqwest::header::CONTENT_RANGE)
                    .and_then(|v| parse_content_range(&v))
                    .is_some_and(|(s, _)| s == want);
                if ok {
                    break (resp, want);
                }
                resume = None;
            }
            (416, Some(_)) => resume = None,
            _ => return Err(InstallError::Status { url: url_s, status }),
        }
    };
    let total = if start > 0 {
        header(&resp, reqwest::header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(&v))
            .and_then(|(_, t)| t)
    } else {
        resp.content_length()
    };
    if let (Some(expected), Some(actual)) = (req.size, total) {
        if expected != actual {
            return Err(InstallError::SizeMismatch {
                image: req.source.clone(),
                expected,
                actual,
            });
        }
    }
    let progress = match resume.filter(|_| start > 0) {
        Some(r) => r.progress,
        None => {
            let size = req.size.or(total);
            let mode = if req.compression == Compression::None {
                InstallMode::Direct
            } else {
                match opts.spool {
                    SpoolPolicy::Always => InstallMode::Spool,
                    SpoolPolicy::Never => InstallMode::Stream,
                    SpoolPolicy::Auto => {
                        let dir = spool.parent().unwrap_or(Path::new("."));
                        let fits = size
                            .zip(free_space(dir))
                            .is_some_and(|(s, free)| free >= s.saturating_add(opts.spool_reserve));
                        if fits {
                            InstallMode::Spool
                        } else {
                            InstallMode::Stream
                        }
                    }
                }
            };
            if mode == InstallMode::Direct {
                if let (Some(cap), Some(s)) = (slot.capacity, size) {
                    if s > cap {
                        return Err(InstallError::SlotTooSmall {
                            path: req.slot.clone(),
                            capacity: cap,
                            needed: s,
                        });
                    }
                }
            }
            let etag = header(&resp, reqwest::header::ETAG).filter(|e| !e.starts_with("W/"));
            InstallProgress {
                total: size,
                etag,
                last_modified: header(&resp, reqwest::header::LAST_MODIFIED),
                ..InstallProgress::for_request(req, mode)
            }
        }
    };
    let mode = progress.mode;
    let limit = req.size.or(progress.total);
    let setup = SinkSetup {
        req: req.clone(),
        slot: slot.clone(),
        opts: opts.clone(),
        mode,
        start,
        progress,
        limit,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let sink = tokio::task::spawn_blocking(move || run_sink(setup, rx));
    let mut resp = resp;
    let mut net_error = None;
    let mut offset = start;
    loop {
        match tokio::time::timeout(opts.idle_timeout, resp.chunk()).await {
            Err(_) => {
                net_error = Some(InstallError::IdleTimeout {
                    url: url_s.clone(),
                    idle: opts.idle_timeout,
                    offset,
                });
                break;
            }
            Ok(Err(source)) => {
                net_error = Some(InstallError::Interrupted {
                    url: url_s.clone(),
                    offset,
                    source,
                });
                break;
            }
            Ok(Ok(None)) => {
                let _ = tx.send(Msg::End).await;
                break;
            }
            Ok(Ok(Some(bytes))) => {
                offset += bytes.len() as u64;
                if tx.send(Msg::Data(bytes)).await.is_err() {
                    break; // the writer failed; its error is returned below
                }
            }
        }
    }
    drop(tx);
    let end = sink
        .await
        .map_err(|e| InstallError::Task(e.to_string()))??;
    match end {
        SinkEnd::Done(image_size, written, sha) => Ok(InstallReport {
            mode,
            resumed_from: start,
            restarted: resumed_attempt && start == 0,
            fetched: image_size - start,
            image_size,
            written,
            written_sha256: sha,
        }),
        SinkEnd::Stopped(at) => Err(net_error.unwrap_or(InstallError::Task(format!(
            "download of {url_s} stopped at byte {at}"
        )))),
    }
}

/// The writer thread: receives chunks, hashes, writes, checkpoints; at the end verifies and
/// finishes. Writes the slot, spool and progress file.
fn run_sink<B: AsRef<[u8]>>(
    setup: SinkSetup,
    mut rx: tokio::sync::mpsc::Receiver<Msg<B>>,
) -> Result<SinkEnd, InstallError> {
    let SinkSetup {
        req,
        slot,
        opts,
        mode,
        start,
        mut progress,
        limit,
    } = setup;
    let spool = spool_path(&req.progress_file);
    let mut hasher = Sha256::new();
    let target = match mode {
        InstallMode::Direct => {
            let w = SlotWriter::open(&slot, start, false, 0)?;
            if start > 0 {
                hasher = hash_prefix(&w.file, start).map_err(slot_err(&slot.path, "re-read"))?;
            }
            Target::Direct(w)
        }
        InstallMode::Spool => {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&spool)
                .map_err(spool_err(&spool, "open"))?;
            file.set_len(start).map_err(spool_err(&spool, "truncate"))?;
            if start > 0 {
                hasher = hash_prefix(&file, start).map_err(spool_err(&spool, "re-read"))?;
            }
            file.seek(SeekFrom::Start(start))
                .map_err(spool_err(&spool, "seek"))?;
            Target::Spool {
                file,
                path: spool.clone(),
            }
        }
        _ => {
            let w = SlotWriter::open(&slot, 0, true, opts.sync_interval)?;
            decoding_target(req.compression, w, &opts)?
        }
    };
    if mode != InstallMode::Spool {
        // A spool left by an earlier, different install only wastes the data partition.
        statefile::remove_durable(&spool)?;
    }
    progress.downloaded = start;
    progress.phase = ProgressPhase::Downloading;
    let resumable = matches!(mode, InstallMode::Direct | InstallMode::Spool);
    if resumable {
        write_progress(&req.progress_file, &progress)?;
    } else {
        statefile::remove_durable(&req.progress_file)?;
    }
    let mut pipe = Pipeline {
        target,
        image: req.source.clone(),
        compression: req.compression,
        hasher,
        received: start,
        fetched: 0,
        since_checkpoint: 0,
        sync_interval: opts.sync_interval,
        progress: resumable.then(|| (req.progress_file.clone(), progress)),
    };
    let ended = loop {
        match rx.blocking_recv() {
            Some(Msg::Data(b)) => pipe.feed(b.as_ref(), limit)?,
            Some(Msg::End) => break true,
            None => break false,
        }
    };
    if !ended {
        pipe.checkpoint()?;
        return Ok(SinkEnd::Stopped(pipe.received));
    }
    if let Some(expected) = limit {
        if pipe.received < expected {
            pipe.checkpoint()?;
            return Err(InstallError::ShortImage {
                image: req.source.clone(),
                got: pipe.received,
                expected,
            });
        }
    }
    let digest = pipe.digest();
    check_hash(&req, digest)?;
    let image_size = pipe.received;
    let (written, sha) = match pipe.target {
        Target::Spool { file, path } => {
            file.sync_data().map_err(spool_err(&path, "fdatasync"))?;
            drop(file);
            if let Some((ppath, mut p)) = pipe.progress.take() {
                p.downloaded = image_size;
                p.phase = ProgressPhase::Downloaded;
                write_progress(&ppath, &p)?;
            }
            return unspool(&req, &slot, &opts, image_size, false)
                .map(|(w, s)| SinkEnd::Done(image_size, w, s));
        }
        target => finish_target(target, digest, &req)?,
    };
    write_progress(
        &req.progress_file,
        &complete_record(&req, mode, image_size, written, sha),
    )?;
    Ok(SinkEnd::Done(image_size, written, sha))
}

/// Decompresses the verified spool into the slot, then removes it and records completion.
/// With `verify_first`, re-hashes the spool before writing anything. Reads the spool, writes
/// the slot, removes the spool, writes the progress file.
fn unspool(
    req: &InstallRequest,
    slot: &SlotInfo,
    opts: &InstallOptions,
    total: u64,
    verify_first: bool,
) -> Result<(u64, [u8; 32]), InstallError> {
    let spool = spool_path(&req.progress_file);
    let mut file = File::open(&spool).map_err(spool_err(&spool, "open"))?;
    if verify_first {
        let h = hash_prefix(&file, total).map_err(spool_err(&spool, "re-read"))?;
        check_hash(req, h.finalize().into())?;
    }
    let writer = SlotWriter::open(slot, 0, true, opts.sync_interval)?;
    let mut target = decoding_target(req.compression, writer, opts)?;
    let format = format_name(req.compression);
    let mut buf = vec![0u8; READ_BUF];
    let mut left = total;
    while left > 0 {
        let want = left.min(READ_BUF as u64) as usize;
        let n = file
            .read(&mut buf[..want])
            .map_err(spool_err(&spool, "read"))?;
        if n == 0 {
            return Err(InstallError::SpoolIo {
                path: spool.clone(),
                op: "read",
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "spool shorter than recorded"),
            });
        }
        match &mut target {
            Target::Zstd(d) => d
                .write_all(&buf[..n])
                .map_err(|e| decode_error(d.get_ref(), &req.source, format, e))?,
            Target::Gzip(d) => d
                .write_all(&buf[..n])
                .map_err(|e| decode_error(d.get_ref(), &req.source, format, e))?,
            Target::Direct(w) => w.write_all(&buf[..n]).map_err(|e| w.to_error(e))?,
            Target::Spool { .. } => unreachable!("decoding_target never returns a spool"),
        }
        left -= n as u64;
    }
    drop(file);
    let (written, sha) = finish_target(target, req.sha256, req)?;
    write_progress(
        &req.progress_file,
        &complete_record(req, InstallMode::Spool, total, written, sha),
    )?;
    statefile::remove_durable(&spool)?;
    Ok((written, sha))
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

    #[test]
    fn sources_http_only_on_loopback() {
        assert!(matches!(
            parse_source("https://images.example/os.zst"),
            Ok(Source::Http(_))
        ));
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://localhost/x",
        ] {
            assert!(matches!(parse_source(ok), Ok(Source::Http(_))), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/x",
            "http://images.example/x",
            "ftp://127.0.0.1/x",
            "relative/path.img",
        ] {
            let e = parse_source(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert_eq!(
            parse_source("/srv/os.img").unwrap(),
            Source::Local(PathBuf::from("/srv/os.img"))
        );
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }

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
        let p = complete_record(&req, InstallMode::Local, 1, 1, [0; 32]);
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

/// The streaming installer behind the upgrade actor's [`Installer`] seam: builds an
/// [`InstallRequest`] from the config's `upgrade:` block and runs [`install`] to completion.
/// Blocking: call it from a blocking thread (the actor's `step`), never from async code.
#[derive(Debug, Clone)]
pub struct StreamingInstaller {
    /// Progress record (and spool, next to it) in the state dir.
    pub progress_file: PathBuf,
    pub options: InstallOptions,
}

impl StreamingInstaller {
    pub fn new(state_dir: &Path) -> Self {
        StreamingInstaller {
            progress_file: state_dir.join("install-progress.json"),
            options: InstallOptions::default(),
        }
    }
}

use crate::upgrade::actor::Installer;

impl Installer for StreamingInstaller {
    /// Downloads, verifies and writes the image (network, slot and spool writes).
    fn install(
        &self,
        image: &crate::config::UpgradeConfig,
        slot: &Path,
    ) -> Result<(), crate::upgrade::actor::InstallFailure> {
        let fail = |reason: String| crate::upgrade::actor::InstallFailure {
            slot: slot.to_path_buf(),
            reason,
        };
        let req = InstallRequest {
            source: image.image.clone(),
            sha256: image.sha256,
            size: image.size,
            compression: resolve_compression(image.compression, &image.image),
            slot: slot.to_path_buf(),
            progress_file: self.progress_file.clone(),
            verify_written: false,
        };
        let run = async {
            let http = http_client(&self.options).map_err(|e| e.to_string())?;
            install(&req, &http, &self.options)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if image.image.starts_with('/') {
            // Local images need no resume or network: the plain verified copy does.
            return crate::upgrade::actor::LocalCopyInstaller.install(image, slot);
        }
        let result: Result<(), String> = match tokio::runtime::Handle::try_current() {
            // On a blocking thread of the daemon's runtime.
            Ok(handle) => handle.block_on(run),
            Err(_) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run),
                Err(e) => Err(e.to_string()),
            },
        };
        result.map_err(fail)
    }
}
