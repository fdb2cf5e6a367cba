//! `upgrade::install` against a real HTTP server on 127.0.0.1 (axum, `support/image_server.rs`)
//! that implements Range / If-Range / ETag, can disable range support, change its ETag, and cut
//! the connection at chosen offsets; slots are regular files and real loop devices.
//!
//! Images are generated deterministically (PRNG blocks mixed with zeros and low-entropy data)
//! and compressed with the `zstd` / `flate2` crates once per build into CARGO_TARGET_TMPDIR.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use bosun::config::Compression;
use bosun::upgrade::install::{
    install, read_progress, spool_path, InstallError, InstallMode, InstallOptions, InstallRequest,
    SpoolPolicy,
};

use crate::config_cli::bosun;
use crate::support::image_server::{generate_raw, Rng, Server};

const BIG: u64 = 256 << 20;
const SMALL: u64 = 32 << 20;
/// Bytes a cut response may lose in flight (the server aborts without flushing its buffers).
const CUT_SLACK: u64 = 2 << 20;

struct Image {
    raw: PathBuf,
    raw_sha: [u8; 32],
    zst: PathBuf,
    zst_sha: [u8; 32],
    gz: Option<(PathBuf, [u8; 32])>,
}

struct Images {
    big: Image,
    small: Image,
}

fn sha_file(path: &Path) -> [u8; 32] {
    sha_prefix(path, u64::MAX)
}

fn sha_prefix(path: &Path, len: u64) -> [u8; 32] {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = f.take(len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

fn make_image(dir: &Path, name: &str, size: u64, seed: u64, gz: bool) -> Image {
    let raw = dir.join(format!("{name}.img"));
    let zst = dir.join(format!("{name}.img.zst"));
    let gzp = dir.join(format!("{name}.img.gz"));
    let done = dir.join(format!("{name}.done"));
    if !done.exists() {
        generate_raw(&raw, size, seed);
        let mut enc =
            zstd::stream::write::Encoder::new(std::fs::File::create(&zst).unwrap(), 3).unwrap();
        std::io::copy(&mut std::fs::File::open(&raw).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
        if gz {
            let mut enc = flate2::write::GzEncoder::new(
                std::fs::File::create(&gzp).unwrap(),
                flate2::Compression::fast(),
            );
            std::io::copy(&mut std::fs::File::open(&raw).unwrap(), &mut enc).unwrap();
            enc.finish().unwrap();
        }
        std::fs::write(&done, b"").unwrap();
    }
    Image {
        raw_sha: sha_file(&raw),
        zst_sha: sha_file(&zst),
        gz: gz.then(|| {
            let s = sha_file(&gzp);
            (gzp, s)
        }),
        raw,
        zst,
    }
}

/// Generated once per build (cached in CARGO_TARGET_TMPDIR, keyed by the generator version).
fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("upgrade-install-images-v1");
        std::fs::create_dir_all(&dir).unwrap();
        Images {
            big: make_image(&dir, "big", BIG, 0x5eed_b05a, false),
            small: make_image(&dir, "small", SMALL, 0x0dd_ba11, true),
        }
    })
}

/// One test's slot file and state dir.
struct Node {
    _dir: tempfile::TempDir,
    slot: PathBuf,
    progress: PathBuf,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let slot = dir.path().join("slot-b.img");
    std::fs::write(&slot, b"").unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    Node {
        progress: dir.path().join("state/install-progress.json"),
        slot,
        _dir: dir,
    }
}

fn request(n: &Node, source: String, sha256: [u8; 32], size: Option<u64>) -> InstallRequest {
    InstallRequest {
        compression: bosun::upgrade::install::resolve_compression(None, &source),
        source,
        sha256,
        size,
        slot: n.slot.clone(),
        progress_file: n.progress.clone(),
        verify_written: false,
    }
}

fn client() -> reqwest::Client {
    bosun::upgrade::install::http_client(&InstallOptions::default()).unwrap()
}

