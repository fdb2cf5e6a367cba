//! Glob patterns: the one matcher behind every pattern bosun reads, in the two dialects its
//! inputs use. Pure.
//!
//! - [`Dialect::Shell`] (group `match:` lists on hostnames, `config::layers`): `*` any run,
//!   `?` one character, bracket classes `[abc]`, `[a-z]`, `[!x]` / `[^x]`. A `]` right after
//!   the opening bracket (or its negation) is a member, a `-` before the closing bracket is a
//!   literal, and a `[` without a closing bracket is a literal to the matcher (group files are
//!   checked with [`check_shell`] first, which refuses it). Characters are Unicode scalar
//!   values, compared exactly.
//! - [`Dialect::Ssh`] and [`Dialect::SshIgnoreAsciiCase`] (OpenSSH's `match_pattern`: the
//!   `namespaces=` of allowed_signers, case-sensitive; known_hosts host patterns, ASCII
//!   case-insensitive): only `*` and `?` are special; every other byte, `[` included (as in
//!   `[host]:port`), is a literal. Matching is byte by byte, so `?` is one byte.
//!
//! Invariant: a pattern matches the whole name, never a part of it.

/// Which pattern syntax applies and how characters compare (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Shell globs with bracket classes, on characters, case-sensitive.
    Shell,
    /// OpenSSH patterns (`*`, `?`), on bytes, case-sensitive.
    Ssh,
    /// OpenSSH patterns (`*`, `?`), on bytes, ASCII letters compared without case.
    SshIgnoreAsciiCase,
}

/// Whether `pattern`, read in `dialect`, matches all of `name`. Pure.
pub fn matches(dialect: Dialect, pattern: &str, name: &str) -> bool {
    match dialect {
        Dialect::Shell => {
            let p: Vec<char> = pattern.chars().collect();
            let n: Vec<char> = name.chars().collect();
            go(&p, &n, true, false)
        }
        Dialect::Ssh => go(pattern.as_bytes(), name.as_bytes(), false, false),
        Dialect::SshIgnoreAsciiCase => go(pattern.as_bytes(), name.as_bytes(), false, true),
    }
}

/// Checks a shell-dialect pattern (group `match:` globs) for mistakes the matcher would
/// otherwise read literally: every `[` must open a class closed by `]`. Returns the reason,
/// naming the character position (1-based) of the unclosed `[`. Pure.
pub fn check_shell(pattern: &str) -> Result<(), String> {
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            match class(&p[i + 1..], ' ') {
                Some((_, used)) => {
                    i += 1 + used;
                    continue;
                }
                None => {
                    return Err(format!(
                        "`[` at character {} opens a class that is never closed; expected `]` \
                         (as in `rack[1-3]-*`)",
                        i + 1
                    ))
                }
            }
        }
        i += 1;
    }
    Ok(())
}

/// A unit of matching: a byte (OpenSSH dialects) or a character (shell dialect).
trait Symbol: Copy + Ord {
    /// Whether this is the ASCII character `c`.
    fn is(self, c: u8) -> bool;
    /// Equality, ignoring the case of ASCII letters when asked.
    fn same(self, other: Self, ignore_ascii_case: bool) -> bool;
}

impl Symbol for u8 {
    fn is(self, c: u8) -> bool {
        self == c
    }
    fn same(self, other: Self, ignore_ascii_case: bool) -> bool {
        if ignore_ascii_case {
            self.eq_ignore_ascii_case(&other)
        } else {
            self == other
        }
    }
}

impl Symbol for char {
    fn is(self, c: u8) -> bool {
        self == char::from(c)
    }
    fn same(self, other: Self, ignore_ascii_case: bool) -> bool {
        if ignore_ascii_case {
            self.eq_ignore_ascii_case(&other)
        } else {
            self == other
        }
    }
}

