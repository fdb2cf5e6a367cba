//! Tar layers → typed entries: path checks, whiteout names, owners/modes/xattrs from the tar
//! headers and PAX records, and transparent gzip/zstd decompression.
//!
//! Invariants:
//! - A path (or hard-link target) that is absolute or contains `..` is refused with the
//!   layer and the entry named; nothing about it reaches the staging tree.
//! - Names must be UTF-8 without newlines (they are written into a `debugfs` script).
//! - `.wh.NAME` removes NAME from the lower layers, `.wh..wh..opq` makes its directory
//!   opaque (OCI image-spec `layer.md`); other `.wh..wh.` names (aufs internals) are skipped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

/// A normalised path inside the root filesystem: components joined by `/`, no leading `/`,
/// no `.` or `..`; the empty string is the root directory itself.
pub type RelPath = String;

/// Owner, permissions, time and extended attributes of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Owner user id, from the tar header or a PAX `uid` record (user names are not looked up).
    pub uid: u32,
    /// Owner group id, from the tar header or a PAX `gid` record.
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Extended attributes (`security.capability`, `user.*`, …) by full name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Meta {
    /// root:root with `mode` and time `mtime`, no xattrs.
    pub fn root_owned(mode: u32, mtime: i64) -> Meta {
        Meta {
            uid: 0,
            gid: 0,
            mode,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file (contents follow in the tar).
    File,
    /// A symbolic link with this target, stored as written (may be absolute).
    Symlink(String),
    /// A hard link to another path of the same root filesystem.
    HardLink(RelPath),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One entry of a layer, its path checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalised path inside the root filesystem.
    pub path: RelPath,
    /// What the entry is.
    pub kind: Kind,
    /// Owner, permissions, time and xattrs.
    pub meta: Meta,
}

/// What a path means for the layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// An ordinary entry.
    None,
    /// `DIR/.wh.NAME`: delete `DIR/NAME` from the lower layers.
    Remove(RelPath),
    /// `DIR/.wh..wh..opq`: hide everything the lower layers put in `DIR`.
    Opaque(&'a str),
    /// Another `.wh..wh.` name (aufs bookkeeping): ignored.
    Ignored,
}

/// Checks and normalises an entry path (pure). `./a/b/` → `a/b`; `.` → `` (the root).
pub fn entry_path(raw: &[u8]) -> Result<RelPath, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the name is not UTF-8".to_string())?;
    if text.contains(['\n', '\r', '\0']) {
        return Err("the name contains a newline or NUL".into());
    }
    if text.starts_with('/') {
        return Err("absolute path: layer paths must be relative to the root filesystem".into());
    }
    let mut parts = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err("the path contains `..` and would escape the root filesystem".into())
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Classifies a checked path as a whiteout or not (pure).
pub fn whiteout(path: &str) -> Whiteout<'_> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    };
    if name == ".wh..wh..opq" {
        Whiteout::Opaque(dir)
    } else if name.starts_with(".wh..wh.") {
        Whiteout::Ignored
    } else if let Some(target) = name.strip_prefix(".wh.") {
        if dir.is_empty() {
            Whiteout::Remove(target.to_string())
        } else {
            Whiteout::Remove(format!("{dir}/{target}"))
        }
    } else {
        Whiteout::None
    }
}

/// Wraps `reader` in a gzip or zstd decoder when its first bytes say so (magic numbers rule
/// over media types, which some tools get wrong).
pub fn decompressed<R: Read + 'static>(reader: R) -> std::io::Result<Box<dyn Read>> {
    let mut buf = BufReader::with_capacity(1 << 16, reader);
    let head = buf.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(buf)?))
    } else {
        Ok(Box::new(buf))
    }
}