fn size_of(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn assert_slot_holds(slot: &Path, img: &Image) {
    assert_eq!(
        sha_file(slot),
        img.raw_sha,
        "slot {} must hold exactly the uncompressed image",
        slot.display()
    );
}

#[tokio::test]
async fn zstd_image_of_256mib_installs_into_slot_file() {
    let img = &images().big;
    let srv = Server::start(&[("os.img.zst", &img.zst)]).await;
    let n = node();
    let mut req = request(
        &n,
        srv.url("os.img.zst"),
        img.zst_sha,
        Some(size_of(&img.zst)),
    );
    req.verify_written = true;
    assert_eq!(req.compression, Compression::Zstd);
    let r = install(&req, &client(), &InstallOptions::default())
        .await
        .unwrap();
    assert_eq!(r.mode, InstallMode::Spool);
    assert_eq!(r.written, BIG);
    assert_eq!(r.written_sha256, Some(img.raw_sha));
    assert_slot_holds(&n.slot, img);
    let p = read_progress(&n.progress).unwrap().unwrap();
    assert!(p.is_complete() && p.matches(&req));
    assert!(
        !spool_path(&n.progress).exists(),
        "spool removed after install"
    );
    assert_eq!(srv.count(&srv.st.requests), 1);
}

#[tokio::test]
async fn connection_cuts_resume_with_range_requests() {
    let img = &images().big;
    let zlen = size_of(&img.zst);
    let srv = Server::start(&[("os.img.zst", &img.zst)]).await;
    // Four cuts at pseudo-random increasing offsets.
    let mut rng = Rng(0xc0ffee);
    let mut cuts: Vec<u64> = (0..4).map(|_| 1 + rng.next() % (zlen - 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    srv.cut_at(&cuts);
    let n = node();
    let req = request(&n, srv.url("os.img.zst"), img.zst_sha, Some(zlen));
    let opts = InstallOptions {
        sync_interval: 8 << 20,
        ..Default::default()
    };
    let http = client();
    let mut failures = 0;
    let mut last_offset = 0;
    let report = loop {
        match install(&req, &http, &opts).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(e.is_transient(), "a cut must be transient: {e}");
                assert!(matches!(e, InstallError::Interrupted { .. }), "{e}");
                let p = read_progress(&n.progress).unwrap().expect("progress saved");
                assert!(!p.is_complete());
                assert!(
                    p.downloaded > last_offset,
                    "progress must advance: {} after {last_offset}",
                    p.downloaded
                );
                assert_eq!(size_of(&spool_path(&n.progress)), p.downloaded);
                last_offset = p.downloaded;
                failures += 1;
                assert!(failures <= cuts.len(), "more failures than cuts");
            }
        }
    };
    assert_eq!(failures, cuts.len());
    assert_eq!(report.resumed_from, last_offset);
    assert!(!report.restarted);
    assert_slot_holds(&n.slot, img);
    assert_eq!(srv.count(&srv.st.range_requests), cuts.len() as u64);
    assert_eq!(srv.count(&srv.st.partial_responses), cuts.len() as u64);
    let served = srv.count(&srv.st.bytes_served);
    assert!(
        served < zlen + zlen / 10,
        "served {served} bytes for a {zlen}-byte image: resume must not re-download"
    );
    assert!(read_progress(&n.progress).unwrap().unwrap().is_complete());
}

#[tokio::test]
async fn uncompressed_image_cuts_resume_from_the_slot() {
    let img = &images().small;
    let srv = Server::start(&[("os.img", &img.raw)]).await;
    srv.cut_at(&[5_000_001, 17_000_003, 29_999_999]);
    let n = node();
    let mut req = request(&n, srv.url("os.img"), img.raw_sha, Some(SMALL));
    req.verify_written = true;
    let opts = InstallOptions {
        sync_interval: 4 << 20,
        ..Default::default()
    };
    let http = client();
    let cuts = [5_000_001u64, 17_000_003, 29_999_999];
    let mut last = 0;
    for cut in cuts {
        let e = install(&req, &http, &opts).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        let p = read_progress(&n.progress).unwrap().unwrap();
        assert_eq!(p.mode, InstallMode::Direct);
        // What the client got before the cut (the server may not flush its last buffers).
        assert!(
            p.downloaded > last && p.downloaded <= cut && cut - p.downloaded < CUT_SLACK,
            "progress {} for a cut at {cut}",
            p.downloaded
        );
        last = p.downloaded;
    }
    let r = install(&req, &http, &opts).await.unwrap();
    assert_eq!((r.mode, r.resumed_from), (InstallMode::Direct, last));
    assert_eq!(r.fetched, SMALL - last);
    assert_slot_holds(&n.slot, img);
    let served = srv.count(&srv.st.bytes_served);
    assert!(served < SMALL + 3 * CUT_SLACK, "served {served}");
}

/// A first attempt is cut; then the server either stops supporting ranges or changes its
/// ETag. The retry gets a 200 and must restart from byte 0 and still finish correctly.
async fn restart_case(disable_ranges: bool, change_etag: bool) {
    let img = &images().small;
    let zlen = size_of(&img.zst);
    let srv = Server::start(&[("os.img.zst", &img.zst)]).await;
    srv.cut_at(&[zlen / 2]);
    let n = node();
    let req = request(&n, srv.url("os.img.zst"), img.zst_sha, None);
    let http = client();
    let opts = InstallOptions::default();
    let e = install(&req, &http, &opts).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let saved = read_progress(&n.progress).unwrap().unwrap().downloaded;
    assert!(
        saved <= zlen / 2 && zlen / 2 - saved < CUT_SLACK,
        "saved {saved}"
    );
    srv.st.no_ranges.store(disable_ranges, Ordering::SeqCst);
    if change_etag {
        *srv.st.etag.lock().unwrap() = "\"v2\"".into();
    }
    let r = install(&req, &http, &opts).await.unwrap();
    assert!(r.restarted, "{r:?}");
    assert_eq!((r.resumed_from, r.fetched), (0, zlen));
    assert_slot_holds(&n.slot, img);
    assert_eq!(
        srv.count(&srv.st.range_requests),
        1,
        "the retry asked for a range"
    );
    assert_eq!(srv.count(&srv.st.partial_responses), 0);
    assert_eq!(srv.count(&srv.st.bytes_served), zlen / 2 + zlen);
}

#[tokio::test]
async fn server_without_range_support_restarts_cleanly() {
    restart_case(true, false).await;
}

#[tokio::test]
async fn changed_etag_restarts_cleanly() {
    restart_case(false, true).await;
}

#[tokio::test]
async fn corrupt_byte_fails_and_never_claims_completion() {
    let img = &images().small;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("os.img.zst");
    let mut bytes = std::fs::read(&img.zst).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&bad, &bytes).unwrap();
    let srv = Server::start(&[("os.img.zst", &bad)]).await;
    let http = client();
    for policy in [SpoolPolicy::Always, SpoolPolicy::Never] {
        let n = node();
        let req = request(&n, srv.url("os.img.zst"), img.zst_sha, None);
        let opts = InstallOptions {
            spool: policy,
            ..Default::default()
        };
        let e = install(&req, &http, &opts).await.unwrap_err();
        assert!(!e.is_transient(), "{policy:?}: {e}");
        match policy {
            // Spooled: the hash is checked before a single byte is decompressed.
            SpoolPolicy::Always => {
                assert!(matches!(e, InstallError::HashMismatch { .. }), "{e}");
                assert_eq!(size_of(&n.slot), 0, "nothing written to the slot");
            }
            // Streamed: the decoder or the hash check rejects it.
            _ => assert!(
                matches!(
                    e,
                    InstallError::HashMismatch { .. } | InstallError::Decompress { .. }
                ),
                "{e}"
            ),
        }
        assert!(e.to_string().contains("os.img.zst"), "names the image: {e}");
        assert!(read_progress(&n.progress).unwrap().is_none());
        assert!(!spool_path(&n.progress).exists());
    }
    // Local path, same corruption.
    let n = node();
    let req = request(&n, bad.display().to_string(), img.zst_sha, None);
    let e = install(&req, &http, &InstallOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            InstallError::HashMismatch { .. } | InstallError::Decompress { .. }
        ),
        "{e}"
    );
    assert!(read_progress(&n.progress).unwrap().is_none());
}

