//! The `upgrade:` block: which OS image to install into the inactive slot. `version`, `image`
//! and `sha256` are required; `size`, `compression` and `tries` are optional. The block is
//! dropped (`None`) when any of its values is bad, after every problem has been reported.

use super::syntax::{check_path, check_url};
use super::tree::{parse_uint, text};
use super::{Cx, Reported};
use crate::config::model::{Compression, UpgradeConfig};
use crate::config::yaml::{Node, Pos};

/// Boot attempts of a new slot when `tries` is not set.
const DEFAULT_TRIES: u8 = 3;

/// Converts the `upgrade:` block `u`.
pub(super) fn upgrade(cx: &mut Cx, u: &Node) -> Option<UpgradeConfig> {
    let version = required(cx, u, "version");
    let image = required(cx, u, "image");
    let sha = required(cx, u, "sha256");
    let version = version.and_then(|(v, pos)| check_version(cx, v, &pos));
    let image = image.and_then(|(img, pos)| check_image(cx, img, &pos));
    let sha256 = sha.and_then(|(s, pos)| check_sha256(cx, &s, &pos));
    let size = u.get("size").map(|n| image_size(cx, n)).transpose();
    let compression = u
        .get("compression")
        .map(|n| image_compression(cx, n))
        .transpose();
    let tries = u.get("tries").map(|n| boot_tries(cx, n)).transpose();
    Some(UpgradeConfig {
        version: version.ok()?,
        image: image.ok()?,
        sha256: sha256.ok()?,
        size: size.ok()?,
        compression: compression.ok()?,
        tries: tries.ok()?.unwrap_or(DEFAULT_TRIES),
    })
}

/// The text and position of required key `key`; reported when missing.
fn required(cx: &mut Cx, u: &Node, key: &str) -> Result<(String, Pos), Reported> {
    match u.get(key) {
        Some(n) => Ok((text(n).unwrap_or_default(), n.pos.clone())),
        None => {
            cx.err(
                &u.pos,
                &format!("upgrade.{key}"),
                "missing; required in an upgrade block",
            );
            Err(Reported)
        }
    }
}

/// `version`: any text without spaces or control characters.
fn check_version(cx: &mut Cx, v: String, pos: &Pos) -> Result<String, Reported> {
    if v.trim().is_empty() || v.contains(char::is_whitespace) || v.contains(char::is_control) {
        cx.err(
            pos,
            "upgrade.version",
            "expected a version string without spaces or control characters",
        );
        return Err(Reported);
    }
    Ok(v)
}

/// `image`: an absolute path on the node, or an https URL (http only to loopback).
fn check_image(cx: &mut Cx, img: String, pos: &Pos) -> Result<String, Reported> {
    let r = if img.starts_with('/') {
        check_path(&img).map(|_| ())
    } else {
        check_url(&img)
    };
    match r {
        Ok(()) => Ok(img),
        Err(e) => {
            cx.err(
                pos,
                "upgrade.image",
                format!("{e}; expected an https URL or an absolute path"),
            );
            Err(Reported)
        }
    }
}

/// `sha256`: 64 hexadecimal digits.
fn check_sha256(cx: &mut Cx, s: &str, pos: &Pos) -> Result<[u8; 32], Reported> {
    match hex::decode(s.trim()) {
        Ok(b) if b.len() == 32 => {
            let mut sha = [0; 32];
            sha.copy_from_slice(&b);
            Ok(sha)
        }
        _ => {
            cx.err(
                pos,
                "upgrade.sha256",
                "expected 64 hexadecimal digits (the SHA-256 of the image)",
            );
            Err(Reported)
        }
    }
}

/// `size`: a positive number of bytes.
fn image_size(cx: &mut Cx, n: &Node) -> Result<u64, Reported> {
    match parse_uint(n) {
        Ok(v) if v > 0 => Ok(v),
        Ok(_) => {
            cx.err(
                &n.pos,
                "upgrade.size",
                "expected a positive number of bytes",
            );
            Err(Reported)
        }
        Err(e) => {
            cx.err(
                &n.pos,
                "upgrade.size",
                format!("{e}; expected a number of bytes"),
            );
            Err(Reported)
        }
    }
}

/// `compression`: `none`, `gzip` or `zstd`.
fn image_compression(cx: &mut Cx, n: &Node) -> Result<Compression, Reported> {
    match text(n).unwrap_or_default().as_str() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        other => {
            cx.err(
                &n.pos,
                "upgrade.compression",
                format!("{other:?}; expected one of \"none\", \"gzip\", \"zstd\""),
            );
            Err(Reported)
        }
    }
}

/// `tries`: boot attempts of the new slot, 1 to 15.
fn boot_tries(cx: &mut Cx, n: &Node) -> Result<u8, Reported> {
    match parse_uint(n) {
        Ok(t @ 1..=15) => Ok(t as u8),
        _ => {
            cx.err(
                &n.pos,
                "upgrade.tries",
                "expected a number of boot attempts from 1 to 15",
            );
            Err(Reported)
        }
    }
}
