//! SSH server host keys pinned in an OpenSSH `known_hosts` file named by the agent config, so an
//! `ssh://` source does not depend on whatever `~/.ssh/known_hosts` the daemon's user has.
//!
//! Format: `[@revoked] patterns keytype base64-key [comment]`; patterns are comma-separated host
//! names, `[host]:port` for non-22 ports, with `*`/`?` wildcards and `!` negation.
//!
//! Invariants (fail closed):
//! - Hashed host names (`|1|…`) and `@cert-authority` lines are parse errors: they cannot be
//!   honoured here, and skipping them could silently leave a host unpinned.
//! - A host key matches only byte-for-byte; a revoked key is refused even if also listed.

use base64::Engine;

use super::SourceError;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    revoked: bool,
    patterns: Vec<String>,
    key_blob: Vec<u8>,
}

/// A parsed known_hosts file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// The verdict on a server's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    Trusted,
    Revoked,
    /// The host is listed, with other keys only.
    Mismatch,
    UnknownHost,
}

impl KnownHosts {
    /// Parses the file's text; `origin` names it in errors. Pure.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SourceError> {
        let mut entries = Vec::new();
        for (line_no, line) in super::content_lines(text) {
            let entry = parse_line(line).map_err(|reason| SourceError::KnownHosts {
                origin: origin.to_string(),
                line: line_no,
                reason,
            })?;
            entries.push(entry);
        }
        Ok(KnownHosts { entries })
    }

    /// Checks `key_blob` (the SSH wire encoding of the server's public key) for `host:port`.
    pub fn check(&self, host: &str, port: u16, key_blob: &[u8]) -> HostKeyCheck {
        let name = host_name(host, port);
        let matching: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| host_matches(&e.patterns, &name))
            .collect();
        // @revoked applies to a key whatever host it is presented for.
        if self
            .entries
            .iter()
            .any(|e| e.revoked && e.key_blob == key_blob)
        {
            return HostKeyCheck::Revoked;
        }
        if matching
            .iter()
            .any(|e| !e.revoked && e.key_blob == key_blob)
        {
            HostKeyCheck::Trusted
        } else if matching.iter().any(|e| !e.revoked) {
            HostKeyCheck::Mismatch
        } else {
            HostKeyCheck::UnknownHost
        }
    }
}

/// How OpenSSH names a host in known_hosts: `host`, or `[host]:port` for a non-default port.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let mut fields = line.split_whitespace();
    let mut first = fields.next().unwrap_or_default();
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            "cert-authority" => {
                return Err("@cert-authority is not supported: list the host keys".to_string())
            }
            other => return Err(format!("unknown marker @{other}")),
        }
        first = fields.next().unwrap_or_default();
    }
    if first.starts_with('|') {
        return Err(
            "hashed host names are not supported: write plain names (ssh-keyscan without -H)"
                .to_string(),
        );
    }
    let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
        return Err("expected `hostpatterns keytype base64-key`".to_string());
    };
    if first.is_empty() {
        return Err("empty host patterns".to_string());
    }
    ssh_key::PublicKey::from_openssh(&format!("{kind} {b64}"))
        .map_err(|e| format!("invalid {kind} host key: {e}"))?;
    let key_blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("invalid base64 in host key: {e}"))?;
    Ok(Entry {
        revoked,
        patterns: first.split(',').map(str::to_string).collect(),
        key_blob,
    })
}

/// OpenSSH semantics: some positive pattern matches and no negated one does.
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut positive = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob_match(neg, name) {
                return false;
            }
        } else if glob_match(p, name) {
            positive = true;
        }
    }
    positive
}

fn glob_match(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

/// Host and port of an `ssh://` or scp-like (`user@host:path`) URL; `None` for other schemes.
pub fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    let authority_and_port = |rest: &str| -> Option<(String, u16)> {
        let auth = rest.split('/').next()?;
        let hostport = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
        if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None => 22,
            };
            return Some((host.to_string(), port));
        }
        match hostport.split_once(':') {
            Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
            None => Some((hostport.to_string(), 22)),
        }
    };
    if let Some(rest) = url
        .strip_prefix("ssh://")
        .or_else(|| url.strip_prefix("git+ssh://"))
        .or_else(|| url.strip_prefix("ssh+git://"))
    {
        return authority_and_port(rest);
    }
    if url.contains("://") {
        return None;
    }
    // scp-like: [user@]host:path, where the host part has no '/'.
    let (before, _) = url.split_once(':')?;
    if before.contains('/') || before.is_empty() {
        return None;
    }
    let host = before.rsplit_once('@').map_or(before, |(_, h)| h);
    Some((host.to_string(), 22))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn blob(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn plain_and_port_qualified_names() {
        let kh = KnownHosts::parse(
            &format!("git.example.com,10.0.0.1 ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A} c\n"),
            "kh",
        )
        .unwrap();
        let a = blob(KEY_A);
        assert_eq!(kh.check("git.example.com", 22, &a), HostKeyCheck::Trusted);
        assert_eq!(kh.check("127.0.0.1", 2222, &a), HostKeyCheck::Trusted);
        assert_eq!(kh.check("127.0.0.1", 22, &a), HostKeyCheck::UnknownHost);
        assert_eq!(
            kh.check("git.example.com", 22, b"other"),
            HostKeyCheck::Mismatch
        );
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = KnownHosts::parse(
            &format!("*.example.com,!evil.example.com ssh-ed25519 {KEY_A}\n"),
            "kh",
        )
        .unwrap();
        let a = blob(KEY_A);
        assert_eq!(kh.check("git.example.com", 22, &a), HostKeyCheck::Trusted);
        assert_eq!(
            kh.check("evil.example.com", 22, &a),
            HostKeyCheck::UnknownHost
        );
        let kh = KnownHosts::parse(
            &format!("git.example.com ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n"),
            "kh",
        )
        .unwrap();
        assert_eq!(kh.check("git.example.com", 22, &a), HostKeyCheck::Revoked);
    }

    #[test]
    fn hashed_names_and_cert_authorities_are_refused() {
        let err = KnownHosts::parse(&format!("|1|abc|def ssh-ed25519 {KEY_A}"), "kh")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kh:1") && err.contains("hashed"), "{err}");
        assert!(
            KnownHosts::parse(&format!("@cert-authority * ssh-ed25519 {KEY_A}"), "kh").is_err()
        );
        assert!(KnownHosts::parse("host ssh-ed25519 !!!", "kh").is_err());
    }

    #[test]
    fn ssh_urls_yield_host_and_port() {
        assert_eq!(
            ssh_host_port("ssh://git@127.0.0.1:2222/srv/repo"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(
            ssh_host_port("ssh://git.example.com/repo"),
            Some(("git.example.com".into(), 22))
        );
        assert_eq!(
            ssh_host_port("ssh://git@[::1]:2200/repo"),
            Some(("::1".into(), 2200))
        );
        assert_eq!(
            ssh_host_port("git@github.com:org/fleet.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(ssh_host_port("https://github.com/org/fleet"), None);
        assert_eq!(ssh_host_port("/srv/repo"), None);
        assert_eq!(ssh_host_port("./a:b"), None);
    }
}
