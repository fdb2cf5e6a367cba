//! The staging tree a root filesystem is assembled in before it becomes ext4.
//!
//! Layers (or a directory, or a tarball) are applied entry by entry to a private directory.
//! Only names and contents go to disk: every file there belongs to the user running bosun
//! and has a plain mode, so no root is needed. Owners, permissions (setuid included), times
//! and xattrs are kept in memory by staging inode, device nodes and FIFOs only in memory;
//! [`super::ext4`] writes them into the filesystem with `debugfs`.
//!
//! Invariants:
//! - Nothing is ever written outside the staging directory: entry paths are checked by
//!   [`super::layers::entry_path`], and symlinks met on the way to a parent directory are
//!   resolved inside the staging root (an absolute or `..`-laden target is clamped to it,
//!   as a container runtime would), never on the host.
//! - The last component of an entry is never followed: an entry replaces what is there.
//! - `.wh..wh..opq` removes what lower layers put in a directory, never what the current
//!   layer added (whatever the order of the entries in the tar stream).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::layers::{self, Entry, Kind, Meta, RelPath, Whiteout};
use super::{io_err, ImageError};

/// The most symlinks followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

/// What one inode of the final tree is, for sizing and for the `debugfs` pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir {
        /// Number of entries in it (for sizing its directory blocks).
        entries: u64,
    },
    /// A regular file.
    File {
        /// Its length in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Length of its target in bytes (targets of 60 bytes or more need a block of their own).
        target_len: u64,
    },
    /// Char, block or FIFO: created by `debugfs mknod`.
    Special(Kind),
}

/// One inode of the final tree: its first path (in sorted walk order) and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The inode's first path in sorted walk order (hard links share one node).
    pub path: RelPath,
    /// What the inode is.
    pub kind: NodeKind,
    /// Owner, mode, time and xattrs written by the `debugfs` pass.
    pub meta: Meta,
}

/// A root filesystem being assembled in a private directory.
pub struct Staging {
    dir: PathBuf,
    meta: HashMap<u64, Meta>,
    specials: BTreeMap<RelPath, (Kind, Meta)>,
    layer_paths: HashSet<RelPath>,
    /// Time given to directories no entry described (implicit parents).
    default_mtime: i64,
}

