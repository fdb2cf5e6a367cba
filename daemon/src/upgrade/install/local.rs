//! Installing from a local image path: one pass of read → hash → decompress → slot. Nothing
//! to resume, so no progress is kept until the install is complete.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::decode::{decoding_target, finish_target, Target};
use super::pipeline::{check_hash, Pipeline};
use super::progress::{complete_record, write_progress};
use super::slot::{SlotInfo, SlotWriter};
use super::{InstallError, InstallMode, InstallOptions, InstallReport, InstallRequest, READ_BUF};
use crate::config::Compression;
use crate::statefile;

/// Local path: one pass of read → hash → decompress → slot. Reads the image, writes the
/// slot and the progress file.
pub(super) fn install_local(
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
    // Only a read-back needs the decompressed bytes' hash (see InstallReport::written_sha256).
    let hash_written = req.verify_written && req.compression != Compression::None;
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
