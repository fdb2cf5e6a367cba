//! The ext4 slot filesystem: sizing (pure), `mke2fs -d` from the staging tree, then one
//! `debugfs` pass writing what the staging tree could not hold without root (owners,
//! modes, setuid bits, xattrs, device nodes) and fixed timestamps, then `e2fsck -fn`.
//!
//! Reproducibility (e2fsprogs 1.47.0, Debian 12): the same tree and options give the same
//! bytes. `E2FSPROGS_FAKE_TIME` pins every time e2fsprogs takes from the clock (superblock
//! times, `crtime`, journal); the UUID and the directory hash seed are fixed (`-U`, `-E
//! hash_seed=`); `mke2fs -d` adds entries in `alphasort` order (`LC_ALL=C`); the features
//! come from bosun's own `mke2fs.conf`, not the host's; and the debugfs pass overwrites the
//! inode times `mke2fs -d` copied from the staging files (`ctime` and `atime` there are
//! whenever bosun wrote or read them) with the entry's mtime and `SOURCE_DATE_EPOCH`.
//!
//! Limits: `debugfs` exits 0 even when a command fails, so any line on its stderr other than
//! its version banner is an error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::layers::Kind;
use super::rootfs::{Node, NodeKind};
use super::{argv, io_err, run_tool, ImageError};
use crate::runner::CommandRunner;

/// Filesystem block size in bytes (`mke2fs -b 4096`); sizes are rounded down to whole blocks.
pub const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;
/// Room left in the inode body for xattrs before they need a block of their own (approx.).
const IN_INODE_XATTR: usize = 96;

/// bosun's mke2fs.conf: ext4 as Debian 12 makes it, fixed here so the host's
/// `/etc/mke2fs.conf` cannot change the image (and without features GRUB 2.06 cannot read).
pub const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// How big the filesystem must be for a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Smallest filesystem (bytes, whole blocks) the tree is expected to fit in.
    pub min_bytes: u64,
    /// Inodes to create (every node, plus room for the running system to add files).
    pub inodes: u64,
}

/// The journal mke2fs makes for a filesystem of `blocks` (ext2fs_default_journal_size).
pub fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 2048 => 0,
        b if b < 32_768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        b if b < 8192 * 1024 => 32_768,
        b if b < 16_384 * 1024 => 65_536,
        b if b < 32_768 * 1024 => 131_072,
        _ => 262_144,
    }
}

/// Estimates the filesystem a tree needs (pure): data blocks, directory blocks, long
/// symlinks, xattr blocks, the inode table, the journal and group metadata.
pub fn estimate(nodes: &[Node]) -> Estimate {
    let mut data = 0u64;
    for n in nodes {
        data += match &n.kind {
            NodeKind::File { size } => size.div_ceil(BLOCK),
            // ~32 bytes per entry (8-byte header, name, padding), at least one block.
            NodeKind::Dir { entries } => (entries * 32 + 24).div_ceil(BLOCK).max(1),
            NodeKind::Symlink { target_len } => u64::from(*target_len >= 60),
            NodeKind::Special(_) => 0,
        };
        let xattr_bytes: usize = n
            .meta
            .xattrs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum();
        if xattr_bytes > IN_INODE_XATTR {
            data += xattr_bytes.div_ceil(BLOCK as usize) as u64;
        }
    }
    let count = nodes.len() as u64;
    let inodes = (count + count / 4 + 256).div_ceil(16) * 16;
    let itable = (inodes * INODE_SIZE).div_ceil(BLOCK);
    let mut blocks = data + itable;
    // Bitmaps, group descriptors, reserved GDT blocks, extent tree blocks, lost+found, 1%
    // reserved for root: 3% + 512 blocks covers them.
    blocks += blocks * 3 / 100 + 512;
    blocks += journal_blocks(blocks + 1024);
    Estimate {
        min_bytes: blocks * BLOCK,
        inodes,
    }
}

