//! `bosun image slot`, `bosun image disk` and `bosun init`, driven as the real binary against
//! the real tools: OCI archives the test writes itself (tar layers with whiteouts, an opaque
//! directory, non-root owners, setuid, xattrs, symlinks, hard links, a device node), read back
//! from the ext4 image with `debugfs`; the disk's partition table with `sfdisk`, its ESP with
//! mtools, its GRUB environment with `grub-editenv`; `bosun init --check` against a real
//! `git daemon` on 127.0.0.1. No root needed (CI runs as root; nothing here relies on it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::support::git::{self, GitDaemon, SshKey, WorkRepo};

fn bosun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bosun"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run bosun")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "bosun failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read")))
}

// --- tar layers --------------------------------------------------------------------------

/// One tar entry of a test layer.
enum E<'a> {
    Dir(&'a str, u32, u32, u32),
    File(&'a str, u32, u32, u32, &'a [u8]),
    /// A file with extended attributes (PAX `SCHILY.xattr.*`).
    XattrFile(&'a str, u32, &'a [u8], &'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    /// A raw name written into the header as is (for names tar::Builder refuses).
    RawName(&'a [u8]),
}

fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid.into());
    h.set_gid(gid.into());
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// A PAX extended header entry carrying `records` for the next entry.
fn pax(b: &mut tar::Builder<Vec<u8>>, records: &[(&str, &[u8])]) {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        let mut len = body + body.to_string().len();
        if len.to_string().len() != body.to_string().len() {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = header(tar::EntryType::XHeader, 0o644, 0, 0, data.len() as u64);
    h.set_path("PaxHeaders/x").unwrap();
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

fn layer(entries: &[E]) -> Vec<u8> {
    use tar::EntryType as T;
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match *e {
            E::Dir(p, mode, uid, gid) => {
                let mut h = header(T::Directory, mode, uid, gid, 0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, mode, uid, gid, data) => {
                let mut h = header(T::Regular, mode, uid, gid, data.len() as u64);
                b.append_data(&mut h, p, data).unwrap();
            }
            E::XattrFile(p, mode, data, name, value) => {
                pax(&mut b, &[(&format!("SCHILY.xattr.{name}"), value)]);
                let mut h = header(T::Regular, mode, 0, 0, data.len() as u64);
                b.append_data(&mut h, p, data).unwrap();
            }
            E::Symlink(p, target) => {
                let mut h = header(T::Symlink, 0o777, 0, 0, 0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::HardLink(p, target) => {
                let mut h = header(T::Link, 0o755, 0, 0, 0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Char(p, major, minor) => {
                let mut h = header(T::Char, 0o666, 0, 0, 0);
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::RawName(name) => {
                let mut h = header(T::Regular, 0o644, 0, 0, 4);
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, &b"evil"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Writes an OCI layout directory `dir` holding one image with `layers` (bottom first;
/// `(tar, gzip?)`). Returns the layer blob digests.
fn oci_layout(dir: &Path, layers: &[(Vec<u8>, bool)]) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = hex::encode(Sha256::digest(data));
        std::fs::write(blobs.join(&d), data).unwrap();
        (format!("sha256:{d}"), data.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut digests = Vec::new();
    for (tar, gz) in layers {
        diff_ids.push(format!("\"sha256:{}\"", hex::encode(Sha256::digest(tar))));
        let (blob, mt) = if *gz {
            (gzip(tar), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let (d, n) = put(&blob);
        descs.push(format!(
            r#"{{"mediaType":"{mt}","digest":"{d}","size":{n}}}"#
        ));
        digests.push(d);
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (cd, cn) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cn}}},"layers":[{}]}}"#,
        descs.join(",")
    );
    let (md, mn) = put(manifest.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{mn}}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    digests
}

/// Packs an OCI layout directory as an oci-archive tarball.
fn oci_archive(layout: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", layout).unwrap();
    b.finish().unwrap();
}

/// The entries every bootable test image has: kernel, initrd, bosun, its enabled unit.
fn bootable_base() -> Vec<E<'static>> {
    vec![
        E::Dir("./", 0o755, 0, 0),
        E::Dir("boot/", 0o755, 0, 0),
        E::File("boot/vmlinuz", 0o644, 0, 0, b"kernel"),
        E::File("boot/initrd.img", 0o644, 0, 0, b"initrd"),
        E::Dir("usr/", 0o755, 0, 0),
        E::Dir("usr/bin/", 0o755, 0, 0),
        E::File("usr/bin/bosun", 0o755, 0, 0, b"#!bosun"),
        E::Dir("lib/", 0o755, 0, 0),
        E::Dir("lib/systemd/", 0o755, 0, 0),
        E::Dir("lib/systemd/system/", 0o755, 0, 0),
        E::File("lib/systemd/system/bosun.service", 0o644, 0, 0, b"[Unit]\n"),
        E::Dir("etc/", 0o755, 0, 0),
        E::Dir("etc/systemd/", 0o755, 0, 0),
        E::Dir("etc/systemd/system/", 0o755, 0, 0),
        E::Dir("etc/systemd/system/multi-user.target.wants/", 0o755, 0, 0),
        E::Symlink(
            "etc/systemd/system/multi-user.target.wants/bosun.service",
            "/lib/systemd/system/bosun.service",
        ),
    ]
}

/// The two layers of the main test image.
fn test_layers() -> Vec<(Vec<u8>, bool)> {
    let mut base = bootable_base();
    base.extend([
        E::File(
            "etc/os-release",
            0o644,
            0,
            0,
            b"NAME=\"test OS\"\nIMAGE_VERSION=old\n",
        ),
        E::File("etc/motd", 0o644, 0, 0, b"whited out by layer 2"),
        E::Dir("home/", 0o755, 0, 0),
        E::Dir("home/alice/", 0o750, 1000, 1000),
        E::File("home/alice/notes", 0o600, 1000, 1000, b"mine"),
        E::File("usr/bin/passwd", 0o4755, 0, 0, b"setuid"),
        E::XattrFile(
            "usr/bin/ping",
            0o755,
            b"ping",
            "security.capability",
            b"\x01\x00\x00\x02",
        ),
        E::Dir("var/", 0o755, 0, 0),
        E::Dir("var/cache/", 0o755, 0, 0),
        E::Dir("var/cache/apt/", 0o755, 0, 0),
        E::File(
            "var/cache/apt/old.bin",
            0o644,
            0,
            0,
            b"hidden by the opaque dir",
        ),
        E::Dir("dev/", 0o755, 0, 0),
        E::Char("dev/null", 1, 3),
    ]);
    let top = vec![
        E::File("etc/.wh.motd", 0o644, 0, 0, b""),
        E::File("var/cache/apt/new.bin", 0o644, 0, 0, b"new"),
        E::File("var/cache/apt/.wh..wh..opq", 0o644, 0, 0, b""),
        E::File("usr/bin/vim.basic", 0o755, 0, 0, b"vim"),
        E::Symlink("usr/bin/vi", "vim.basic"),
        E::HardLink("usr/bin/view", "usr/bin/vim.basic"),
        E::Dir("srv/", 0o755, 0, 0),
        E::File("srv/data", 0o640, 33, 33, b"www"),
    ];
    vec![(layer(&base), false), (layer(&top), true)]
}

// --- reading the image back --------------------------------------------------------------

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .expect("run debugfs (e2fsprogs)");
    assert!(out.status.success(), "debugfs {request}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every path of the filesystem with (mode, uid, gid), from `debugfs ls -p`, recursively.
fn tree(image: &Path) -> BTreeMap<String, (u32, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let listing = debugfs(image, &format!("ls -p \"/{dir}\""));
        for line in listing.lines().filter(|l| l.starts_with('/')) {
            let f: Vec<&str> = line.split('/').collect();
            // /ino/mode/uid/gid/name/size/
            let name = f[5];
            // (lost+found's preallocated blocks list as entries without a name)
            if name.is_empty() || name == "." || name == ".." {
                continue;
            }
            let mode = u32::from_str_radix(f[2], 8).unwrap();
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            out.insert(
                path.clone(),
                (mode, f[3].parse().unwrap(), f[4].parse().unwrap()),
            );
            if mode & 0o170000 == 0o040000 {
                dirs.push(path);
            }
        }
    }
    out
}

fn links(image: &Path, path: &str) -> u32 {
    let stat = debugfs(image, &format!("stat \"/{path}\""));
    let at = stat.find("Links: ").expect("Links in stat output") + 7;
    stat[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn unzstd(src: &Path, dst: &Path) {
    let data = zstd::decode_all(std::fs::File::open(src).unwrap()).unwrap();
    std::fs::write(dst, data).unwrap();
}

// --- bosun image slot: acceptance 1 ------------------------------------------------------

#[test]
fn image_slot_from_an_oci_archive_keeps_the_tree_owners_modes_and_links_and_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    oci_layout(&layout, &test_layers());
    let archive = t.path().join("os.tar");
    oci_archive(&layout, &archive);

    let out1 = t.path().join("os-1.img.zst");
    let printed = ok(bosun(&[
        "image",
        "slot",
        "--oci",
        archive.to_str().unwrap(),
        "--version",
        "2026.1",
        "--out",
        out1.to_str().unwrap(),
        "--image-url",
        "https://img.example.org/{file}",
    ]));
    let sha1 = sha256(&out1);
    let size1 = std::fs::metadata(&out1).unwrap().len();
    assert!(
        printed.contains(&format!(
            "upgrade:\n  version: \"2026.1\"\n  image: https://img.example.org/os-1.img.zst\n  \
             sha256: {sha1}\n  size: {size1}\n"
        )),
        "{printed}"
    );

    let raw = t.path().join("os.img");
    unzstd(&out1, &raw);
    let got = tree(&raw);
    let d = |m: u32| (0o040000 | m, 0, 0);
    let f = |m: u32| (0o100000 | m, 0, 0);
    let want: BTreeMap<String, (u32, u32, u32)> = [
        ("boot", d(0o755)),
        ("boot/vmlinuz", f(0o644)),
        ("boot/initrd.img", f(0o644)),
        ("usr", d(0o755)),
        ("usr/bin", d(0o755)),
        ("usr/bin/bosun", f(0o755)),
        ("usr/bin/passwd", f(0o4755)),
        ("usr/bin/ping", f(0o755)),
        ("usr/bin/vim.basic", f(0o755)),
        ("usr/bin/view", f(0o755)),
        ("usr/bin/vi", (0o120777, 0, 0)),
        ("lib", d(0o755)),
        ("lib/systemd", d(0o755)),
        ("lib/systemd/system", d(0o755)),
        ("lib/systemd/system/bosun.service", f(0o644)),
        ("etc", d(0o755)),
        ("etc/os-release", f(0o644)),
        ("etc/systemd", d(0o755)),
        ("etc/systemd/system", d(0o755)),
        ("etc/systemd/system/multi-user.target.wants", d(0o755)),
        (
            "etc/systemd/system/multi-user.target.wants/bosun.service",
            (0o120777, 0, 0),
        ),
        ("home", d(0o755)),
        ("home/alice", (0o040750, 1000, 1000)),
        ("home/alice/notes", (0o100600, 1000, 1000)),
        ("var", d(0o755)),
        ("var/cache", d(0o755)),
        ("var/cache/apt", d(0o755)),
        ("var/cache/apt/new.bin", f(0o644)),
        ("dev", d(0o755)),
        ("dev/null", (0o020666, 0, 0)),
        ("srv", d(0o755)),
        ("srv/data", (0o100640, 33, 33)),
        ("lost+found", d(0o700)),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m))
    .collect();
    assert_eq!(got, want, "the image's tree differs from the layers");

    assert_eq!(links(&raw, "usr/bin/vim.basic"), 2, "hard link");
    assert_eq!(links(&raw, "usr/bin/passwd"), 1);
    assert_eq!(links(&raw, "var/cache"), 3, "directory link count");
    assert!(debugfs(&raw, "stat /dev/null").contains("Device major/minor number: 01:03"));
    assert!(debugfs(&raw, "ea_list /usr/bin/ping").contains("security.capability"));
    assert_eq!(
        debugfs(&raw, "cat /etc/os-release"),
        "NAME=\"test OS\"\nIMAGE_VERSION=2026.1\n"
    );
    assert_eq!(debugfs(&raw, "cat /usr/bin/vi"), "");
    assert_eq!(debugfs(&raw, "cat /usr/bin/view"), "vim");
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&raw)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "e2fsck: {}", text(&fsck));

    // The same input again: the same bytes.
    let out2 = t.path().join("again").join("os-1.img.zst");
    std::fs::create_dir(out2.parent().unwrap()).unwrap();
    ok(bosun(&[
        "image",
        "slot",
        "--oci",
        archive.to_str().unwrap(),
        "--version",
        "2026.1",
        "--out",
        out2.to_str().unwrap(),
    ]));
    assert_eq!(sha256(&out2), sha1, "two runs gave different images");
    // Only the outputs are left next to them (no work dirs, no temporaries).
    let names: Vec<String> = std::fs::read_dir(out2.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["os-1.img.zst"]);
}

// --- bad inputs: acceptance 2 ------------------------------------------------------------

/// Runs `bosun image slot` that must fail; returns its stderr and checks nothing is left in
/// the output directory.
fn slot_fails(input_flag: &str, input: &Path, extra: &[&str]) -> String {
    let outdir = tempfile::tempdir().unwrap();
    let out = outdir.path().join("os.img.zst");
    let mut args = vec![
        "image",
        "slot",
        input_flag,
        input.to_str().unwrap(),
        "--version",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let res = bosun(&args);
    assert!(
        !res.status.success(),
        "bosun accepted bad input: {}",
        text(&res)
    );
    let left: Vec<_> = std::fs::read_dir(outdir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    String::from_utf8_lossy(&res.stderr).into_owned()
}

#[test]
fn image_slot_refuses_a_layer_path_escaping_the_root_naming_layer_and_entry() {
    for (name, why) in [
        (&b"../escape"[..], "`..`"),
        (b"usr/../../escape", "`..`"),
        (b"/etc/escape", "absolute"),
    ] {
        let t = tempfile::tempdir().unwrap();
        let mut entries = bootable_base();
        entries.push(E::RawName(name));
        let digests = oci_layout(&t.path().join("l"), &[(layer(&entries), true)]);
        let err = slot_fails("--oci", &t.path().join("l"), &[]);
        assert!(err.contains(&digests[0]), "{err}");
        assert!(
            err.contains(&String::from_utf8_lossy(name).to_string()),
            "{err}"
        );
        assert!(err.contains(why), "{err}");
        assert!(!t.path().join("escape").exists());
    }
}

#[test]
fn image_slot_refuses_blobs_whose_digest_or_size_does_not_match() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("l");
    let digests = oci_layout(&layout, &test_layers());
    let blob = layout
        .join("blobs/sha256")
        .join(digests[1].trim_start_matches("sha256:"));
    let mut data = std::fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let err = slot_fails("--oci", &layout, &[]);
    assert!(
        err.contains(&digests[1]) && err.contains("sha256 mismatch"),
        "{err}"
    );

    data.push(0);
    std::fs::write(&blob, &data).unwrap();
    let err = slot_fails("--oci", &layout, &[]);
    assert!(
        err.contains(&digests[1]) && err.contains("size mismatch"),
        "{err}"
    );
}

#[test]
fn image_slot_refuses_a_rootfs_without_kernel_naming_what_is_missing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    for dir in ["usr/bin", "boot"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("vmlinuz"), "kernel in / (Debian's default)").unwrap();
    std::fs::write(root.join("boot/initrd.img"), "initrd").unwrap();
    let err = slot_fails("--rootfs", &root, &[]);
    assert!(err.contains("no kernel at /boot/vmlinuz"), "{err}");
    assert!(err.contains("link_in_boot"), "{err}");
    assert!(err.contains("/usr/bin/bosun"), "{err}");
    assert!(err.contains("bosun.service is not enabled"), "{err}");
    assert!(!err.contains("initrd"), "the initrd is there: {err}");
}

#[test]
fn image_slot_refuses_a_tree_bigger_than_size() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("l");
    let mut entries = bootable_base();
    let big = vec![7u8; 3 << 20];
    entries.push(E::File("big", 0o644, 0, 0, &big));
    oci_layout(&layout, &[(layer(&entries), true)]);
    let err = slot_fails("--oci", &layout, &["--size", "2M"]);
    assert!(
        err.contains("needs at least") && err.contains("--size"),
        "{err}"
    );
}

// --- bosun image disk --------------------------------------------------------------------

#[test]
fn image_disk_writes_gpt_both_grubs_the_environment_and_slot_a() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("l");
    oci_layout(&layout, &test_layers());
    let slot = t.path().join("os.img.zst");
    ok(bosun(&[
        "image",
        "slot",
        "--oci",
        layout.to_str().unwrap(),
        "--version",
        "1",
        "--out",
        slot.to_str().unwrap(),
    ]));
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("bosun")).unwrap();
    std::fs::write(data.join("bosun/agent.yaml"), "source: {url: git://h/f}\n").unwrap();
    let disk = t.path().join("node.img");
    let printed = ok(bosun(&[
        "image",
        "disk",
        "--slot",
        slot.to_str().unwrap(),
        "--out",
        disk.to_str().unwrap(),
        "--data-size",
        "64M",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-qcow2",
    ]));

    let dump = git::run(Command::new("sfdisk").arg("-d").arg(&disk));
    let parts: Vec<(u64, u64, String)> = dump
        .lines()
        .filter(|l| l.contains(": start="))
        .map(|l| {
            let field = |k: &str| {
                let at = l.find(k).unwrap() + k.len();
                l[at..].split(',').next().unwrap().trim().to_string()
            };
            (
                field("start=").parse().unwrap(),
                field("size=").parse().unwrap(),
                field("name="),
            )
        })
        .collect();
    let names: Vec<&str> = parts.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(
        names,
        [
            "\"bios\"",
            "\"esp\"",
            "\"root-a\"",
            "\"root-b\"",
            "\"data\""
        ]
    );
    assert!(
        dump.contains("type=21686148-6449-6E6F-744E-656564454649"),
        "{dump}"
    );
    assert!(
        dump.contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "{dump}"
    );
    assert_eq!(parts[2].1, parts[3].1, "slots have the same size");
    let raw = zstd::decode_all(std::fs::File::open(&slot).unwrap()).unwrap();
    assert!(
        parts[2].1 * 512 >= 2 * raw.len() as u64,
        "default slot size is twice the image"
    );
    assert!(
        printed.contains("grubenv: /boot/efi/grub/bosun.env"),
        "{printed}"
    );

    let bytes = std::fs::read(&disk).unwrap();
    // boot.img points at core.img in the BIOS boot partition; core.img's blocklist follows it.
    let kernel_sector = u64::from_le_bytes(bytes[0x5c..0x64].try_into().unwrap());
    assert_eq!(kernel_sector, parts[0].0);
    let core = (parts[0].0 * 512) as usize;
    assert_eq!(
        u64::from_le_bytes(bytes[core + 0x1f4..core + 0x1fc].try_into().unwrap()),
        parts[0].0 + 1
    );
    // Slot a holds the slot image's bytes.
    let a = (parts[2].0 * 512) as usize;
    assert!(
        bytes[a..a + raw.len()] == raw[..],
        "slot a is not the slot image"
    );

    // The ESP: both GRUBs' files, the shipped boot/grub.cfg, the environment.
    let esp = format!("{}@@{}", disk.display(), parts[1].0 * 512);
    let mdir = git::run(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &esp, "-b", "-/", "::/"]),
    );
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/grub/grub.cfg",
        "::/grub/bosun.cfg",
        "::/grub/bosun.env",
    ] {
        assert!(
            mdir.to_uppercase().contains(&f.to_uppercase()),
            "{f} missing: {mdir}"
        );
    }
    let get = |name: &str| {
        let dst = t.path().join(name);
        git::run(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-n", "-i", &esp, &format!("::/grub/{name}")])
                .arg(&dst),
        );
        dst
    };
    assert_eq!(
        std::fs::read_to_string(get("bosun.cfg")).unwrap(),
        include_str!("../../boot/grub.cfg")
    );
    let env = git::run(
        Command::new("grub-editenv")
            .arg(get("bosun.env"))
            .arg("list"),
    );
    assert!(
        env.contains("bosun_primary=a\n") && env.contains("bosun_good_a=1"),
        "{env}"
    );
    let cfg = std::fs::read_to_string(get("grub.cfg")).unwrap();
    assert!(
        cfg.contains("gpt3") && cfg.contains("source ${prefix}/bosun.cfg"),
        "{cfg}"
    );

    // With qemu-img installed (Debian qemu-utils, in .ci/packages.txt): a qcow2 copy with the
    // same contents.
    let qcow2 = t.path().join("node.qcow2");
    ok(bosun(&[
        "image",
        "disk",
        "--slot",
        slot.to_str().unwrap(),
        "--out",
        disk.to_str().unwrap(),
        "--data-size",
        "64M",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    let back = t.path().join("back.img");
    git::run(
        Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&qcow2)
            .arg(&back),
    );
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(&disk).unwrap(),
        "the qcow2 copy differs from the raw disk"
    );
    std::fs::remove_file(&back).unwrap();

    // The data partition holds --data-dir.
    let data_part = t.path().join("data.img");
    let (start, len) = ((parts[4].0 * 512) as usize, (parts[4].1 * 512) as usize);
    std::fs::write(&data_part, &bytes[start..start + len]).unwrap();
    assert_eq!(
        debugfs(&data_part, "cat /bosun/agent.yaml"),
        "source: {url: git://h/f}\n"
    );
}

// --- bosun init --------------------------------------------------------------------------

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn init_check_fetches_verifies_and_plans_then_writes_only_the_agent_config() {
    let t = tempfile::tempdir().unwrap();
    let served = t.path().join("served");
    let repo = WorkRepo::init(&served.join("fleet"));
    let key = SshKey::generate(t.path(), "ops");
    repo.write(
        "config.yaml",
        "write_files:\n  - path: /etc/motd\n    content: \"managed by bosun\\n\"\n",
    );
    let commit = repo.commit_ssh_signed(&key.private, "fleet base");
    let daemon = GitDaemon::start(&served);
    let signers = t.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("{}\n", key.allowed_signers_line("ops@example.org")),
    )
    .unwrap();

    let node = t.path().join("node");
    let root = node.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let config = node.join("etc/bosun/agent.yaml");
    let url = daemon.url("fleet");
    let init = |extra: &[&str]| {
        let mut args = vec![
            "init",
            "--config",
            config.to_str().unwrap(),
            "--url",
            &url,
            "--node-name",
            "edge-01",
            "--root",
            root.to_str().unwrap(),
            "--allowed-signers",
            signers.to_str().unwrap(),
            "--check",
        ];
        args.extend_from_slice(extra);
        bosun(&args)
    };
    let printed = ok(init(&[]));
    assert!(printed.contains(&format!("commit {commit}")), "{printed}");
    assert!(
        printed.contains("verified, signed by ops@example.org"),
        "{printed}"
    );
    assert!(
        printed.contains("/etc/motd"),
        "the plan names the file: {printed}"
    );
    assert_eq!(files_under(&node), [PathBuf::from("etc/bosun/agent.yaml")]);
    assert!(!root.join("etc/motd").exists());
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains(&url) && written.contains("mode: head"),
        "{written}"
    );

    // A second init refuses to replace it; --force does.
    let again = init(&[]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
    ok(init(&["--force", "--ref", "main"]));

    // An unsigned head is refused by --check, and nothing is written.
    repo.write("config.yaml", "hostname: x\n");
    repo.commit("unsigned");
    std::fs::remove_file(&config).unwrap();
    let refused = init(&[]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("not signed"), "{}", text(&refused));
    assert!(files_under(&node).is_empty(), "{:?}", files_under(&node));
}

#[test]
fn init_writes_a_config_the_daemon_parser_and_the_json_schema_accept() {
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("agent.yaml");
    ok(bosun(&[
        "init",
        "--config",
        config.to_str().unwrap(),
        "--url",
        "https://git.example.org/fleet.git",
        "--interval",
        "30s",
        "--state-dir",
        "/data/bosun",
        "--slot-a",
        "/dev/vda3",
        "--slot-b",
        "/dev/vda4",
        "--grubenv",
        "/boot/efi/grub/bosun.env",
    ]));
    // Validated against schemas/agent.schema.json by a JSON Schema implementation that is not
    // bosun's (python3-jsonschema), on the YAML read by python3-yaml.
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/agent.schema.json");
    let check = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml, jsonschema; \
             jsonschema.validate(yaml.safe_load(open(sys.argv[1])), json.load(open(sys.argv[2]))); \
             print('valid')",
        ])
        .arg(&config)
        .arg(&schema)
        .output()
        .expect("python3 with python3-yaml and python3-jsonschema");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "valid\n",
        "{}",
        text(&check)
    );

    // Bad flags: the daemon's parser refuses them before anything is written.
    let bad = t.path().join("bad.yaml");
    let res = bosun(&[
        "init",
        "--config",
        bad.to_str().unwrap(),
        "--url",
        "ftp://example.invalid/x",
    ]);
    assert!(!res.status.success());
    assert!(text(&res).contains("source.url"), "{}", text(&res));
    assert!(!bad.exists());
}

