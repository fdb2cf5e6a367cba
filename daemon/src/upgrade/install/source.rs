//! Where an image comes from: pure parsing of [`super::InstallRequest::source`] into an HTTP(S) URL
//! or an absolute local path.
//!
//! Invariant: plain `http://` is accepted only for loopback hosts
//! ([`crate::netpolicy::is_loopback_host`]); the same rule guards redirects
//! ([`super::http_client`]).

use std::path::PathBuf;

use super::InstallError;

/// Where the image comes from. Pure parsing of [`super::InstallRequest::source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Http(url::Url),
    Local(PathBuf),
}

/// Parses an image source: an absolute path, an `https://` URL, or an `http://` URL on a
/// loopback host; anything else is [`InstallError::InvalidSource`]. Pure.
pub(super) fn parse_source(image: &str) -> Result<Source, InstallError> {
    let bad = |reason: &str| InstallError::InvalidSource {
        image: image.to_string(),
        reason: reason.to_string(),
    };
    if image.starts_with('/') {
        return Ok(Source::Local(PathBuf::from(image)));
    }
    let url = url::Url::parse(image).map_err(|_| {
        bad("expected an https:// URL, an http:// URL on a loopback host, or an absolute path")
    })?;
    match url.scheme() {
        "https" => Ok(Source::Http(url)),
        "http" => {
            if crate::netpolicy::is_loopback_host(&url) {
                Ok(Source::Http(url))
            } else {
                Err(bad(
                    "plain http:// is only allowed on loopback hosts; use https://",
                ))
            }
        }
        _ => Err(bad(
            "expected an https:// URL, an http:// URL on a loopback host, or an absolute path",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_http_only_on_loopback() {
        assert!(matches!(
            parse_source("https://images.example/os.zst"),
            Ok(Source::Http(_))
        ));
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://localhost/x",
        ] {
            assert!(matches!(parse_source(ok), Ok(Source::Http(_))), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/x",
            "http://images.example/x",
            "ftp://127.0.0.1/x",
            "relative/path.img",
        ] {
            let e = parse_source(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert_eq!(
            parse_source("/srv/os.img").unwrap(),
            Source::Local(PathBuf::from("/srv/os.img"))
        );
    }
}