#[tokio::test]
async fn short_image_is_rejected() {
    let img = &images().small;
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("os.img.zst");
    let bytes = std::fs::read(&img.zst).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() / 2]).unwrap();
    let srv = Server::start(&[("os.img.zst", &short)]).await;
    let http = client();
    // Declared size not reached: refused from the response headers, before any write.
    let n = node();
    let req = request(
        &n,
        srv.url("os.img.zst"),
        img.zst_sha,
        Some(bytes.len() as u64),
    );
    let e = install(&req, &http, &InstallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, InstallError::SizeMismatch { .. }), "{e}");
    assert_eq!(size_of(&n.slot), 0);
    assert!(read_progress(&n.progress).unwrap().is_none());
    // No declared size: the stream ends early and the hash rejects it.
    let req = request(&n, srv.url("os.img.zst"), img.zst_sha, None);
    let e = install(&req, &http, &InstallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, InstallError::HashMismatch { .. }), "{e}");
    assert!(read_progress(&n.progress).unwrap().is_none());
    // Local file shorter than declared.
    let req = request(
        &n,
        short.display().to_string(),
        img.zst_sha,
        Some(bytes.len() as u64),
    );
    let e = install(&req, &http, &InstallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, InstallError::SizeMismatch { .. }), "{e}");
}

#[tokio::test]
async fn gzip_image_installs() {
    let img = &images().small;
    let (gz, gz_sha) = img.gz.as_ref().unwrap();
    let srv = Server::start(&[("os.img.gz", gz)]).await;
    let http = client();
    for policy in [SpoolPolicy::Auto, SpoolPolicy::Never] {
        let n = node();
        let mut req = request(&n, srv.url("os.img.gz"), *gz_sha, Some(size_of(gz)));
        req.verify_written = true;
        assert_eq!(req.compression, Compression::Gzip);
        let opts = InstallOptions {
            spool: policy,
            ..Default::default()
        };
        let r = install(&req, &http, &opts).await.unwrap();
        assert_eq!(
            r.mode,
            if policy == SpoolPolicy::Never {
                InstallMode::Stream
            } else {
                InstallMode::Spool
            }
        );
        assert_slot_holds(&n.slot, img);
    }
}

