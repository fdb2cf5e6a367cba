//! A real HTTP image server on 127.0.0.1 (axum) for install and upgrade tests: serves files by
//! name with Range / If-Range / ETag support, can disable range support, change its ETag, and
//! cut the connection at chosen offsets; counts requests, range requests and bytes served.
//! Also the deterministic image generator the tests serve.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

/// A deterministic PRNG for test images and cut offsets.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Deterministic image: 64 KiB blocks of zeros (40%), nibbles (30%), repeated dictionary
/// slices (20%) or random bytes (10%). Compresses to roughly a quarter.
pub fn generate_raw(path: &Path, size: u64, seed: u64) {
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

/// The image server's switches and counters.
#[derive(Default)]
pub struct Served {
    pub files: Mutex<Vec<(String, PathBuf)>>,
    pub etag: Mutex<String>,
    pub no_ranges: AtomicBool,
    /// Absolute offsets at which successive responses are cut (one per response).
    pub cuts: Mutex<VecDeque<u64>>,
    pub requests: AtomicU64,
    pub range_requests: AtomicU64,
    pub partial_responses: AtomicU64,
    pub bytes_served: AtomicU64,
}

/// An HTTP image server on 127.0.0.1 serving files by name at `/{name}`.
pub struct Server {
    pub base: String,
    pub st: Arc<Served>,
    /// The runtime of a server started with [`Server::start_background`].
    _rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Starts the server on the current tokio runtime.
    pub async fn start(files: &[(&str, &Path)]) -> Server {
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
            _rt: None,
        }
    }

    /// Starts the server on its own runtime thread, for synchronous tests that block on the
    /// bosun binary; the server stops when this is dropped.
    pub fn start_background(files: &[(&str, &Path)]) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut server = rt.block_on(Server::start(files));
        server._rt = Some(rt);
        server
    }
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
    /// Cuts successive responses at these absolute offsets (one per response).
    pub fn cut_at(&self, offsets: &[u64]) {
        self.st.cuts.lock().unwrap().extend(offsets);
    }
    pub fn count(&self, c: &AtomicU64) -> u64 {
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
