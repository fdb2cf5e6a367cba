//! The HTTP(S) download: which resume to attempt, the (range) request and how the server's
//! answer is judged, and the network task that feeds the writer thread (`sink`) through a
//! bounded channel.
//!
//! Range requests carry `If-Range` with the strong ETag (or else Last-Modified) recorded when
//! the download started. A server that ignores ranges (200), or whose validator changed
//! (200 by the If-Range rule), or that answers 416 / a mismatching `Content-Range`, makes the
//! download restart cleanly from byte 0. Without any validator a plain `Range` is sent: the
//! final SHA-256 check still catches a file that changed between attempts (and then resets).
//!
//! Every wait on the server (response headers, each body chunk) is bounded by
//! [`InstallOptions::idle_timeout`]; redirects obey the same source rule as the configured URL.

use std::path::Path;

use super::progress::{read_progress, InstallProgress, ProgressPhase};
use super::sink::{run_sink, Msg, SinkEnd, SinkSetup};
use super::slot::SlotInfo;
use super::source::parse_source;
use super::{
    spool, spool_path, InstallError, InstallMode, InstallOptions, InstallReport, InstallRequest,
};

/// Chunks in flight between the network task and the writer thread.
const CHANNEL_CHUNKS: usize = 8;

/// An HTTP client with the connect timeout of `opts` (reads are bounded per chunk by
/// [`InstallOptions::idle_timeout`] inside [`super::install`]).
pub fn http_client(opts: &InstallOptions) -> Result<reqwest::Client, InstallError> {
    // Redirects obey the same rule as the configured URL: plain http only to loopback.
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if let Err(e) = parse_source(attempt.url().as_str()) {
            attempt.error(e)
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .redirect(policy)
        .build()
        .map_err(|e| InstallError::Task(format!("building the HTTP client: {e}")))
}

/// Parses `Content-Range: bytes START-END/TOTAL` into (start, total). Pure.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// The value of response header `name`, if present and valid text. Pure.
fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Downloads `url` into the slot (directly, through the spool, or streamed; see the module
/// docs of `progress`), resuming from the progress file when it belongs to `req`. Network
/// I/O; writes the slot, the spool and the progress file (on the writer thread).
pub(super) async fn install_http(
    url: url::Url,
    req: &InstallRequest,
    slot: &SlotInfo,
    http: &reqwest::Client,
    opts: &InstallOptions,
) -> Result<InstallReport, InstallError> {
    let spool = spool_path(&req.progress_file);
    let prior = read_progress(&req.progress_file)?.filter(|p| p.matches(req));
    // A verified spool waiting for decompression: no network needed.
    if let Some(p) = prior
        .as_ref()
        .filter(|p| p.mode == InstallMode::Spool && p.phase == ProgressPhase::Downloaded)
    {
        return spool::install_from_spool(req, slot, opts, p.downloaded).await;
    }
    let resume = resumable(prior, &spool);
    let url_s = url.to_string();
    let resumed_attempt = resume.is_some();
    let (resp, resumed) = request(&url, http, opts, resume).await?;
    let start = resumed.as_ref().map_or(0, |p| p.downloaded);
    let total = response_total(&resp, start);
    if let (Some(expected), Some(actual)) = (req.size, total) {
        if expected != actual {
            return Err(InstallError::SizeMismatch {
                image: req.source.clone(),
                expected,
                actual,
            });
        }
    }
    let progress = match resumed {
        Some(p) => p,
        None => fresh_progress(req, slot, opts, &resp, req.size.or(total), &spool)?,
    };
    let mode = progress.mode;
    let limit = req.size.or(progress.total);
    let setup = SinkSetup {
        req: req.clone(),
        slot: slot.clone(),
        opts: opts.clone(),
        mode,
        start,
        progress,
        limit,
    };
    let (image_size, written, sha) = transfer(resp, setup, opts, &url_s).await?;
    Ok(InstallReport {
        mode,
        resumed_from: start,
        restarted: resumed_attempt && start == 0,
        fetched: image_size - start,
        image_size,
        written,
        written_sha256: sha,
    })
}

/// The partial download worth resuming from the matching progress record `prior`: one still
/// downloading with some bytes, written directly to the slot, or to a spool that still holds
/// at least the recorded bytes. Reads the spool's size.
fn resumable(prior: Option<InstallProgress>, spool: &Path) -> Option<InstallProgress> {
    prior
        .filter(|p| p.phase == ProgressPhase::Downloading && p.downloaded > 0)
        .filter(|p| match p.mode {
            InstallMode::Direct => true,
            InstallMode::Spool => std::fs::metadata(spool)
                .map(|m| m.len() >= p.downloaded)
                .unwrap_or(false),
            _ => false,
        })
}

/// Sends the GET, with `Range` (and `If-Range`) when `resume` is set, and judges the answer:
/// a 206 with the matching `Content-Range` resumes (returned with the resumed progress); a
/// 200 restarts from byte 0; a 206 at another offset or a 416 retries once without a range;
/// any other status is an error. Network I/O.
async fn request(
    url: &url::Url,
    http: &reqwest::Client,
    opts: &InstallOptions,
    mut resume: Option<InstallProgress>,
) -> Result<(reqwest::Response, Option<InstallProgress>), InstallError> {
    let url_s = url.to_string();
    loop {
        let mut rb = http.get(url.clone());
        if let Some(r) = &resume {
            rb = rb.header(reqwest::header::RANGE, format!("bytes={}-", r.downloaded));
            if let Some(v) = r.etag.as_ref().or(r.last_modified.as_ref()) {
                rb = rb.header(reqwest::header::IF_RANGE, v.as_str());
            }
        }
        let resp = tokio::time::timeout(opts.idle_timeout, rb.send())
            .await
            .map_err(|_| InstallError::IdleTimeout {
                url: url_s.clone(),
                idle: opts.idle_timeout,
                offset: resume.as_ref().map_or(0, |r| r.downloaded),
            })?
            .map_err(|source| InstallError::Request {
                url: url_s.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        match (status, &resume) {
            (200, _) => return Ok((resp, None)),
            (206, Some(r)) => {
                let want = r.downloaded;
                let ok = header(&resp, reqwest::header::CONTENT_RANGE)
                    .and_then(|v| parse_content_range(&v))
                    .is_some_and(|(s, _)| s == want);
                if ok {
                    return Ok((resp, resume));
                }
                resume = None;
            }
            (416, Some(_)) => resume = None,
            _ => return Err(InstallError::Status { url: url_s, status }),
        }
    }
}

/// The size of the whole download as the response states it: the `Content-Range` total of a
/// resumed (206) response, else the `Content-Length`. Pure.
fn response_total(resp: &reqwest::Response, start: u64) -> Option<u64> {
    if start > 0 {
        header(resp, reqwest::header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(&v))
            .and_then(|(_, t)| t)
    } else {
        resp.content_length()
    }
}

/// The progress record of a download starting at byte 0: its mode
/// ([`spool::choose_mode`]), its size and the response's validators (a strong ETag, else
/// Last-Modified) for later `If-Range` requests. A direct download larger than the slot is
/// [`InstallError::SlotTooSmall`]. Reads the free space of the spool's filesystem.
fn fresh_progress(
    req: &InstallRequest,
    slot: &SlotInfo,
    opts: &InstallOptions,
    resp: &reqwest::Response,
    size: Option<u64>,
    spool: &Path,
) -> Result<InstallProgress, InstallError> {
    let mode = spool::choose_mode(req.compression, size, opts, spool);
    if mode == InstallMode::Direct {
        if let (Some(cap), Some(s)) = (slot.capacity, size) {
            if s > cap {
                return Err(InstallError::SlotTooSmall {
                    path: req.slot.clone(),
                    capacity: cap,
                    needed: s,
                });
            }
        }
    }
    let etag = header(resp, reqwest::header::ETAG).filter(|e| !e.starts_with("W/"));
    Ok(InstallProgress {
        total: size,
        etag,
        last_modified: header(resp, reqwest::header::LAST_MODIFIED),
        ..InstallProgress::for_request(req, mode)
    })
}

/// Moves the body of `resp` to the writer thread (`sink`, started here with `setup`): the
/// network side reads chunk by chunk, each wait bounded by the idle timeout, and sends them
/// through a bounded channel. Returns the writer's (image size, bytes written, their
/// SHA-256); a writer error wins over a network error, which is returned when the body
/// stopped early (progress was checkpointed by then). Network I/O; the writer thread writes
/// the slot, the spool and the progress file.
async fn transfer(
    mut resp: reqwest::Response,
    setup: SinkSetup,
    opts: &InstallOptions,
    url_s: &str,
) -> Result<(u64, u64, Option<[u8; 32]>), InstallError> {
    let mut offset = setup.start;
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let sink = tokio::task::spawn_blocking(move || run_sink(setup, rx));
    let mut net_error = None;
    loop {
        match tokio::time::timeout(opts.idle_timeout, resp.chunk()).await {
            Err(_) => {
                net_error = Some(InstallError::IdleTimeout {
                    url: url_s.to_string(),
                    idle: opts.idle_timeout,
                    offset,
                });
                break;
            }
            Ok(Err(source)) => {
                net_error = Some(InstallError::Interrupted {
                    url: url_s.to_string(),
                    offset,
                    source,
                });
                break;
            }
            Ok(Ok(None)) => {
                let _ = tx.send(Msg::End).await;
                break;
            }
            Ok(Ok(Some(bytes))) => {
                offset += bytes.len() as u64;
                if tx.send(Msg::Data(bytes)).await.is_err() {
                    break; // the writer failed; its error is returned below
                }
            }
        }
    }
    drop(tx);
    let end = sink
        .await
        .map_err(|e| InstallError::Task(e.to_string()))??;
    match end {
        SinkEnd::Done(image_size, written, sha) => Ok((image_size, written, sha)),
        SinkEnd::Stopped(at) => Err(net_error.unwrap_or(InstallError::Task(format!(
            "download of {url_s} stopped at byte {at}"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }
}
