//! SSH server host keys pinned in an OpenSSH `known_hosts` file named by the agent config, so an
//! `ssh://` source does not depend on whatever `~/.ssh/known_hosts` the daemon's user has.
//!
//! OpenSSH enforces the pin (`UserKnownHostsFile=`, strict checking; see `transport`). bosun
//! parses the file first so that a malformed file, or a file that does not list the source's
//! host at all, is an exact `file:line` error before anything connects.
//!
//! Format: `[@revoked] patterns keytype base64-key [comment]`; patterns are comma-separated host
//! names, `[host]:port` for non-22 ports, with `*`/`?` wildcards and `!` negation.
//!
//! Invariants (fail closed):
//! - Hashed host names (`|1|…`) and `@cert-authority` lines are parse errors: bosun could not
//!   tell which hosts they cover, and skipping them could silently leave a host unpinned.
//! - Every key must parse as an SSH public key.

use super::SourceError;
use crate::glob::{self, Dialect};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    revoked: bool,
    patterns: Vec<String>,
}

/// A parsed known_hosts file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Parses the file's text; `origin` names it in errors. Pure.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SourceError> {
        let entries =
            super::parse_content_lines(text, parse_line, |line, reason| SourceError::KnownHosts {
                origin: origin.to_string(),
                line,
                reason,
            })?;
        Ok(KnownHosts { entries })
    }

    /// Whether some key (not `@revoked`) is listed for `host:port`.
    pub fn lists(&self, host: &str, port: u16) -> bool {
        let name = host_name(host, port);
        self.entries
            .iter()
            .any(|e| !e.revoked && host_matches(&e.patterns, &name))
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
    Ok(Entry {
        revoked,
        patterns: first.split(',').map(str::to_string).collect(),
    })
}

/// OpenSSH semantics: some positive pattern matches and no negated one does.
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut positive = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob::matches(Dialect::SshIgnoreAsciiCase, neg, name) {
                return false;
            }
        } else if glob::matches(Dialect::SshIgnoreAsciiCase, p, name) {
            positive = true;
        }
    }
    positive
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    #[test]
    fn plain_and_port_qualified_names() {
        let kh = KnownHosts::parse(
            &format!("git.example.com,10.0.0.1 ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A} c\n"),
            "kh",
        )
        .unwrap();
        assert!(kh.lists("git.example.com", 22));
        assert!(kh.lists("10.0.0.1", 22));
        assert!(kh.lists("127.0.0.1", 2222));
        assert!(!kh.lists("127.0.0.1", 22));
        assert!(!kh.lists("git.example.com", 2222));
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = KnownHosts::parse(
            &format!("*.example.com,!evil.example.com ssh-ed25519 {KEY_A}\n"),
            "kh",
        )
        .unwrap();
        assert!(kh.lists("GIT.example.com", 22));
        assert!(!kh.lists("evil.example.com", 22));
        let kh = KnownHosts::parse(&format!("@revoked * ssh-ed25519 {KEY_A}\n"), "kh").unwrap();
        assert!(!kh.lists("git.example.com", 22));
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
        assert!(KnownHosts::parse("host ssh-ed25519", "kh").is_err());
    }
}