#[tokio::test]
async fn uncompressed_256mib_image_installs_direct() {
    let img = &images().big;
    let srv = Server::start(&[("os.img", &img.raw)]).await;
    let n = node();
    let mut req = request(&n, srv.url("os.img"), img.raw_sha, Some(BIG));
    req.verify_written = true;
    assert_eq!(req.compression, Compression::None);
    let r = install(&req, &client(), &InstallOptions::default())
        .await
        .unwrap();
    assert_eq!((r.mode, r.written), (InstallMode::Direct, BIG));
    assert_slot_holds(&n.slot, img);
    assert!(read_progress(&n.progress).unwrap().unwrap().is_complete());
}

#[tokio::test]
async fn local_path_source_installs() {
    let img = &images().small;
    let http = client();
    for (path, sha) in [
        (&img.zst, img.zst_sha),
        (&img.raw, img.raw_sha),
        (&img.gz.as_ref().unwrap().0, img.gz.as_ref().unwrap().1),
    ] {
        let n = node();
        let mut req = request(&n, path.display().to_string(), sha, Some(size_of(path)));
        req.verify_written = true;
        let r = install(&req, &http, &InstallOptions::default())
            .await
            .unwrap();
        assert_eq!(r.mode, InstallMode::Local);
        assert_slot_holds(&n.slot, img);
    }
}

#[tokio::test]
async fn bad_source_and_slot_are_refused_before_writing() {
    let n = node();
    let http = client();
    let opts = InstallOptions::default();
    let req = request(&n, "http://0.0.0.0:9/os.img".into(), [0; 32], None);
    let e = install(&req, &http, &opts).await.unwrap_err();
    assert!(matches!(e, InstallError::InvalidSource { .. }), "{e}");
    assert!(e.to_string().contains("0.0.0.0:9"), "{e}");
    let mut req = request(&n, "/nonexistent/os.img".into(), [0; 32], None);
    req.slot = n.slot.with_file_name("missing-slot");
    let e = install(&req, &http, &opts).await.unwrap_err();
    assert!(matches!(e, InstallError::InvalidSlot { .. }), "{e}");
    assert!(e.to_string().contains("missing-slot"), "{e}");
    req.slot = n.slot.parent().unwrap().to_path_buf();
    let e = install(&req, &http, &opts).await.unwrap_err();
    assert!(
        e.to_string().contains("not a block device or regular file"),
        "{e}"
    );
    // A redirect to plain http off loopback is refused like a configured one.
    let srv = Server::start(&[]).await;
    let req = request(&n, srv.url("redirect-out"), [0; 32], None);
    let e = install(&req, &http, &opts).await.unwrap_err();
    assert!(matches!(e, InstallError::Request { .. }), "{e}");
    let chain = format!("{:?}", anyhow::Error::from(e));
    assert!(chain.contains("loopback"), "{chain}");
    assert_eq!(size_of(&n.slot), 0);
}

