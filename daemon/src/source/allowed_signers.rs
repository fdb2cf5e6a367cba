//! git's `allowed_signers` file (the `ssh-keygen -Y verify` format) and SSH commit signature
//! checks against it.
//!
//! Format, one signer per line (`#` comments and blank lines ignored):
//! `principals [options] keytype base64-key [comment]`, where options are comma-separated:
//! `namespaces="git,…"`, `valid-after="YYYYMMDD[HHMM[SS]][Z]"`, `valid-before="…"`.
//!
//! Invariants (fail closed):
//! - `cert-authority` lines and unknown options are parse errors: bosun verifies plain keys only
//!   and never silently ignores a restriction it does not understand.
//! - Times in `valid-after`/`valid-before` are read as UTC (ssh-keygen reads them as local
//!   time unless suffixed `Z`; nodes run in UTC).
//! - They are compared with the **verifier's current time** (a parameter, so this stays pure),
//!   not with the commit's date. git (`git verify-commit`, `log --show-signature`) compares
//!   them with the committer date, which answers "was this key valid when the signer says they
//!   signed?"; but the signer writes that date, so a key past its `valid-before` could still
//!   sign commits backdated into its window. An agent that applies commits automatically needs
//!   expiry to act as revocation: once the node's clock passes `valid-before`, the key signs
//!   nothing more, whatever date its commits carry. (Commits dated far ahead of the node's
//!   clock are refused separately, see `verify::MAX_COMMIT_AHEAD_SECS`.)
//! - A key listed with `namespaces=` that does not include `git` does not authorize commits.

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::verify::Refusal;
use super::SourceError;
use crate::glob::{self, Dialect};

/// The namespace git uses for SSH commit signatures.
pub const GIT_NAMESPACE: &str = "git";

/// One line of an allowed signers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSigner {
    /// The principals field as written (e.g. `alice@example.com,ops@example.com`).
    pub principals: String,
    /// `namespaces=` patterns; `None` means any namespace.
    pub namespaces: Option<Vec<String>>,
    /// Unix seconds.
    pub valid_after: Option<i64>,
    /// Unix seconds.
    pub valid_before: Option<i64>,
    /// The trusted public key.
    pub key: PublicKey,
}

/// A parsed allowed signers file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedSigners {
    entries: Vec<AllowedSigner>,
}

/// Why a key did not authorize a signature.
#[derive(Debug, PartialEq, Eq)]
enum Lookup<'a> {
    Allowed(&'a AllowedSigner),
    /// Listed, but not for this namespace or not at this time.
    Restricted(String),
    Unknown,
}

impl AllowedSigners {
    /// Parses the file's text. `origin` (a path, or "agent config") names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SourceError> {
        let entries = super::parse_content_lines(text, parse_line, |line, reason| {
            SourceError::AllowedSigners {
                origin: origin.to_string(),
                line,
                reason,
            }
        })?;
        Ok(AllowedSigners { entries })
    }

    /// Every parsed line, in file order.
    pub fn entries(&self) -> &[AllowedSigner] {
        &self.entries
    }

    /// Whether no signer is listed (with verification on, nothing could be trusted).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry authorizing `key` for `namespace` at `now` (unix seconds). Pure.
    fn lookup(&self, key: &KeyData, namespace: &str, now: i64) -> Lookup<'_> {
        let mut restricted = None;
        for e in self.entries.iter().filter(|e| e.key.key_data() == key) {
            if let Some(ns) = &e.namespaces {
                if !ns.iter().any(|p| glob::matches(Dialect::Ssh, p, namespace)) {
                    restricted = Some(format!(
                        "listed for {} but only for namespaces {}",
                        e.principals,
                        ns.join(",")
                    ));
                    continue;
                }
            }
            if let Some(t) = e.valid_after.filter(|&t| now < t) {
                restricted = Some(format!(
                    "listed for {} but not valid before {} (valid-after; checked against this \
                     node's clock)",
                    e.principals,
                    format_utc(t)
                ));
                continue;
            }
            if let Some(t) = e.valid_before.filter(|&t| now > t) {
                restricted = Some(format!(
                    "listed for {} but expired at {} (valid-before; checked against this node's \
                     clock, not the commit's date)",
                    e.principals,
                    format_utc(t)
                ));
                continue;
            }
            return Lookup::Allowed(e);
        }
        match restricted {
            Some(r) => Lookup::Restricted(r),
            None => Lookup::Unknown,
        }
    }

    /// Verifies an armored SSH signature (`-----BEGIN SSH SIGNATURE-----`) over `signed_data`
    /// with the keys valid at `now` (the verifier's clock, unix seconds; see the module docs for
    /// why not the commit's date). Returns the signer's principals. Pure.
    pub(crate) fn verify(
        &self,
        armored: &str,
        signed_data: &[u8],
        now: i64,
    ) -> Result<String, Refusal> {
        let sig = SshSig::from_pem(armored.trim()).map_err(|e| Refusal::BadSignature {
            detail: format!("unreadable SSH signature: {e}"),
        })?;
        if sig.namespace() != GIT_NAMESPACE {
            return Err(Refusal::WrongNamespace {
                namespace: sig.namespace().to_string(),
            });
        }
        let key = PublicKey::from(sig.public_key().clone());
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let signer = match self.lookup(sig.public_key(), GIT_NAMESPACE, now) {
            Lookup::Allowed(e) => e,
            Lookup::Restricted(why) => {
                return Err(Refusal::UnknownKey {
                    key: format!("SSH key {fingerprint} ({why})"),
                })
            }
            Lookup::Unknown => {
                return Err(Refusal::UnknownKey {
                    key: format!("SSH key {fingerprint}"),
                })
            }
        };
        signer
            .key
            .verify(GIT_NAMESPACE, signed_data, &sig)
            .map_err(|e| Refusal::BadSignature {
                detail: format!("SSH signature by {fingerprint} does not match the commit: {e}"),
            })?;
        Ok(signer.principals.clone())
    }
}

