//! Where bosun may talk in cleartext: plain `http://` only to loopback hosts (test servers, a
//! local mirror); `https://` everywhere else. One rule, shared by config validation, ssh key
//! sources and image downloads (and their redirects). Pure.

/// The URL's host is `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `https://` anywhere, `http://` only to a loopback host; no other scheme.
pub fn transport_allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback_host(url),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn cleartext_only_to_loopback() {
        assert!(transport_allowed(&u("https://example.org/x")));
        assert!(transport_allowed(&u("http://127.0.0.1:8080/x")));
        assert!(transport_allowed(&u("http://127.1.2.3/x")));
        assert!(transport_allowed(&u("http://[::1]:80/x")));
        assert!(transport_allowed(&u("http://LOCALHOST/x")));
        assert!(!transport_allowed(&u("http://10.0.0.1/x")));
        assert!(!transport_allowed(&u("http://example.org/x")));
        assert!(!transport_allowed(&u("ftp://127.0.0.1/x")));
    }
}