fn join(parent: &str, name: &str) -> RelPath {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn split_last(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Staging {
    /// Creates the staging directory `dir` (must not exist yet) holding an empty root owned
    /// by root, mode 0755. Writes to disk.
    pub fn create(dir: &Path, default_mtime: i64) -> Result<Staging, ImageError> {
        fs::create_dir(dir).map_err(io_err(dir))?;
        let mut s = Staging {
            dir: dir.to_path_buf(),
            meta: HashMap::new(),
            specials: BTreeMap::new(),
            layer_paths: HashSet::new(),
            default_mtime,
        };
        let ino = s.ino("").map_err(ImageError::Invalid)?;
        s.meta.insert(ino, Meta::root_owned(0o755, default_mtime));
        Ok(s)
    }

    /// The staging directory (what `mke2fs -d` reads).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn host(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(rel)
        }
    }

    fn ino(&self, rel: &str) -> Result<u64, String> {
        fs::symlink_metadata(self.host(rel))
            .map(|m| m.ino())
            .map_err(|e| format!("{rel}: {e}"))
    }

    /// Starts a new layer (for opaque-directory bookkeeping).
    pub fn begin_layer(&mut self) {
        self.layer_paths.clear();
    }

    /// Resolves `path` inside the root: symlinks met on the way are followed within the
    /// staging root (absolute targets start at it, `..` stops at it). The last component is
    /// followed only with `follow_last`. Missing components are kept as they are. Reads only.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<RelPath, String> {
        let mut queue: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = queue.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            if queue.is_empty() && !follow_last {
                done.push(c);
                break;
            }
            let candidate = join(&done.join("/"), &c);
            match fs::symlink_metadata(self.host(&candidate)) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!("{path}: more than {MAX_LINKS} symlinks"));
                    }
                    let target = fs::read_link(self.host(&candidate))
                        .map_err(|e| format!("{candidate}: {e}"))?;
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        done.clear();
                    }
                    queue.extend(target.split('/').rev().map(str::to_string));
                }
                _ => done.push(c),
            }
        }
        Ok(done.join("/"))
    }

    /// Makes sure the resolved directory `rel` exists, creating missing components as root
    /// 0755 directories. Writes to disk.
    fn ensure_dir(&mut self, rel: &str) -> Result<(), String> {
        let mut cur = String::new();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            cur = join(&cur, c);
            if self.specials.contains_key(&cur) {
                return Err(format!("{cur} is a device node or FIFO, not a directory"));
            }
            match fs::symlink_metadata(self.host(&cur)) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("{cur} is not a directory")),
                Err(_) => {
                    fs::create_dir(self.host(&cur)).map_err(|e| format!("{cur}: {e}"))?;
                    let ino = self.ino(&cur)?;
                    self.meta
                        .insert(ino, Meta::root_owned(0o755, self.default_mtime));
                    self.layer_paths.insert(cur.clone());
                }
            }
        }
        Ok(())
    }

    /// Removes `rel` (a whole tree for a directory) and any device node under it. Writes.
    fn remove(&mut self, rel: &str) -> Result<(), String> {
        if rel.is_empty() {
            return Err("cannot remove the root directory".into());
        }
        let prefix = format!("{rel}/");
        self.specials
            .retain(|k, _| k != rel && !k.starts_with(&prefix));
        let host = self.host(rel);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&host),
            Ok(_) => fs::remove_file(&host),
            Err(_) => Ok(()),
        }
        .map_err(|e| format!("removing {rel}: {e}"))
    }

    /// Applies one entry (and its content, for files). Writes inside the staging directory.
    pub fn apply(&mut self, entry: Entry, content: &mut dyn Read) -> Result<(), String> {
        match layers::whiteout(&entry.path) {
            Whiteout::Ignored => return Ok(()),
            Whiteout::Remove(target) => {
                let (parent, name) = split_last(&target);
                if name.is_empty() {
                    return Err("a whiteout without a name".into());
                }
                let parent = self.resolve(parent, true)?;
                return self.remove(&join(&parent, name));
            }
            Whiteout::Opaque(dir) => {
                let dir = self.resolve(dir, true)?;
                return self.make_opaque(&dir);
            }
            Whiteout::None => {}
        }
        if entry.path.is_empty() {
            if entry.kind != Kind::Dir {
                return Err("the root of the filesystem must be a directory".into());
            }
            let ino = self.ino("")?;
            self.meta.insert(ino, entry.meta);
            return Ok(());
        }
        let (parent, name) = split_last(&entry.path);
        let parent = self.resolve(parent, true)?;
        self.ensure_dir(&parent)?;
        let rel = join(&parent, name);
        let host = self.host(&rel);
        let existing = fs::symlink_metadata(&host).ok();
        let keep_dir = entry.kind == Kind::Dir && existing.as_ref().is_some_and(|m| m.is_dir());
        if !keep_dir {
            self.remove(&rel)?;
        }
        let io = |e: std::io::Error| format!("{rel}: {e}");
        match &entry.kind {
            Kind::Dir if keep_dir => {}
            Kind::Dir => fs::create_dir(&host).map_err(io)?,
            Kind::File => {
                let mut f = fs::File::create(&host).map_err(io)?;
                std::io::copy(content, &mut f).map_err(io)?;
                f.flush().map_err(io)?;
            }
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &host).map_err(io)?,
            Kind::HardLink(target) => {
                let (tp, tn) = split_last(target);
                let resolved = join(&self.resolve(tp, true)?, tn);
                if self.specials.contains_key(&resolved) {
                    return Err(format!(
                        "hard link to the device node or FIFO {target} is not supported"
                    ));
                }
                match fs::symlink_metadata(self.host(&resolved)) {
                    Ok(m) if !m.is_dir() => {}
                    Ok(_) => return Err(format!("hard link to the directory {target}")),
                    Err(_) => {
                        return Err(format!(
                            "hard link to {target}, which no earlier entry created"
                        ))
                    }
                }
                fs::hard_link(self.host(&resolved), &host).map_err(io)?;
                self.layer_paths.insert(rel);
                return Ok(());
            }
            Kind::Char(..) | Kind::Block(..) | Kind::Fifo => {
                self.specials.insert(rel.clone(), (entry.kind, entry.meta));
                self.layer_paths.insert(rel);
                return Ok(());
            }
        }
        if !matches!(entry.kind, Kind::Symlink(_)) {
            // The user running bosun must be able to read (and, for directories, fill) it;
            // the real mode goes into the filesystem through debugfs.
            let plain = if entry.kind == Kind::Dir {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&host, fs::Permissions::from_mode(plain)).map_err(io)?;
        }
        let ino = self.ino(&rel)?;
        self.meta.insert(ino, entry.meta);
        self.layer_paths.insert(rel);
        Ok(())
    }

    /// Removes the children of `dir` that the current layer did not add. Writes.
    fn make_opaque(&mut self, dir: &str) -> Result<(), String> {
        let mut doomed: Vec<RelPath> = match fs::read_dir(self.host(dir)) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| join(dir, &e.file_name().to_string_lossy()))
                .collect(),
            Err(_) => Vec::new(),
        };
        doomed.extend(
            self.specials
                .keys()
                .filter(|k| split_last(k).0 == dir)
                .cloned(),
        );
        for child in doomed {
            if !self.layer_paths.contains(&child) {
                self.remove(&child)?;
            }
        }
        Ok(())
    }

    /// The metadata of what `rel` (resolved, last component followed) is; `None` when it
    /// does not exist. Reads only.
    pub fn lookup(&self, rel: &str) -> Option<(NodeKind, Meta)> {
        let rel = self.resolve(rel, true).ok()?;
        if let Some((kind, meta)) = self.specials.get(&rel) {
            return Some((NodeKind::Special(kind.clone()), meta.clone()));
        }
        let m = fs::symlink_metadata(self.host(&rel)).ok()?;
        let meta = self.meta.get(&m.ino())?.clone();
        let kind = if m.is_dir() {
            NodeKind::Dir { entries: 0 }
        } else if m.file_type().is_symlink() {
            NodeKind::Symlink {
                target_len: m.len(),
            }
        } else {
            NodeKind::File { size: m.len() }
        };
        Some((kind, meta))
    }

    /// Writes `IMAGE_VERSION=version` into `/etc/os-release` (through its symlink, e.g. to
    /// `/usr/lib/os-release`), creating the file when there is none. Writes to disk.
    pub fn set_image_version(&mut self, version: &str, mtime: i64) -> Result<(), String> {
        let rel = self.resolve("etc/os-release", true)?;
        let host = self.host(&rel);
        let text = match fs::symlink_metadata(&host) {
            Ok(m) if m.is_file() => fs::read_to_string(&host)
                .map_err(|e| format!("{rel}: {e} (os-release must be UTF-8 text)"))?,
            Ok(_) => return Err(format!("{rel} (os-release) is not a regular file")),
            Err(_) => String::new(),
        };
        let (parent, _) = split_last(&rel);
        self.ensure_dir(parent)?;
        let existed = !text.is_empty() || host.exists();
        fs::write(&host, with_image_version(&text, version)).map_err(|e| format!("{rel}: {e}"))?;
        fs::set_permissions(&host, fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("{rel}: {e}"))?;
        let ino = self.ino(&rel)?;
        let mut meta = if existed {
            self.meta
                .get(&ino)
                .cloned()
                .unwrap_or_else(|| Meta::root_owned(0o644, mtime))
        } else {
            Meta::root_owned(0o644, mtime)
        };
        meta.mtime = mtime;
        self.meta.insert(ino, meta);
        Ok(())
    }

    /// Every inode of the tree once (hard links under their first path in sorted order),
    /// directories before their contents, plus the device nodes. Reads the staging dir.
    pub fn nodes(&self) -> Result<Vec<Node>, ImageError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.walk("", &mut out, &mut seen)?;
        for (path, (kind, meta)) in &self.specials {
            out.push(Node {
                path: path.clone(),
                kind: NodeKind::Special(kind.clone()),
                meta: meta.clone(),
            });
        }
        Ok(out)
    }

    fn walk(
        &self,
        rel: &str,
        out: &mut Vec<Node>,
        seen: &mut HashSet<u64>,
    ) -> Result<(), ImageError> {
        let host = self.host(rel);
        let m = fs::symlink_metadata(&host).map_err(io_err(&host))?;
        let meta = self
            .meta
            .get(&m.ino())
            .cloned()
            .unwrap_or_else(|| Meta::root_owned(0o755, self.default_mtime));
        if m.is_dir() {
            let mut names: Vec<String> = fs::read_dir(&host)
                .map_err(io_err(&host))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(io_err(&host))?;
            names.sort();
            let specials_here = self
                .specials
                .keys()
                .filter(|k| split_last(k).0 == rel)
                .count();
            out.push(Node {
                path: rel.to_string(),
                kind: NodeKind::Dir {
                    entries: (names.len() + specials_here) as u64,
                },
                meta,
            });
            for name in names {
                self.walk(&join(rel, &name), out, seen)?;
            }
        } else if seen.insert(m.ino()) {
            let kind = if m.file_type().is_symlink() {
                NodeKind::Symlink {
                    target_len: m.len(),
                }
            } else {
                NodeKind::File { size: m.len() }
            };
            out.push(Node {
                path: rel.to_string(),
                kind,
                meta,
            });
        }
        Ok(())
    }
}

