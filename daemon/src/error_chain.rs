//! How an error and its causes are printed: one line, each cause once. Pure.
//!
//! Many errors already include their cause in their own text (`"{path}: {source}"`, or a
//! wrapper whose text is its inner error's) and also return it from `source()`. Printing the
//! chain naively (anyhow's `{:#}`, or walking `source()`) then repeats it: "X: X". Here a cause
//! is left out when the text so far already contains it, so every error type may include its
//! source or not, and nothing is lost or doubled. Likewise a context naming a path followed by
//! a cause that starts with the same path (`reading repo /r` + `/r: no config.yaml`) names it
//! once.

/// `e` and its causes, joined by `: `, each cause left out when the text so far already
/// contains it, and a cause's leading `X: ` dropped when the text so far ends with the word(s)
/// `X`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            let rest = text
                .match_indices(": ")
                .map(|(i, _)| i)
                .find(|&i| ends_with_words(&out, &text[..i]))
                .map_or(text.as_str(), |i| &text[i..]);
            if !rest.starts_with(": ") {
                out.push_str(": ");
            }
            out.push_str(rest);
        }
        cur = cause.source();
    }
    out
}

/// Whether `text` ends with `tail`, starting at a word boundary (the start or after a space).
fn ends_with_words(text: &str, tail: &str) -> bool {
    !tail.is_empty()
        && text.ends_with(tail)
        && text[..text.len() - tail.len()]
            .chars()
            .next_back()
            .is_none_or(|c| c == ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("disk full")]
        Full,
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("{0}")]
        Wrapped(#[from] Inner),
        #[error("writing /x: {0}")]
        Prefixed(#[source] Inner),
        #[error("writing /y")]
        Silent(#[source] Inner),
    }

    #[test]
    fn each_cause_once() {
        assert_eq!(error_chain(&Outer::Wrapped(Inner::Full)), "disk full");
        assert_eq!(
            error_chain(&Outer::Prefixed(Inner::Full)),
            "writing /x: disk full"
        );
        assert_eq!(
            error_chain(&Outer::Silent(Inner::Full)),
            "writing /y: disk full"
        );
        let any = anyhow::Error::new(Outer::Prefixed(Inner::Full)).context("applying");
        assert_eq!(error_chain(any.as_ref()), "applying: writing /x: disk full");
        // anyhow's own `{:#}` repeats it; the reason this module exists.
        assert_eq!(
            format!("{any:#}"),
            "applying: writing /x: disk full: disk full"
        );
    }

    #[test]
    fn a_path_named_by_context_and_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "/r: no config.yaml");
        let any = anyhow::Error::new(io);
        assert_eq!(
            error_chain(any.context("reading config repo /r").as_ref()),
            "reading config repo /r: no config.yaml"
        );
        // Only whole words: "config" does not swallow a cause starting with "g: ".
        let io = std::io::Error::other("g: bad");
        assert_eq!(
            error_chain(anyhow::Error::new(io).context("open config").as_ref()),
            "open config: g: bad"
        );
    }
}
