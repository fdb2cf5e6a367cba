//! `upgrade::install` against a real HTTP server on 127.0.0.1 (axum) that implements
//! Range / If-Range / ETag, can disable range support, change its ETag, and cut the
//! connection at chosen offsets; slots are regular files and real loop devices.
//!
//! Images are generated deterministically (PRNG blocks mixed with zeros and low-entropy data)
//! and compressed with the `zstd` / `flate2` crates once per build into CARGO_TARGET_TMPDIR.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

use bosun::config::Compression;
use bosun::upgrade::install::{
    install, read_progress, spool_path, InstallError, InstallMode, InstallOptions, InstallRequest,
    SpoolPolicy,
};

use crate::config_cli::bosun;

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

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Deterministic image: 64 KiB blocks of zeros (40%), nibbles (30%), repeated dictionary
/// slices (20%) or random bytes (10%). Compresses to roughly a quarter.
fn generate_raw(path: &Path, size: u64, seed: u64) {
    let mut rng = Rng(seed);
    let dict: Vec<u64> = (0..(128 << 10)).map(|_| rng.next()).collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u64; 8192];
    for _ in 0..size / (64 << 10) {
        let kind = rng.next() % 10;
        match kind {
            0..=3 => block.iter_mut().for_each(|w| *w = 0),
            4..=6 => block
                .iter_mut()
                .for_each(|w| *w = rng.next() & 0x0f0f_0f0f_0f0f_0f0f),
            7 | 8 => {
                let at = (rng.next() as usize) % (dict.len() - block.len());
                block.copy_from_slice(&dict[at..at + 8192]);
            }
            _ => block.iter_mut().for_each(|w| *w = rng.next()),
        }
        let bytes: Vec<u8> = block.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.write_all(&bytes).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
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

/// The image server's switches and counters.
#[derive(Default)]
struct Served {
    files: Mutex<Vec<(String, PathBuf)>>,
    etag: Mutex<String>,
    no_ranges: AtomicBool,
    /// Absolute offsets at which successive responses are cut (one per response).
    cuts: Mutex<VecDeque<u64>>,
    requests: AtomicU64,
    range_requests: AtomicU64,
    partial_responses: AtomicU64,
    bytes_served: AtomicU64,
}

struct Server {
    base: String,
    st: Arc<Served>,
}

impl Server {
    async fn start(files: &[(&str, &Path)]) -> Server {
        let st = Arc::new(Served::default());
        *st.etag.lock().unwrap() = "\"v1\"".into();
        *st.files.lock().unwrap() = files
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect();
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(serve_file))
            .with_state(st.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            base: format!("http://{addr}"),
            st,
        }
    }
    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
    fn cut_at(&self, offsets: &[u64]) {
        self.st.cuts.lock().unwrap().extend(offsets);
    }
    fn count(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

async fn serve_file(
    State(st): State<Arc<Served>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    if name == "redirect-out" {
        // Not a loopback address by the rule, yet Linux routes 0.0.0.0 locally: even a client
        // that wrongly followed it would not leave the machine.
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "http://0.0.0.0:9/os.img")
            .body(Body::empty())
            .unwrap();
    }
    let path = st
        .files
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p.clone());
    let Some(path) = path else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap();
    };
    let len = std::fs::metadata(&path).unwrap().len();
    let etag = st.etag.lock().unwrap().clone();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    if range.is_some() {
        st.range_requests.fetch_add(1, Ordering::SeqCst);
    }
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .map(|v| v.to_str().ok() == Some(etag.as_str()))
        .unwrap_or(true);
    let mut builder = Response::builder();
    let start = match range {
        Some(s) if !st.no_ranges.load(Ordering::SeqCst) && if_range_ok => {
            if s >= len {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .unwrap();
            }
            st.partial_responses.fetch_add(1, Ordering::SeqCst);
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {s}-{}/{len}", len - 1),
            );
            s
        }
        _ => {
            builder = builder.status(StatusCode::OK);
            0
        }
    };
    if !st.no_ranges.load(Ordering::SeqCst) {
        builder = builder
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::ETAG, etag);
    }
    let cut = st.cuts.lock().unwrap().pop_front();
    let file = std::fs::File::open(&path).unwrap();
    let state = (file, start, len, cut, st.clone());
    let stream = futures_util::stream::unfold(state, |(file, pos, len, cut, st)| async move {
        if pos >= len {
            return None;
        }
        if cut.is_some_and(|c| pos >= c) {
            // Abort the response mid-body: hyper drops the connection.
            let e = std::io::Error::other("test server: connection cut");
            return Some((Err(e), (file, len, len, cut, st)));
        }
        let mut want = (len - pos).min(64 << 10);
        if let Some(c) = cut {
            want = want.min(c - pos);
        }
        let mut buf = vec![0u8; want as usize];
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, pos).unwrap();
        st.bytes_served.fetch_add(want, Ordering::SeqCst);
        Some((
            Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)),
            (file, pos + want, len, cut, st),
        ))
    });
    builder
        .header(header::CONTENT_LENGTH, len - start)
        .body(Body::from_stream(stream))
        .unwrap()
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
    assert_eq!(r.written_sha256, img.raw_sha);
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