fn is_key_type(tok: &str) -> bool {
    tok.starts_with("ssh-") || tok.starts_with("ecdsa-sha2-") || tok.starts_with("sk-")
}

/// Splits on whitespace outside double quotes; quotes are kept.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".to_string());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn parse_line(line: &str) -> Result<AllowedSigner, String> {
    let toks = tokens(line)?;
    let expected = "expected `principals [options] keytype base64-key`";
    if toks.len() < 3 {
        return Err(format!("too few fields, {expected}"));
    }
    let principals = unquote(&toks[0]).to_string();
    if principals.is_empty() {
        return Err("empty principals".to_string());
    }
    let (options, key_at) = if is_key_type(&toks[1]) {
        (None, 1)
    } else {
        (Some(toks[1].as_str()), 2)
    };
    let (Some(kind), Some(b64)) = (toks.get(key_at), toks.get(key_at + 1)) else {
        return Err(format!("missing key, {expected}"));
    };
    if !is_key_type(kind) {
        return Err(format!("unknown key type {kind:?}, {expected}"));
    }
    let key = PublicKey::from_openssh(&format!("{kind} {b64}"))
        .map_err(|e| format!("invalid {kind} public key: {e}"))?;
    let mut entry = AllowedSigner {
        principals,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        key,
    };
    if let Some(opts) = options {
        for opt in split_options(opts)? {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n.to_ascii_lowercase(), Some(unquote(v).to_string())),
                None => (opt.to_ascii_lowercase(), None),
            };
            match (name.as_str(), value) {
                ("cert-authority", _) => {
                    return Err(
                        "cert-authority is not supported: list the signing keys themselves"
                            .to_string(),
                    )
                }
                ("namespaces", Some(v)) => {
                    entry.namespaces = Some(
                        v.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                }
                ("valid-after", Some(v)) => entry.valid_after = Some(parse_time(&v)?),
                ("valid-before", Some(v)) => entry.valid_before = Some(parse_time(&v)?),
                (other, _) => {
                    return Err(format!(
                        "unsupported option {other:?} (known: namespaces=, valid-after=, valid-before=)"
                    ))
                }
            }
        }
    }
    Ok(entry)
}

/// Splits an options field on commas outside double quotes.
fn split_options(opts: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in opts.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote in options".to_string());
    }
    out.push(cur);
    if out.iter().any(String::is_empty) {
        return Err(format!("empty option in {opts:?}"));
    }
    Ok(out)
}