/// The size to build (pure): `requested` when the tree fits in it, else [`ImageError::TooBig`];
/// without a request, the estimate plus 20% and 32 MiB of headroom, in whole MiB.
pub fn choose_size(est: &Estimate, requested: Option<u64>) -> Result<u64, ImageError> {
    match requested {
        Some(size) if size < est.min_bytes => Err(ImageError::TooBig {
            needed: est.min_bytes,
            size,
        }),
        Some(size) => Ok(size / BLOCK * BLOCK),
        None => {
            let with_room = est.min_bytes + est.min_bytes / 5 + (32 << 20);
            Ok(with_room.div_ceil(1 << 20) << 20)
        }
    }
}

/// Parses a size: bytes, or a number with `K`, `M`, `G` (powers of 1024) (pure).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size (expected bytes, or e.g. 512M, 2G)"))
}

/// A UUID (RFC 4122 form, version 4 bits set) derived from `seed` (pure), so the same seed
/// gives the same filesystem UUID and hash seed.
pub fn uuid_from(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// A path in a debugfs command: absolute, double-quoted (`"` doubled, as its parser wants).
fn quoted(rel: &str) -> String {
    format!("\"/{}\"", rel.replace('"', "\"\""))
}

fn type_bits(kind: &NodeKind) -> u32 {
    match kind {
        NodeKind::Dir { .. } => 0o040000,
        NodeKind::File { .. } => 0o100000,
        NodeKind::Symlink { .. } => 0o120000,
        NodeKind::Special(Kind::Char(..)) => 0o020000,
        NodeKind::Special(Kind::Block(..)) => 0o060000,
        NodeKind::Special(_) => 0o010000,
    }
}

/// The debugfs script for `nodes` (pure): device nodes created with `mknod`, then per inode
/// xattrs (`ea_set -f`, values in files named by `xattr_file(n)`), owner, mode and times
/// (`mtime`/`atime` from the entry, `ctime`/`crtime` = `epoch`). Returns the script and the
/// xattr value files to write first.
pub fn debugfs_script(
    nodes: &[Node],
    epoch: i64,
    xattr_file: &dyn Fn(usize) -> PathBuf,
) -> (String, Vec<(PathBuf, Vec<u8>)>) {
    let mut s = String::new();
    let mut files = Vec::new();
    for n in nodes {
        if let NodeKind::Special(kind) = &n.kind {
            let (dir, name) = n.path.rsplit_once('/').unwrap_or(("", &n.path));
            let spec = match kind {
                Kind::Char(ma, mi) => format!("c {ma} {mi}"),
                Kind::Block(ma, mi) => format!("b {ma} {mi}"),
                _ => "p".to_string(),
            };
            let _ = writeln!(s, "cd {}", quoted(dir));
            let _ = writeln!(s, "mknod \"{}\" {spec}", name.replace('"', "\"\""));
            let _ = writeln!(s, "cd /");
        }
    }
    for n in nodes {
        let p = quoted(&n.path);
        for (name, value) in &n.meta.xattrs {
            let file = xattr_file(files.len());
            let _ = writeln!(s, "ea_set -f \"{}\" {p} {name}", file.display());
            files.push((file, value.clone()));
        }
        let perms = if matches!(n.kind, NodeKind::Symlink { .. }) {
            0o777
        } else {
            n.meta.mode & 0o7777
        };
        let m = &n.meta;
        let _ = writeln!(s, "sif {p} uid {}", m.uid);
        let _ = writeln!(s, "sif {p} gid {}", m.gid);
        let _ = writeln!(s, "sif {p} mode 0{:o}", type_bits(&n.kind) | perms);
        for (field, t) in [
            ("mtime", m.mtime),
            ("atime", m.mtime),
            ("ctime", epoch),
            ("crtime", epoch),
        ] {
            let _ = writeln!(s, "sif {p} {field} @{}", t.max(0));
        }
    }
    (s, files)
}

/// What to build.
pub struct Ext4Spec<'a> {
    /// The staging tree `mke2fs -d` copies names and contents from.
    pub staging: &'a Path,
    /// Every inode of the tree, for the `debugfs` pass (owners, modes, xattrs, device nodes,
    /// times).
    pub nodes: &'a [Node],
    /// Filesystem label (`mke2fs -L`).
    pub label: &'a str,
    /// Filesystem UUID (`mke2fs -U`), also the directory hash seed.
    pub uuid: &'a str,
    /// Filesystem size in bytes.
    pub size: u64,
    /// Number of inodes to create (`mke2fs -N`), from [`estimate`].
    pub inodes: u64,
    /// SOURCE_DATE_EPOCH: the time e2fsprogs sees, and every ctime/crtime.
    pub epoch: i64,
    /// Scratch directory for mke2fs.conf, the debugfs script and xattr values.
    pub work: &'a Path,
}