/// Matches pattern `p` against all of `n`; `classes` enables bracket classes.
fn go<S: Symbol>(p: &[S], n: &[S], classes: bool, ignore_ascii_case: bool) -> bool {
    let Some(&first) = p.first() else {
        return n.is_empty();
    };
    if first.is(b'*') {
        return (0..=n.len()).any(|k| go(&p[1..], &n[k..], classes, ignore_ascii_case));
    }
    let Some(&c) = n.first() else {
        return false;
    };
    if first.is(b'?') {
        return go(&p[1..], &n[1..], classes, ignore_ascii_case);
    }
    if classes && first.is(b'[') {
        if let Some((hit, used)) = class(&p[1..], c) {
            return hit && go(&p[1 + used..], &n[1..], classes, ignore_ascii_case);
        }
        // No closing bracket: the `[` is a literal.
    }
    first.same(c, ignore_ascii_case) && go(&p[1..], &n[1..], classes, ignore_ascii_case)
}

/// A bracket class: `p` starts right after the `[`. Returns whether `c` is in the class and
/// how many symbols it used (including the `]`), or `None` when it is never closed.
fn class<S: Symbol>(p: &[S], c: S) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = p.first().is_some_and(|f| f.is(b'!') || f.is(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i].is(b']') && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1].is(b'-') && !p[i + 2].is(b']') {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(p: &str, n: &str) -> bool {
        matches(Dialect::Shell, p, n)
    }

    fn ssh(p: &str, n: &str) -> bool {
        matches(Dialect::Ssh, p, n)
    }

    fn ssh_host(p: &str, n: &str) -> bool {
        matches(Dialect::SshIgnoreAsciiCase, p, n)
    }

    #[test]
    fn shell_globs_on_hostnames() {
        assert!(shell("edge-*", "edge-01"));
        assert!(!shell("edge-*", "core-01"));
        assert!(shell("edge-0?", "edge-07"));
        assert!(shell("rack[1-3]-*", "rack2-a"));
        assert!(!shell("rack[!1-3]-*", "rack2-a"));
        assert!(shell("*", "anything"));
        assert!(shell("exact", "exact"));
        assert!(!shell("exact", "exact2"));
    }

    #[test]
    fn shell_class_edge_cases() {
        assert!(shell("[^a]", "b") && !shell("[^a]", "a"));
        assert!(shell("[]a]", "]") && shell("[]a]", "a"));
        assert!(shell("[!]]", "x") && !shell("[!]]", "]"));
        assert!(shell("[a-]", "-") && shell("[a-]", "a") && !shell("[a-]", "b"));
        assert!(shell("a[b", "a[b") && !shell("a[b", "ab"));
        assert!(!shell("[a]", ""));
        assert!(!shell("?", ""));
        assert!(shell("?", "é"));
        assert!(!shell("Edge", "edge"));
    }

    #[test]
    fn unclosed_classes_are_refused_by_the_check() {
        assert!(check_shell("edge-*").is_ok());
        assert!(check_shell("rack[1-3]-*").is_ok());
        assert!(check_shell("[]a]").is_ok());
        assert!(check_shell("[!]]x").is_ok());
        let e = check_shell("[abc").unwrap_err();
        assert!(e.contains("character 1"), "{e}");
        let e = check_shell("a[b]c[d").unwrap_err();
        assert!(e.contains("character 6"), "{e}");
        assert!(
            check_shell("[]").is_err(),
            "`]` right after `[` is a member"
        );
    }

    #[test]
    fn ssh_patterns_on_namespaces() {
        assert!(ssh("git", "git"));
        assert!(ssh("g*", "git"));
        assert!(ssh("?it", "git"));
        assert!(!ssh("file", "git"));
        assert!(!ssh("GIT", "git"));
    }

    #[test]
    fn ssh_brackets_are_literals_and_question_mark_is_one_byte() {
        assert!(ssh("[127.0.0.1]:2222", "[127.0.0.1]:2222"));
        assert!(!ssh("[127.0.0.1]:2222", "1:2222"));
        assert!(shell("[127.0.0.1]:2222", "1:2222"));
        assert!(ssh("[*]:2222", "[git.example.com]:2222"));
        assert!(!ssh("?", "é") && ssh("??", "é"));
    }

    #[test]
    fn ssh_host_patterns_ignore_ascii_case() {
        assert!(ssh_host("GIT.Example.com", "git.example.COM"));
        assert!(ssh_host("*.EXAMPLE.com", "git.example.com"));
        assert!(!ssh_host("git.example.com", "git.example.org"));
        assert!(!ssh("GIT.Example.com", "git.example.COM"));
    }
}