/// `YYYYMMDD[HHMM[SS]][Z]` → unix seconds (UTC).
fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid time {s:?}, expected YYYYMMDD[HHMM[SS]][Z]");
    let digits = s.strip_suffix(['Z', 'z']).unwrap_or(s);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let num = |a: usize, b: usize| -> i64 { digits[a..b].parse().unwrap_or(-1) };
    let (y, mo, d) = (num(0, 4), num(4, 6), num(6, 8));
    let (h, mi, sec) = match digits.len() {
        8 => (0, 0, 0),
        12 => (num(8, 10), num(10, 12), 0),
        _ => (num(8, 10), num(10, 12), num(12, 14)),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Unix seconds → `YYYY-MM-DD HH:MM:SS UTC`, for messages. Pure.
pub(crate) fn format_utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Inverse of `days_from_civil` (H. Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fixed ed25519 public key (from ssh-key's test vectors), used only for parsing tests.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    #[test]
    fn plain_line_without_options() {
        let s = AllowedSigners::parse(&format!("alice@example.com {KEY} laptop\n"), "t").unwrap();
        let e = &s.entries()[0];
        assert_eq!(e.principals, "alice@example.com");
        assert_eq!(e.namespaces, None);
    }

    #[test]
    fn options_with_quoted_lists_are_parsed() {
        let text = format!(
            "# fleet signers\n\n\"ops@example.com,ci@example.com\" namespaces=\"git,file\",valid-after=\"20240101\",valid-before=\"20300101Z\" {KEY}\n"
        );
        let s = AllowedSigners::parse(&text, "t").unwrap();
        let e = &s.entries()[0];
        assert_eq!(e.principals, "ops@example.com,ci@example.com");
        assert_eq!(
            e.namespaces.as_deref(),
            Some(&["git".to_string(), "file".to_string()][..])
        );
        assert_eq!(e.valid_after, Some(1_704_067_200));
        assert_eq!(e.valid_before, Some(1_893_456_000));
    }

    #[test]
    fn cert_authority_and_unknown_options_are_refused_with_line_numbers() {
        let err = AllowedSigners::parse(&format!("\na cert-authority {KEY}\n"), "signers")
            .unwrap_err()
            .to_string();
        assert!(err.contains("signers:2"), "{err}");
        assert!(err.contains("cert-authority"), "{err}");
        let err = AllowedSigners::parse(&format!("a frobnicate {KEY}\n"), "signers")
            .unwrap_err()
            .to_string();
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[test]
    fn broken_keys_and_short_lines_are_refused() {
        assert!(AllowedSigners::parse("alice\n", "t").is_err());
        assert!(AllowedSigners::parse("alice ssh-ed25519 AAAA!!\n", "t").is_err());
        assert!(AllowedSigners::parse(&format!("a valid-after=\"2024\" {KEY}"), "t").is_err());
    }

    #[test]
    fn namespace_and_validity_window_restrict_a_key() {
        let text = format!(
            "ns namespaces=\"file\" {KEY}\nwin valid-after=\"20240101\",valid-before=\"20250101\" {KEY}\n"
        );
        let s = AllowedSigners::parse(&text, "t").unwrap();
        let key = s.entries()[0].key.key_data().clone();
        let in_window = 1_720_000_000; // 2024-07
        let after_window = 1_750_000_000; // 2025-06
        match s.lookup(&key, "git", in_window) {
            Lookup::Allowed(e) => assert_eq!(e.principals, "win"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.lookup(&key, "git", after_window),
            Lookup::Restricted(_)
        ));
        match s.lookup(&key, "file", after_window) {
            Lookup::Allowed(e) => assert_eq!(e.principals, "ns"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validity_is_judged_at_the_given_time_and_named_in_the_refusal() {
        let text = format!("old valid-after=\"20180101Z\",valid-before=\"20200101Z\" {KEY}\n");
        let s = AllowedSigners::parse(&text, "t").unwrap();
        let key = s.entries()[0].key.key_data().clone();
        assert!(matches!(
            s.lookup(&key, "git", 1_559_347_200),
            Lookup::Allowed(_)
        ));
        match s.lookup(&key, "git", 1_750_000_000) {
            Lookup::Restricted(why) => assert!(
                why.contains("expired at 2020-01-01 00:00:00 UTC") && why.contains("node's clock"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        match s.lookup(&key, "git", 1_500_000_000) {
            Lookup::Restricted(why) => {
                assert!(
                    why.contains("not valid before 2018-01-01 00:00:00 UTC"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn utc_formatting_inverts_time_parsing() {
        for t in [
            "19700101",
            "20000229235959Z",
            "202401011230",
            "20991231235959",
        ] {
            let unix = parse_time(t).unwrap();
            let digits: String = format_utc(unix)
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            let want = format!("{:0<14}", t.trim_end_matches('Z'));
            assert_eq!(digits, want, "{t}");
        }
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn time_parsing_matches_known_epochs() {
        assert_eq!(parse_time("19700101").unwrap(), 0);
        assert_eq!(parse_time("20000229235959Z").unwrap(), 951_868_799);
        assert_eq!(parse_time("202401011230").unwrap(), 1_704_112_200);
        assert!(parse_time("20241301").is_err());
    }

    #[test]
    fn garbage_signature_is_a_bad_signature() {
        let s = AllowedSigners::parse(&format!("a {KEY}"), "t").unwrap();
        assert!(matches!(
            s.verify(
                "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
                b"x",
                0
            ),
            Err(Refusal::BadSignature { .. })
        ));
    }
}