/// Reads every entry of a tar stream in order, calling `apply` with the checked entry and its
/// content (empty for anything but files). `layer` names the layer in errors.
pub fn for_each_entry<R: Read>(
    reader: R,
    layer: &str,
    mut apply: impl FnMut(Entry, &mut dyn Read) -> Result<(), super::ImageError>,
) -> Result<(), super::ImageError> {
    let layer_err = |reason: String| super::ImageError::Layer {
        layer: layer.to_string(),
        reason,
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| layer_err(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| layer_err(format!("reading the tar stream: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let entry_err = |reason: String| super::ImageError::Entry {
            layer: layer.to_string(),
            entry: shown.clone(),
            reason,
        };
        let typed = typed_entry(&mut entry, &raw).map_err(entry_err)?;
        let Some(typed) = typed else { continue };
        apply(typed, &mut entry)?;
    }
    Ok(())
}

/// The typed entry of a tar header, `None` for headers that carry no file (global PAX).
fn typed_entry<R: Read>(entry: &mut tar::Entry<R>, raw: &[u8]) -> Result<Option<Entry>, String> {
    use tar::EntryType as T;
    let header = entry.header().clone();
    let path = entry_path(raw)?;
    let link = || -> Result<Vec<u8>, String> {
        entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .ok_or_else(|| "link without a target".to_string())
    };
    let device = || -> Result<(u32, u32), String> {
        let major = header.device_major().map_err(|e| e.to_string())?;
        let minor = header.device_minor().map_err(|e| e.to_string())?;
        Ok((major.unwrap_or(0), minor.unwrap_or(0)))
    };
    let kind = match header.entry_type() {
        T::Regular | T::Continuous => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => {
            let target = String::from_utf8(link()?)
                .map_err(|_| "symlink target is not UTF-8".to_string())?;
            if target.contains(['\n', '\0']) {
                return Err("symlink target contains a newline or NUL".into());
            }
            Kind::Symlink(target)
        }
        T::Link => {
            let target = entry_path(&link()?).map_err(|e| format!("hard link target: {e}"))?;
            Kind::HardLink(target)
        }
        T::Char => {
            let (ma, mi) = device()?;
            Kind::Char(ma, mi)
        }
        T::Block => {
            let (ma, mi) = device()?;
            Kind::Block(ma, mi)
        }
        T::Fifo => Kind::Fifo,
        T::XGlobalHeader => return Ok(None),
        other => return Err(format!("unsupported tar entry type {other:?}")),
    };
    let mut meta = Meta {
        uid: u32::try_from(header.uid().map_err(|e| e.to_string())?)
            .map_err(|_| "uid does not fit 32 bits".to_string())?,
        gid: u32::try_from(header.gid().map_err(|e| e.to_string())?)
            .map_err(|_| "gid does not fit 32 bits".to_string())?,
        mode: header.mode().map_err(|e| e.to_string())? & 0o7777,
        mtime: i64::try_from(header.mtime().map_err(|e| e.to_string())?).unwrap_or(0),
        xattrs: BTreeMap::new(),
    };
    if let Some(pax) = entry.pax_extensions().map_err(|e| e.to_string())? {
        for ext in pax {
            let ext = ext.map_err(|e| format!("PAX record: {e}"))?;
            let key = ext.key().map_err(|_| "PAX key is not UTF-8".to_string())?;
            apply_pax(&mut meta, key, ext.value_bytes())?;
        }
    }
    Ok(Some(Entry { path, kind, meta }))
}

/// Applies one PAX record to `meta` (pure): `SCHILY.xattr.*`, `uid`, `gid`, `mtime`.
pub fn apply_pax(meta: &mut Meta, key: &str, value: &[u8]) -> Result<(), String> {
    let number = || -> Result<&str, String> {
        std::str::from_utf8(value).map_err(|_| format!("PAX {key} is not a number"))
    };
    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
        meta.xattrs.insert(name.to_string(), value.to_vec());
    } else if key == "uid" || key == "gid" {
        let n: u32 = number()?.trim().parse().map_err(|_| {
            format!(
                "PAX {key} {:?} is not a 32-bit id",
                String::from_utf8_lossy(value)
            )
        })?;
        if key == "uid" {
            meta.uid = n;
        } else {
            meta.gid = n;
        }
    } else if key == "mtime" {
        let text = number()?.trim();
        let whole = text.split('.').next().unwrap_or("");
        meta.mtime = whole
            .parse()
            .map_err(|_| format!("PAX mtime {text:?} is not a time"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_escapes_refused() {
        assert_eq!(entry_path(b"./etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(entry_path(b"usr/bin/").unwrap(), "usr/bin");
        assert_eq!(entry_path(b"./").unwrap(), "");
        assert_eq!(entry_path(b"a/./b").unwrap(), "a/b");
        for bad in [
            &b"/etc/passwd"[..],
            b"../etc",
            b"usr/../../etc",
            b"a/..",
            b"bad\nname",
            b"\xff\xfe",
        ] {
            assert!(
                entry_path(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn whiteouts_are_recognised_by_name() {
        assert_eq!(
            whiteout("etc/.wh.motd"),
            Whiteout::Remove("etc/motd".into())
        );
        assert_eq!(whiteout(".wh.opt"), Whiteout::Remove("opt".into()));
        assert_eq!(
            whiteout("var/cache/.wh..wh..opq"),
            Whiteout::Opaque("var/cache")
        );
        assert_eq!(whiteout(".wh..wh..opq"), Whiteout::Opaque(""));
        assert_eq!(whiteout("x/.wh..wh.plnk"), Whiteout::Ignored);
        assert_eq!(whiteout("etc/motd.wh.not"), Whiteout::None);
        assert_eq!(whiteout("etc/wh.motd"), Whiteout::None);
    }

    #[test]
    fn pax_records_set_xattrs_ids_and_time() {
        let mut m = Meta::root_owned(0o644, 0);
        apply_pax(&mut m, "SCHILY.xattr.security.capability", b"\x01\x00").unwrap();
        apply_pax(&mut m, "uid", b"4294967294").unwrap();
        apply_pax(&mut m, "gid", b"70000").unwrap();
        apply_pax(&mut m, "mtime", b"1700000000.123456").unwrap();
        apply_pax(&mut m, "path", b"ignored/here").unwrap();
        assert_eq!(m.xattrs["security.capability"], b"\x01\x00");
        assert_eq!((m.uid, m.gid, m.mtime), (4294967294, 70000, 1700000000));
        assert!(apply_pax(&mut m, "uid", b"-1").is_err());
        assert!(apply_pax(&mut m, "mtime", b"soon").is_err());
    }

    #[test]
    fn compressed_streams_are_detected_by_magic() {
        use std::io::Write;
        let plain = b"plain bytes".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        for input in [plain.clone(), gz, zst] {
            let mut out = Vec::new();
            decompressed(std::io::Cursor::new(input))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain);
        }
    }
}
