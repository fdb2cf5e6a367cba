//! Value syntaxes shared by several sections: host names, URLs, absolute file paths and
//! durations. Pure functions of a string; the error text says what was expected, and the
//! caller adds the position and field.

use std::time::Duration;

/// Whether `h` is a DNS host name: dot-separated labels of letters, digits and `-`, each at
/// most 63 characters and not starting or ending with `-`; at most 253 characters in all.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The error for the first control character in `s` (line breaks, escape sequences, NUL, …)
/// other than those in `allowed`, or `None`. Such characters would break the line-based files
/// bosun writes and could spoof what `plan` prints.
pub fn control_character(s: &str, allowed: &[char]) -> Option<String> {
    let (at, c) = s
        .char_indices()
        .find(|(_, c)| c.is_control() && !allowed.contains(c))?;
    Some(format!("contains a control character ({c:?} at byte {at})"))
}

/// Checks a URL: https anywhere, http only to loopback (test servers). Returns an error text.
/// Control characters are refused (the URL parser would silently drop tabs and line breaks).
pub(super) fn check_url(s: &str) -> Result<(), String> {
    if let Some(e) = control_character(s, &[]) {
        return Err(format!("{s:?} {e}"));
    }
    let u = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a valid URL ({e})"))?;
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if crate::netpolicy::is_loopback_host(&u) => Ok(()),
        "http" => Err(format!(
            "{s:?} uses plain http; expected https (http is allowed only to loopback)"
        )),
        other => Err(format!("{s:?} has scheme {other:?}; expected https")),
    }
}

/// Longest file name component Linux accepts (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// Longest path Linux accepts (`PATH_MAX` without the terminating NUL).
const PATH_MAX: usize = 4095;

/// Normalises an absolute path: rejects relative paths, `..`, `.`, empty components, control
/// characters (NUL included), components over 255 bytes, paths over 4095 bytes and the
/// kernel's virtual filesystems.
pub fn check_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} is not absolute; expected a path starting with /"
        ));
    }
    if let Some(e) = control_character(p, &[]) {
        return Err(format!("{p:?} {e}; expected a file path"));
    }
    if p.len() > PATH_MAX {
        return Err(format!(
            "path is {} bytes; Linux accepts at most {PATH_MAX}",
            p.len()
        ));
    }
    let parts: Vec<&str> = p[1..].split('/').collect();
    if let Some(long) = parts.iter().find(|c| c.len() > NAME_MAX) {
        return Err(format!(
            "path has a component of {} bytes ({:?}…); Linux accepts at most {NAME_MAX} per component",
            long.len(),
            long.chars().take(16).collect::<String>()
        ));
    }
    if parts.iter().any(|c| *c == ".." || *c == ".") {
        return Err(format!(
            "{p:?} contains `.` or `..`; expected a normalised absolute path"
        ));
    }
    if parts.iter().any(|c| c.is_empty()) {
        return Err(format!(
            "{p:?} has an empty component or trailing /; expected a normalised file path"
        ));
    }
    for bad in ["proc", "sys", "dev"] {
        if parts.first() == Some(&bad) {
            return Err(format!(
                "{p:?} is under /{bad}, a kernel filesystem; bosun writes only regular files"
            ));
        }
    }
    Ok(p.to_string())
}

/// The node's local agent config (trust roots, never taken from Git).
pub const AGENT_CONFIG_DIR: &str = "/etc/bosun";

/// A `write_files` path: [`check_path`], and not inside bosun's own directories
/// ([`check_not_bosuns_own`]).
pub(super) fn check_file_path(p: &str, state_dir: &str) -> Result<String, String> {
    let p = check_path(p)?;
    check_not_bosuns_own(&p, state_dir)?;
    Ok(p)
}

/// Refuses a (normalised) file path inside bosun's own directories: its state dir
/// `state_dir` (journal, managed set, caches) and [`AGENT_CONFIG_DIR`].
pub(super) fn check_not_bosuns_own(p: &str, state_dir: &str) -> Result<(), String> {
    let inside = |dir: &str| p == dir || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    if inside(state_dir) {
        return Err(format!(
            "{p:?} is inside bosun's state dir {state_dir}; bosun keeps its journal and managed \
             set there and never writes it from the config"
        ));
    }
    if inside(AGENT_CONFIG_DIR) {
        return Err(format!(
            "{p:?} is inside {AGENT_CONFIG_DIR}, the node's local agent config (repo URL, \
             trusted signers), which never comes from Git"
        ));
    }
    Ok(())
}

/// `300`, `90s`, `5m`, `1h30m`, `250ms` → Duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad =
        || format!("{t:?} is not a duration; expected seconds or a value like 90s, 5m, 1h30m");
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(bad());
        };
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        rest = &rest[len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn paths() {
        assert!(check_path("/etc/x").is_ok());
        assert!(check_path("etc/x").is_err());
        assert!(check_path("/etc/../x").is_err());
        assert!(check_path("/etc//x").is_err());
        assert!(check_path("/proc/sys/x").is_err());
        assert!(check_path("/etc/").is_err());
        assert!(check_path("/etc/a\u{1b}[2Jb").is_err());
        assert!(check_path("/etc/a\0b").is_err());
        assert!(check_path(&format!("/etc/{}", "a".repeat(255))).is_ok());
        assert!(check_path(&format!("/etc/{}", "a".repeat(256))).is_err());
        assert!(check_path(&"/aaaaaaaa".repeat(512)).is_err());
    }

    #[test]
    fn urls_with_control_characters() {
        assert!(check_url("https://example.org/keys").is_ok());
        assert!(check_url("https://example.org/ke\nys").is_err());
        assert!(check_url("https://example.org/ke\tys").is_err());
    }

    #[test]
    fn bosuns_own_dirs() {
        let sd = "/var/lib/bosun";
        assert!(check_not_bosuns_own("/var/lib/bosun", sd).is_err());
        assert!(check_not_bosuns_own("/var/lib/bosun/x/y", sd).is_err());
        assert!(check_not_bosuns_own("/etc/bosun/agent.yaml", sd).is_err());
        assert!(check_not_bosuns_own("/var/lib/bosun2", sd).is_ok());
        assert!(check_not_bosuns_own("/etc/bosun.conf", sd).is_ok());
        assert!(check_not_bosuns_own("/data/bosun/x", "/data/bosun").is_err());
    }
}