/// `env` prefix pinning locale, time and config for e2fsprogs.
fn e2fs_env(spec: &Ext4Spec, conf: &Path) -> Vec<String> {
    argv(&[
        "env",
        "LC_ALL=C",
        &format!("E2FSPROGS_FAKE_TIME={}", spec.epoch),
        &format!("MKE2FS_CONFIG={}", conf.display()),
    ])
}

/// Builds the filesystem into `out` (a new file): mke2fs -d, the debugfs pass, e2fsck -fn.
/// Writes `out` and files in `spec.work`; runs the tools through `runner`.
pub fn build(runner: &dyn CommandRunner, spec: &Ext4Spec, out: &Path) -> Result<(), ImageError> {
    let conf = spec.work.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(io_err(&conf))?;
    let journal_mib = (journal_blocks(spec.size / BLOCK) * BLOCK) >> 20;
    let mut mke2fs = e2fs_env(spec, &conf);
    mke2fs.extend(argv(&[
        "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256",
    ]));
    mke2fs.extend(argv(&[
        "-N".to_string(),
        spec.inodes.to_string(),
        "-m".into(),
        "1".into(),
        "-L".into(),
        spec.label.to_string(),
        "-U".into(),
        spec.uuid.to_string(),
        "-E".into(),
        format!("hash_seed={},root_owner=0:0,no_copy_xattrs", spec.uuid),
    ]));
    if journal_mib > 0 {
        mke2fs.extend(argv(&["-J".to_string(), format!("size={journal_mib}")]));
    }
    mke2fs.extend(argv(&[
        "-d".to_string(),
        spec.staging.display().to_string(),
        out.display().to_string(),
        format!("{}k", spec.size / 1024),
    ]));
    run_tool(runner, &mke2fs).map_err(|e| match e {
        ImageError::Tool { ref stderr, .. }
            if stderr.contains("Could not allocate block")
                || stderr.contains("No space left")
                || stderr.contains("Could not allocate inode") =>
        {
            ImageError::TooBig {
                needed: spec.size + 1,
                size: spec.size,
            }
        }
        e => e,
    })?;

    let xattr_dir = spec.work.join("xattrs");
    std::fs::create_dir_all(&xattr_dir).map_err(io_err(&xattr_dir))?;
    let (script, values) =
        debugfs_script(spec.nodes, spec.epoch, &|i| xattr_dir.join(i.to_string()));
    for (path, value) in &values {
        std::fs::write(path, value).map_err(io_err(path))?;
    }
    let script_path = spec.work.join("debugfs.cmds");
    std::fs::write(&script_path, script).map_err(io_err(&script_path))?;
    let mut debugfs = e2fs_env(spec, &conf);
    debugfs.extend(argv(&[
        "debugfs".to_string(),
        "-w".into(),
        "-f".into(),
        script_path.display().to_string(),
        out.display().to_string(),
    ]));
    let result = runner.run(&debugfs)?;
    let stderr = String::from_utf8_lossy(&result.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !result.success() || !errors.is_empty() {
        return Err(ImageError::Tool {
            command: crate::runner::display_argv(&debugfs),
            status: result.status_text(),
            stderr: errors
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    let mut fsck = e2fs_env(spec, &conf);
    fsck.extend(argv(&[
        "e2fsck".to_string(),
        "-fn".into(),
        out.display().to_string(),
    ]));
    run_tool(runner, &fsck)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layers::Meta;

    fn node(path: &str, kind: NodeKind) -> Node {
        Node {
            path: path.into(),
            kind,
            meta: Meta::root_owned(0o644, 100),
        }
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        for bad in ["", "0", "12MB", "-1", "M"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn estimate_grows_with_content_and_an_explicit_size_below_it_is_refused() {
        let small = estimate(&[
            node("", NodeKind::Dir { entries: 1 }),
            node("a", NodeKind::File { size: 1 }),
        ]);
        let big = estimate(&[
            node("", NodeKind::Dir { entries: 1 }),
            node("a", NodeKind::File { size: 100 << 20 }),
        ]);
        assert!(big.min_bytes >= small.min_bytes + (100 << 20));
        assert!(matches!(
            choose_size(&big, Some(10 << 20)),
            Err(ImageError::TooBig { .. })
        ));
        assert_eq!(
            choose_size(&big, Some(big.min_bytes + 4095)).unwrap(),
            big.min_bytes
        );
        let auto = choose_size(&big, None).unwrap();
        assert!(auto > big.min_bytes && auto.is_multiple_of(1 << 20));
    }

    #[test]
    fn journal_follows_mke2fs_defaults() {
        assert_eq!(journal_blocks(1000), 0);
        assert_eq!(journal_blocks(20_000), 1024);
        assert_eq!(journal_blocks(100_000), 4096);
        assert_eq!(journal_blocks(10_000_000), 65_536);
    }

    #[test]
    fn uuids_are_stable_per_seed_and_rfc4122_shaped() {
        let a = uuid_from("bosun-slot v1");
        assert_eq!(a, uuid_from("bosun-slot v1"));
        assert_ne!(a, uuid_from("bosun-slot v2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn debugfs_script_sets_owner_mode_times_xattrs_and_makes_devices() {
        let mut suid = node("usr/bin/su", NodeKind::File { size: 10 });
        suid.meta.mode = 0o4755;
        suid.meta.uid = 0;
        suid.meta.gid = 42;
        suid.meta
            .xattrs
            .insert("security.capability".into(), vec![1, 2]);
        let nodes = vec![
            node("", NodeKind::Dir { entries: 2 }),
            suid,
            node("link", NodeKind::Symlink { target_len: 3 }),
            node("dev/null", NodeKind::Special(Kind::Char(1, 3))),
            node("say \"hi\"", NodeKind::File { size: 0 }),
        ];
        let (script, files) = debugfs_script(&nodes, 500, &|i| PathBuf::from(format!("/w/{i}")));
        assert_eq!(files, vec![(PathBuf::from("/w/0"), vec![1, 2])]);
        for line in [
            "sif \"/\" mode 040644",
            "ea_set -f \"/w/0\" \"/usr/bin/su\" security.capability",
            "sif \"/usr/bin/su\" mode 0104755",
            "sif \"/usr/bin/su\" gid 42",
            "sif \"/usr/bin/su\" mtime @100",
            "sif \"/usr/bin/su\" ctime @500",
            "sif \"/link\" mode 0120777",
            "cd \"/dev\"\nmknod \"null\" c 1 3\ncd /",
            "sif \"/dev/null\" mode 020644",
            "sif \"/say \"\"hi\"\"\" uid 0",
        ] {
            assert!(script.contains(line), "missing {line:?} in\n{script}");
        }
        // Devices exist before their attributes are set.
        assert!(script.find("mknod").unwrap() < script.find("sif \"/dev/null\"").unwrap());
    }
}