/// os-release text with `IMAGE_VERSION=version` as its only IMAGE_VERSION line (pure).
pub fn with_image_version(text: &str, version: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("IMAGE_VERSION="))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("IMAGE_VERSION={version}\n"));
    out
}

/// Checks an image version for os-release and file names (pure).
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty()
        || version.len() > 64
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_+~".contains(&b))
    {
        return Err(format!(
            "--version {version:?}: expected 1 to 64 characters of A-Z a-z 0-9 . - _ + ~"
        ));
    }
    Ok(())
}

/// What a bootable A/B slot must contain (pure over `lookup`, which answers what a path
/// resolves to). Returns one message per missing part, empty when all are there.
pub fn missing_parts(lookup: &dyn Fn(&str) -> Option<(NodeKind, Meta)>) -> Vec<String> {
    let is_file = |p: &str| matches!(lookup(p), Some((NodeKind::File { .. }, _)));
    let is_exec =
        |p: &str| matches!(lookup(p), Some((NodeKind::File { .. }, m)) if m.mode & 0o111 != 0);
    let mut missing = Vec::new();
    for (path, what, debian_link) in [
        ("boot/vmlinuz", "kernel", "vmlinuz"),
        ("boot/initrd.img", "initrd", "initrd.img"),
    ] {
        if !is_file(path) {
            let hint = if lookup(debian_link).is_some() {
                format!(
                    " (there is a /{debian_link}: Debian links the kernel in / unless \
                     /etc/kernel-img.conf says link_in_boot = yes; link /{path} to it)"
                )
            } else {
                String::new()
            };
            missing.push(format!(
                "no {what} at /{path}, where boot/grub.cfg loads it{hint}"
            ));
        }
    }
    if !is_exec("usr/bin/bosun") {
        missing.push(
            "no executable /usr/bin/bosun (where bosun.service runs it): install the bosun .deb"
                .into(),
        );
    }
    if !is_file("etc/systemd/system/multi-user.target.wants/bosun.service") {
        missing.push(
            "bosun.service is not enabled (no /etc/systemd/system/multi-user.target.wants/\
             bosun.service resolving to the unit): run `systemctl enable bosun` in the image"
                .into(),
        );
    }
    missing
}

