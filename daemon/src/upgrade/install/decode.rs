//! Decoding downloaded bytes into the slot (zstd, gzip or raw) and finishing the slot write.
//!
//! Invariants: the zstd window is capped by [`InstallOptions::zstd_window_log_max`] (bounded
//! memory); a stream that ends early fails at [`finish_target`] (the decoder must see a
//! complete stream); a failure of the slot under a decoder is reported as a slot error, not
//! as corrupt image data.

use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use rustix::fs::Advice;
use sha2::Digest;

use super::slot::{hash_prefix, slot_err, SlotWriter};
use super::{InstallError, InstallOptions, InstallRequest};
use crate::config::Compression;

/// Where downloaded bytes go.
// One value per install; boxing the writer would only add an indirection per chunk.
#[allow(clippy::large_enum_variant)]
pub(super) enum Target {
    Direct(SlotWriter),
    Spool { file: File, path: PathBuf },
    Zstd(Box<zstd::stream::write::Decoder<'static, SlotWriter>>),
    Gzip(Box<flate2::write::MultiGzDecoder<SlotWriter>>),
}

/// The name of a compression in decoding errors (`raw`, `gzip`, `zstd`). Pure.
pub(super) fn format_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "raw",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// A decoding target writing into `slot`, hashing the written bytes.
pub(super) fn decoding_target(
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

/// Maps a decoder write error: a slot failure underneath stays a slot error, anything else
/// is invalid compressed data.
pub(super) fn decode_error(
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

/// Finishes writing: ends the decoder, syncs the slot, optionally reads it back. Returns
/// (bytes written, their SHA-256 when known: see [`super::InstallReport::written_sha256`]).
/// Writes to and reads from the slot.
pub(super) fn finish_target(
    target: Target,
    download_digest: [u8; 32],
    req: &InstallRequest,
) -> Result<(u64, Option<[u8; 32]>), InstallError> {
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
    let hashed = slot.take_digest().map_err(|e| slot.to_error(e))?;
    // A raw image is written as it is: its digest is the written bytes' digest.
    let digest = hashed.or((req.compression == Compression::None).then_some(download_digest));
    if let (true, Some(digest)) = (req.verify_written, digest) {
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

/// Like [`decode_error`] once the decoder has given up its writer: a full slot is a slot
/// error, anything else invalid compressed data.
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
