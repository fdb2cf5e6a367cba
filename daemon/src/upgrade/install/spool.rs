//! The spool: a compressed HTTP download kept next to the progress file
//! (`<progress>.spool`) so it can resume, and decompressed into the slot only once it matched
//! the SHA-256 (the `Spool` mode of the resume design in the `progress` module).
//!
//! Invariants: unverified bytes are never decompressed from the spool; a crash during the
//! decompression restarts only that local step (the progress record says `downloaded`), not
//! the download; the spool is removed once the slot is complete. With [`SpoolPolicy::Auto`] a
//! spool is used only when the image's size is known and fits in the free space of the
//! spool's filesystem plus [`InstallOptions::spool_reserve`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::decode::{decode_error, decoding_target, finish_target, format_name, Target};
use super::pipeline::check_hash;
use super::progress::{complete_record, write_progress};
use super::slot::{hash_prefix, SlotInfo, SlotWriter};
use super::{
    InstallError, InstallMode, InstallOptions, InstallReport, InstallRequest, SpoolPolicy, READ_BUF,
};
use crate::config::Compression;
use crate::statefile;

/// Where the compressed download is spooled: `<progress_file>.spool`.
pub fn spool_path(progress_file: &Path) -> PathBuf {
    let mut s = progress_file.as_os_str().to_owned();
    s.push(".spool");
    PathBuf::from(s)
}

/// Maps an I/O error of `op` on the spool at `path` to [`InstallError::SpoolIo`].
pub(super) fn spool_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::SpoolIo {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Free bytes on the filesystem holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// How a fresh HTTP download of a `compression` image of `size` bytes moves its bytes: an
/// uncompressed image goes straight to the slot; a compressed one is spooled or streamed as
/// [`InstallOptions::spool`] says. Reads the free space of the `spool`'s filesystem (only
/// with [`SpoolPolicy::Auto`]).
pub(super) fn choose_mode(
    compression: Compression,
    size: Option<u64>,
    opts: &InstallOptions,
    spool: &Path,
) -> InstallMode {
    if compression == Compression::None {
        return InstallMode::Direct;
    }
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
}

/// Finishes an install whose spool of `total` bytes was already downloaded and verified
/// (progress phase `downloaded`): re-hashes the spool, then decompresses it into the slot on
/// a blocking thread. No network. Reads the spool, writes the slot and the progress file,
/// removes the spool.
pub(super) async fn install_from_spool(
    req: &InstallRequest,
    slot: &SlotInfo,
    opts: &InstallOptions,
    total: u64,
) -> Result<InstallReport, InstallError> {
    let (req2, slot2, opts2) = (req.clone(), slot.clone(), opts.clone());
    let (written, sha) =
        tokio::task::spawn_blocking(move || unspool(&req2, &slot2, &opts2, total, true))
            .await
            .map_err(|e| InstallError::Task(e.to_string()))??;
    Ok(InstallReport {
        mode: InstallMode::Spool,
        resumed_from: total,
        restarted: false,
        fetched: 0,
        image_size: total,
        written,
        written_sha256: sha,
    })
}

/// Decompresses the verified spool into the slot, then removes it and records completion.
/// With `verify_first`, re-hashes the spool before writing anything. Reads the spool, writes
/// the slot, removes the spool, writes the progress file.
pub(super) fn unspool(
    req: &InstallRequest,
    slot: &SlotInfo,
    opts: &InstallOptions,
    total: u64,
    verify_first: bool,
) -> Result<(u64, Option<[u8; 32]>), InstallError> {
    let spool = spool_path(&req.progress_file);
    let mut file = File::open(&spool).map_err(spool_err(&spool, "open"))?;
    if verify_first {
        let h = hash_prefix(&file, total).map_err(spool_err(&spool, "re-read"))?;
        check_hash(req, h.finalize().into())?;
    }
    let writer = SlotWriter::open(slot, 0, req.verify_written, opts.sync_interval)?;
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
