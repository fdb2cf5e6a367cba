//! The writer thread of an HTTP download: opens the target for the download's mode (slot,
//! spool or decoder), records where the download starts, feeds the received chunks through
//! the [`Pipeline`], and at the end verifies (size, SHA-256) and finishes the slot, or
//! checkpoints the offset reached when the network side stopped early.
//!
//! Invariant: the progress record claims `complete` only after the hash matched and the slot
//! was finished and synced; a spool is decompressed only after it matched the hash.

use std::io::{Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::decode::{decoding_target, finish_target, Target};
use super::pipeline::{check_hash, Pipeline};
use super::progress::{complete_record, write_progress, InstallProgress, ProgressPhase};
use super::slot::{hash_prefix, slot_err, SlotInfo, SlotWriter};
use super::spool::{spool_err, unspool};
use super::{spool_path, InstallError, InstallMode, InstallOptions, InstallRequest};
use crate::statefile;

/// How the writer thread starts.
pub(super) struct SinkSetup {
    pub(super) req: InstallRequest,
    pub(super) slot: SlotInfo,
    pub(super) opts: InstallOptions,
    pub(super) mode: InstallMode,
    /// Download offset the response starts at (0 unless resumed).
    pub(super) start: u64,
    pub(super) progress: InstallProgress,
    /// Exact download size, when known.
    pub(super) limit: Option<u64>,
}

/// A message from the network task to the writer thread.
pub(super) enum Msg<B> {
    /// The next chunk of the body.
    Data(B),
    /// The body ended normally.
    End,
}

/// Writer-thread result.
pub(super) enum SinkEnd {
    /// The body ended and everything verified: (image size, written, written sha256 when known).
    Done(u64, u64, Option<[u8; 32]>),
    /// The network side stopped early; progress was checkpointed at this offset.
    Stopped(u64),
}

/// The writer thread: receives chunks, hashes, writes, checkpoints; at the end verifies and
/// finishes. Writes the slot, spool and progress file.
pub(super) fn run_sink<B: AsRef<[u8]>>(
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
    let (target, hasher) = open_target(&req, &slot, &opts, mode, start, &spool)?;
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
    finish_download(pipe, &req, &slot, &opts, mode, limit)
}

/// Opens where the bytes of a `mode` download starting at `start` go, and the hash of the
/// bytes before `start`: the slot itself (`Direct`; a resume re-hashes the slot prefix), the
/// spool (`Spool`; truncated to `start`, its prefix re-hashed), or a decoder into the slot
/// (`Stream`). Reads and writes the slot or the spool.
fn open_target(
    req: &InstallRequest,
    slot: &SlotInfo,
    opts: &InstallOptions,
    mode: InstallMode,
    start: u64,
    spool: &Path,
) -> Result<(Target, Sha256), InstallError> {
    let mut hasher = Sha256::new();
    let target = match mode {
        InstallMode::Direct => {
            let w = SlotWriter::open(slot, start, false, 0)?;
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
                .open(spool)
                .map_err(spool_err(spool, "open"))?;
            file.set_len(start).map_err(spool_err(spool, "truncate"))?;
            if start > 0 {
                hasher = hash_prefix(&file, start).map_err(spool_err(spool, "re-read"))?;
            }
            file.seek(SeekFrom::Start(start))
                .map_err(spool_err(spool, "seek"))?;
            Target::Spool {
                file,
                path: spool.to_path_buf(),
            }
        }
        _ => {
            let w = SlotWriter::open(slot, 0, req.verify_written, opts.sync_interval)?;
            decoding_target(req.compression, w, opts)?
        }
    };
    Ok((target, hasher))
}

/// After the body ended: checks the exact size (a short body checkpoints and is
/// [`InstallError::ShortImage`]) and the SHA-256, then finishes the slot (or, for a spool,
/// records `downloaded` and decompresses it) and records completion. Writes the slot, the
/// spool and the progress file.
fn finish_download(
    mut pipe: Pipeline,
    req: &InstallRequest,
    slot: &SlotInfo,
    opts: &InstallOptions,
    mode: InstallMode,
    limit: Option<u64>,
) -> Result<SinkEnd, InstallError> {
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
    check_hash(req, digest)?;
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
            return unspool(req, slot, opts, image_size, false)
                .map(|(w, s)| SinkEnd::Done(image_size, w, s));
        }
        target => finish_target(target, digest, req)?,
    };
    write_progress(
        &req.progress_file,
        &complete_record(req, mode, image_size, written, sha),
    )?;
    Ok(SinkEnd::Done(image_size, written, sha))
}
