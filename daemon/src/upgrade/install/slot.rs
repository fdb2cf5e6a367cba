//! The inactive slot as a write target: probing it (block device or regular file, and its
//! capacity), the buffered positional writer that hashes what it writes, and re-reading a
//! prefix to rebuild a hash.
//!
//! Durability of writes that are not resume points (decompressing into the slot): they are
//! `fdatasync`ed every [`super::InstallOptions::sync_interval`] bytes on a helper thread, so the disk
//! works while the decoder runs, and at most two intervals of dirty pages exist. Synced ranges
//! are dropped from the page cache (`POSIX_FADV_DONTNEED`) so an image write does not evict
//! the node's working set. The writer never writes past a block device's capacity.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use rustix::fs::Advice;
use sha2::{Digest, Sha256};

use super::{InstallError, READ_BUF};

/// Slot write buffer: writes reach the slot in chunks of this size.
const WRITE_BUF: usize = 1 << 20;

/// The slot: kind and capacity (block devices only).
#[derive(Debug, Clone)]
pub(super) struct SlotInfo {
    pub(super) path: PathBuf,
    pub(super) capacity: Option<u64>,
}

/// Checks that the slot exists and is a block device or a regular file. Reads the filesystem.
pub(super) fn probe_slot(path: &Path) -> Result<SlotInfo, InstallError> {
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

/// Maps an I/O error of `op` on the slot at `path` to [`InstallError::SlotIo`].
pub(super) fn slot_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::SlotIo {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Buffered positional writer into the slot that hashes what it writes. Writes to disk.
///
/// Full buffers are handed to a write-behind thread (`slot-write`) that hashes and writes them
/// in order while the caller decodes the next one: hashing and copying into the page cache
/// cost about as much CPU as decompressing, so the two halves run on two cores. At most
/// [`IN_FLIGHT`] buffers wait there; an error of that thread is returned by the next call.
pub(super) struct SlotWriter {
    pub(super) file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes of the file written and acknowledged (everything before the buffers in flight).
    pub(super) flushed: u64,
    /// Bytes handed to the write-behind thread (or written, without one).
    submitted: u64,
    synced: u64,
    capacity: Option<u64>,
    /// The written bytes' hash, when no write-behind thread holds it.
    hasher: Option<Sha256>,
    behind: Option<WriteBehind>,
    /// Emptied buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Sync every this many bytes by itself (0: only when asked), in the background.
    pub(super) auto_sync: u64,
    /// A background `fdatasync` covering the slot up to this offset.
    pending: Option<(u64, std::thread::JoinHandle<io::Result<()>>)>,
    /// Set when an I/O error came from the slot (so a decoder error can be told apart).
    pub(super) failed: Option<(&'static str, io::ErrorKind)>,
}

/// Buffers handed to the write-behind thread and not yet acknowledged, at most.
const IN_FLIGHT: usize = 2;

/// The write-behind thread: buffers go in with their offset, come back written (or an error).
struct WriteBehind {
    jobs: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
    done: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    in_flight: usize,
    thread: std::thread::JoinHandle<Option<Sha256>>,
}

impl WriteBehind {
    /// Starts the thread on its own handle of the slot; `None` when that is not possible (the
    /// writer then writes inline).
    fn start(file: &File, hasher: Option<Sha256>) -> Result<WriteBehind, Option<Sha256>> {
        let Ok(file) = file.try_clone() else {
            return Err(hasher);
        };
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(IN_FLIGHT);
        let (done_tx, done) = std::sync::mpsc::channel();
        let mut h = hasher.clone();
        let spawned = std::thread::Builder::new()
            .name("slot-write".into())
            .spawn(move || {
                for (offset, buf) in job_rx {
                    if let Some(h) = &mut h {
                        h.update(&buf);
                    }
                    let result = file.write_all_at(&buf, offset).map(|()| buf);
                    let failed = result.is_err();
                    if done_tx.send(result).is_err() || failed {
                        break;
                    }
                }
                h
            });
        match spawned {
            Ok(thread) => Ok(WriteBehind {
                jobs,
                done,
                in_flight: 0,
                thread,
            }),
            Err(_) => Err(hasher),
        }
    }
}

impl SlotWriter {
    /// Opens the slot for writing from `offset` (no truncation, no creation).
    pub(super) fn open(
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
        let (behind, hasher) = match WriteBehind::start(&file, hash.then(Sha256::new)) {
            Ok(b) => (Some(b), None),
            Err(h) => (None, h),
        };
        Ok(SlotWriter {
            file,
            path: slot.path.clone(),
            buf: Vec::with_capacity(WRITE_BUF),
            flushed: offset,
            submitted: offset,
            synced: offset,
            capacity: slot.capacity,
            hasher,
            behind,
            spare: Vec::new(),
            auto_sync,
            pending: None,
            failed: None,
        })
    }

    fn position(&self) -> u64 {
        self.submitted + self.buf.len() as u64
    }

    /// Hands the buffer to the write-behind thread (or writes it inline).
    fn submit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(behind) = &self.behind else {
            if let Some(h) = &mut self.hasher {
                h.update(&self.buf);
            }
            if let Err(e) = self.file.write_all_at(&self.buf, self.submitted) {
                self.failed = Some(("write", e.kind()));
                return Err(e);
            }
            self.submitted += self.buf.len() as u64;
            self.flushed = self.submitted;
            self.buf.clear();
            return Ok(());
        };
        if behind.in_flight >= IN_FLIGHT {
            self.acknowledge_one()?;
        }
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(WRITE_BUF));
        let full = std::mem::replace(&mut self.buf, next);
        let len = full.len() as u64;
        let behind = self.behind.as_mut().expect("checked above");
        if behind.jobs.send((self.submitted, full)).is_err() {
            return self.acknowledge_one();
        }
        behind.in_flight += 1;
        self.submitted += len;
        Ok(())
    }

    /// Waits for the oldest buffer in flight.
    fn acknowledge_one(&mut self) -> io::Result<()> {
        let Some(behind) = &mut self.behind else {
            return Ok(());
        };
        let done = behind
            .done
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("slot write thread stopped")));
        match done {
            Ok(mut buf) => {
                behind.in_flight -= 1;
                self.flushed += buf.len() as u64;
                buf.clear();
                self.spare.push(buf);
                Ok(())
            }
            Err(e) => {
                self.failed = Some(("write", e.kind()));
                Err(e)
            }
        }
    }

    /// Writes the buffer and waits until everything handed over is written.
    fn flush_buf(&mut self) -> io::Result<()> {
        self.submit()?;
        while self.behind.as_ref().is_some_and(|b| b.in_flight > 0) {
            self.acknowledge_one()?;
        }
        Ok(())
    }

    /// The SHA-256 of everything written, when the writer was opened to hash; ends the
    /// write-behind thread. Call after [`SlotWriter::sync`].
    pub(super) fn take_digest(&mut self) -> io::Result<Option<[u8; 32]>> {
        self.flush_buf()?;
        let hasher = match self.behind.take() {
            Some(b) => {
                drop(b.jobs);
                b.thread
                    .join()
                    .map_err(|_| io::Error::other("slot write thread panicked"))?
            }
            None => self.hasher.take(),
        };
        Ok(hasher.map(|h| h.finalize().into()))
    }

    /// Flushes, `fdatasync`s and drops the synced range from the page cache.
    pub(super) fn sync(&mut self) -> io::Result<()> {
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

    pub(super) fn to_error(&self, e: io::Error) -> InstallError {
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
        if self.buf.len() == WRITE_BUF {
            self.submit()?;
            let since = self.submitted - self.pending.as_ref().map_or(self.synced, |p| p.0);
            if self.auto_sync > 0 && since >= self.auto_sync {
                self.flush_buf()?;
                self.sync_in_background()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// SHA-256 of `[0, len)` of a file. Reads the file.
pub(super) fn hash_prefix(file: &File, len: u64) -> io::Result<Sha256> {
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