/// Feeds a root filesystem directory to `apply` as entries, sorted, with owners, modes,
/// times, xattrs and hard links taken from the directory (reads only).
pub fn walk_directory(
    root: &Path,
    apply: &mut dyn FnMut(Entry, &mut dyn Read) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let mut links: HashMap<(u64, u64), RelPath> = HashMap::new();
    walk_dir_entry(root, "", &mut links, apply)
}

fn walk_dir_entry(
    root: &Path,
    rel: &str,
    links: &mut HashMap<(u64, u64), RelPath>,
    apply: &mut dyn FnMut(Entry, &mut dyn Read) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    use std::os::unix::fs::FileTypeExt;
    let host = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let m = fs::symlink_metadata(&host).map_err(io_err(&host))?;
    let ft = m.file_type();
    let meta = Meta {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
        mtime: m.mtime(),
        xattrs: read_xattrs(&host)?,
    };
    let entry_err = |reason: String| ImageError::Entry {
        layer: format!("directory {}", root.display()),
        entry: rel.to_string(),
        reason,
    };
    let name_ok = |r: &str| layers::entry_path(r.as_bytes()).map_err(entry_err);
    let path = name_ok(rel)?;
    let mut empty = std::io::empty();
    if ft.is_dir() {
        apply(
            Entry {
                path,
                kind: Kind::Dir,
                meta,
            },
            &mut empty,
        )?;
        let mut names: Vec<String> = Vec::new();
        for e in fs::read_dir(&host).map_err(io_err(&host))? {
            let e = e.map_err(io_err(&host))?;
            let name = e.file_name().into_string().map_err(|n| {
                entry_err(format!("{}: the name is not UTF-8", n.to_string_lossy()))
            })?;
            names.push(name);
        }
        names.sort();
        for name in names {
            walk_dir_entry(root, &join(rel, &name), links, apply)?;
        }
        return Ok(());
    }
    let kind = if ft.is_symlink() {
        let target = fs::read_link(&host).map_err(io_err(&host))?;
        Kind::Symlink(
            target
                .into_os_string()
                .into_string()
                .map_err(|_| entry_err("symlink target is not UTF-8".into()))?,
        )
    } else if let Some(first) = (m.nlink() > 1)
        .then(|| links.get(&(m.dev(), m.ino())).cloned())
        .flatten()
    {
        Kind::HardLink(first)
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_char_device() || ft.is_block_device() {
        let dev = rustix::fs::Dev::from(m.rdev());
        let (ma, mi) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        if ft.is_char_device() {
            Kind::Char(ma, mi)
        } else {
            Kind::Block(ma, mi)
        }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        // Sockets are runtime objects; an image does not carry them.
        return Ok(());
    };
    if m.nlink() > 1 && kind == Kind::File {
        links.insert((m.dev(), m.ino()), path.clone());
    }
    if kind == Kind::File {
        let mut f = fs::File::open(&host).map_err(io_err(&host))?;
        apply(Entry { path, kind, meta }, &mut f)
    } else {
        apply(Entry { path, kind, meta }, &mut empty)
    }
}

/// The extended attributes of `path` (not following a symlink). Reads only.
fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, ImageError> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        // No xattr support on this filesystem: nothing to copy.
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(out),
        Err(e) => return Err(io_err(path)(e.into())),
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value)
            .map_err(|e| io_err(path)(e.into()))?;
        value.truncate(len);
        out.insert(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: path.into(),
            kind,
            meta: Meta::root_owned(0o644, 1),
        }
    }

    fn apply(s: &mut Staging, path: &str, kind: Kind, content: &[u8]) {
        s.apply(entry(path, kind), &mut &content[..]).unwrap();
    }

    fn staging() -> (tempfile::TempDir, Staging) {
        let t = tempfile::tempdir().unwrap();
        let s = Staging::create(&t.path().join("root"), 7).unwrap();
        (t, s)
    }

    #[test]
    fn os_release_gets_exactly_one_image_version_that_bosun_reads_back() {
        let text = with_image_version("NAME=Debian\nIMAGE_VERSION=old\nID=debian", "2026.1");
        assert_eq!(text, "NAME=Debian\nID=debian\nIMAGE_VERSION=2026.1\n");
        assert_eq!(
            crate::upgrade::actor::parse_image_version(&text).as_deref(),
            Some("2026.1")
        );
        assert_eq!(with_image_version("", "v1"), "IMAGE_VERSION=v1\n");
    }

    #[test]
    fn versions_are_checked() {
        assert!(check_version("2026.11.1-rc1+b2").is_ok());
        for bad in ["", "v 1", "v1\n", "a/b", &"x".repeat(65)] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinked_parents_resolve_inside_the_staging_root() {
        let (_t, mut s) = staging();
        apply(&mut s, "usr/bin", Kind::Dir, b"");
        apply(&mut s, "bin", Kind::Symlink("/usr/bin".into()), b"");
        apply(
            &mut s,
            "escape",
            Kind::Symlink("../../../../tmp".into()),
            b"",
        );
        apply(&mut s, "bin/sh", Kind::File, b"#!");
        apply(&mut s, "escape/x", Kind::File, b"x");
        assert!(s.dir().join("usr/bin/sh").is_file());
        // `../../../../tmp` is clamped to the staging root: it is the staging /tmp.
        assert!(s.dir().join("tmp/x").is_file());
        assert_eq!(s.resolve("bin/sh", true).unwrap(), "usr/bin/sh");
    }

    #[test]
    fn opaque_dirs_hide_lower_layers_only() {
        let (_t, mut s) = staging();
        apply(&mut s, "var/cache/old", Kind::File, b"old");
        s.begin_layer();
        // The new layer's own file comes before the opaque marker in the stream.
        apply(&mut s, "var/cache/new", Kind::File, b"new");
        apply(&mut s, "var/cache/.wh..wh..opq", Kind::File, b"");
        apply(&mut s, "var/.wh.gone", Kind::File, b"");
        assert!(!s.dir().join("var/cache/old").exists());
        assert!(s.dir().join("var/cache/new").is_file());
    }

    #[test]
    fn hard_links_share_metadata_and_appear_once() {
        let (_t, mut s) = staging();
        let mut e = entry("a", Kind::File);
        e.meta.uid = 1000;
        s.apply(e, &mut &b"data"[..]).unwrap();
        apply(&mut s, "b", Kind::HardLink("a".into()), b"");
        let nodes = s.nodes().unwrap();
        let files: Vec<&Node> = nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::File { .. }))
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].meta.uid, 1000);
        let err = s
            .apply(entry("c", Kind::HardLink("nothing".into())), &mut &b""[..])
            .unwrap_err();
        assert!(err.contains("no earlier entry"), "{err}");
    }

    #[test]
    fn device_nodes_live_in_memory_and_whiteouts_remove_them() {
        let (_t, mut s) = staging();
        apply(&mut s, "dev/null", Kind::Char(1, 3), b"");
        apply(&mut s, "dev/fifo", Kind::Fifo, b"");
        assert!(!s.dir().join("dev/null").exists());
        assert_eq!(s.nodes().unwrap().len(), 4);
        apply(&mut s, "dev/.wh.null", Kind::File, b"");
        let nodes = s.nodes().unwrap();
        assert!(nodes.iter().all(|n| n.path != "dev/null"));
        assert!(nodes.iter().any(|n| n.path == "dev/fifo"));
    }

    #[test]
    fn a_file_replaces_a_directory_and_its_contents() {
        let (_t, mut s) = staging();
        apply(&mut s, "opt/tool/bin", Kind::File, b"x");
        apply(&mut s, "opt/tool", Kind::File, b"now a file");
        assert!(s.dir().join("opt/tool").is_file());
        let err = s
            .apply(entry("opt/tool/y", Kind::File), &mut &b""[..])
            .unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn missing_boot_parts_are_each_named() {
        let none = |_: &str| None;
        let missing = missing_parts(&none);
        assert_eq!(missing.len(), 4, "{missing:?}");
        let debian = |p: &str| {
            (p == "vmlinuz").then(|| (NodeKind::File { size: 1 }, Meta::root_owned(0o644, 0)))
        };
        assert!(missing_parts(&debian)[0].contains("link_in_boot"));
        let complete = |p: &str| {
            let mode = if p.ends_with("bin/bosun") {
                0o755
            } else {
                0o644
            };
            Some((NodeKind::File { size: 1 }, Meta::root_owned(mode, 0)))
        };
        assert!(missing_parts(&complete).is_empty());
    }
}