/// Runs `bosun upgrade install-image` under GNU time; returns its peak RSS in KiB.
fn bosun_peak_rss_kib(args: &[&str], dir: &Path) -> u64 {
    let out_file = dir.join("time.out");
    let status = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&out_file)
        .arg(bosun().get_program())
        .args(["upgrade", "install-image"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("/usr/bin/time (Debian package `time`) must be installed");
    assert!(
        status.success(),
        "bosun upgrade install-image {args:?} failed"
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    text.trim()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("unexpected /usr/bin/time output {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_rss_stays_under_32mib_for_a_256mib_image() {
    let img = &images().big;
    let srv = Server::start(&[("os.img.zst", &img.zst)]).await;
    let n = node();
    let state = n.progress.parent().unwrap().to_path_buf();
    let sha = hex::encode(img.zst_sha);
    let url = srv.url("os.img.zst");
    let zst = img.zst.display().to_string();
    let slot = n.slot.display().to_string();
    let state_s = state.display().to_string();
    for source in [url.as_str(), zst.as_str()] {
        let args = [
            "--image",
            source,
            "--sha256",
            &sha,
            "--slot",
            &slot,
            "--state-dir",
            &state_s,
            "--verify-written",
        ];
        let dir = state.clone();
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let kib = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = owned.iter().map(String::as_str).collect();
            bosun_peak_rss_kib(&a, &dir)
        })
        .await
        .unwrap();
        assert_slot_holds(&n.slot, img);
        assert!(
            kib < 32 * 1024,
            "peak RSS of bosun installing a 256 MiB image from {source}: {kib} KiB (limit 32 MiB)"
        );
        std::fs::write(&n.slot, b"").unwrap();
    }
}

/// A loop device over a file, detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn attach(backing: &Path) -> Loop {
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .expect("losetup (util-linux `mount` package) must be installed");
        assert!(
            out.status.success(),
            "losetup -f --show {}: {} (this test needs root and /dev/loop-control)",
            backing.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
    }
}

#[tokio::test]
async fn loop_device_slot() {
    let big = &images().big;
    let small = &images().small;
    let srv = Server::start(&[("os.img.zst", &big.zst), ("small.img", &small.raw)]).await;
    let n = node();
    let http = client();
    let backing = n.slot.with_file_name("loop-backing.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(BIG + (16 << 20))
        .unwrap();
    let lo = Loop::attach(&backing);
    let mut req = request(&n, srv.url("os.img.zst"), big.zst_sha, None);
    req.slot = lo.dev.clone();
    req.verify_written = true;
    let r = install(&req, &http, &InstallOptions::default())
        .await
        .unwrap();
    assert_eq!(r.written, BIG);
    assert_eq!(
        sha_prefix(&lo.dev, BIG),
        big.raw_sha,
        "{}",
        lo.dev.display()
    );
    drop(lo);

    // A slot smaller than a declared uncompressed image is refused before writing.
    let tiny = n.slot.with_file_name("loop-tiny.img");
    std::fs::File::create(&tiny)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let lo = Loop::attach(&tiny);
    let mut req = request(&n, srv.url("small.img"), small.raw_sha, Some(SMALL));
    req.slot = lo.dev.clone();
    let e = install(&req, &http, &InstallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, InstallError::SlotTooSmall { .. }), "{e}");
    assert!(e.to_string().contains(&lo.dev.display().to_string()), "{e}");
    assert_eq!(
        srv.count(&srv.st.requests),
        1,
        "no request for the refused slot"
    );
    // Compressed: the decompressed size is unknown up front; the write stops at the end of
    // the device with an error naming it.
    let mut req = request(&n, small.zst.display().to_string(), small.zst_sha, None);
    req.slot = lo.dev.clone();
    let e = install(&req, &http, &InstallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, InstallError::SlotIo { .. }), "{e}");
    assert!(e.to_string().contains("larger than the slot"), "{e}");
}
