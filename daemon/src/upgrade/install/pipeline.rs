//! The download pipeline: hashes the bytes as downloaded, enforces the declared size,
//! forwards the bytes to their target (slot, spool or decoder) and takes durable checkpoints.
//!
//! Durability: every [`super::InstallOptions::sync_interval`] bytes the slot (or spool) is
//! `fdatasync`ed and then the progress offset is written atomically
//! ([`crate::statefile::write_atomic`]); on a network error the same checkpoint is taken at
//! the exact offset reached before the error is returned, so a retry loses nothing. After a
//! crash at most one interval is downloaded again. (Writes that are not resume points are
//! synced by the slot writer itself; see the `slot` module.)

use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::decode::{decode_error, format_name, Target};
use super::progress::{write_progress, InstallProgress};
use super::spool::spool_err;
use super::{InstallError, InstallRequest};
use crate::config::Compression;

/// Hashes the downloaded bytes and forwards them to the target; checkpoints progress.
pub(super) struct Pipeline {
    pub(super) target: Target,
    pub(super) image: String,
    pub(super) compression: Compression,
    pub(super) hasher: Sha256,
    /// Download offset (including a resumed prefix).
    pub(super) received: u64,
    pub(super) fetched: u64,
    pub(super) since_checkpoint: u64,
    pub(super) sync_interval: u64,
    /// Resumable progress (Direct/Spool over HTTP).
    pub(super) progress: Option<(PathBuf, InstallProgress)>,
}

impl Pipeline {
    /// Feeds downloaded bytes. Writes to the slot or spool.
    pub(super) fn feed(&mut self, data: &[u8], limit: Option<u64>) -> Result<(), InstallError> {
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
    pub(super) fn checkpoint(&mut self) -> Result<(), InstallError> {
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

    pub(super) fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

/// Checks the SHA-256 of the bytes as downloaded against the request; a mismatch is
/// [`InstallError::HashMismatch`]. Pure.
pub(super) fn check_hash(req: &InstallRequest, actual: [u8; 32]) -> Result<(), InstallError> {
    if actual != req.sha256 {
        return Err(InstallError::HashMismatch {
            image: req.source.clone(),
            expected: hex::encode(req.sha256),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}