#[test]
fn image_slot_takes_a_rootfs_directory_or_tarball_with_the_same_result() {
    let t = tempfile::tempdir().unwrap();
    // A directory: what the tests' user owns, with a symlink and a hard link.
    let root = t.path().join("rootfs");
    for dir in [
        "boot",
        "usr/bin",
        "lib/systemd/system",
        "etc/systemd/system/multi-user.target.wants",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("boot/vmlinuz-6.1"), "kernel").unwrap();
    std::os::unix::fs::symlink("vmlinuz-6.1", root.join("boot/vmlinuz")).unwrap();
    std::fs::write(root.join("boot/initrd.img"), "initrd").unwrap();
    std::fs::write(root.join("usr/bin/bosun"), "#!bosun").unwrap();
    std::fs::hard_link(root.join("usr/bin/bosun"), root.join("usr/bin/bosun-link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("usr/bin/bosun"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("lib/systemd/system/bosun.service"), "[Unit]\n").unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/bosun.service",
        root.join("etc/systemd/system/multi-user.target.wants/bosun.service"),
    )
    .unwrap();
    // The same tree as a gzip tarball, by GNU tar (which records the hard link).
    let tarball = t.path().join("rootfs.tar.gz");
    git::run(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-czf")
            .arg(&tarball)
            .arg("."),
    );
    let mut trees = Vec::new();
    for (i, input) in [&root, &tarball].into_iter().enumerate() {
        let out = t.path().join(format!("os-{i}.img"));
        ok(bosun(&[
            "image",
            "slot",
            "--rootfs",
            input.to_str().unwrap(),
            "--version",
            "v1",
            "--out",
            out.to_str().unwrap(),
        ]));
        assert_eq!(debugfs(&out, "cat /boot/vmlinuz-6.1"), "kernel");
        assert!(
            debugfs(&out, "stat /boot/vmlinuz").contains("Fast link dest: \"vmlinuz-6.1\""),
            "the kernel link is kept"
        );
        assert_eq!(links(&out, "usr/bin/bosun"), 2, "hard link kept");
        assert_eq!(debugfs(&out, "cat /etc/os-release"), "IMAGE_VERSION=v1\n");
        trees.push(tree(&out));
    }
    assert_eq!(
        trees[0], trees[1],
        "directory and tarball give the same tree"
    );
}

/// Regression: e2fsprogs reads `E2FSPROGS_FAKE_TIME=0` as unset and stamps the clock, so a
/// tree whose times are all 0 (tar --mtime=@0) gave a different image every second.
#[test]
fn image_slot_with_epoch_zero_is_still_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("l");
    oci_layout(&layout, &[(layer(&bootable_base()), false)]);
    let mut shas = Vec::new();
    for i in 0..2 {
        if i == 1 {
            // A different second of the clock for the second run.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let out = t.path().join(format!("os-{i}.img"));
        ok(bosun(&[
            "image",
            "slot",
            "--oci",
            layout.to_str().unwrap(),
            "--version",
            "v1",
            "--source-date-epoch",
            "0",
            "--out",
            out.to_str().unwrap(),
        ]));
        shas.push(sha256(&out));
    }
    assert_eq!(shas[0], shas[1]);
}
