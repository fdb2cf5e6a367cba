//! Printing a merged config tree: YAML (optionally with the file:line each value came from) or
//! JSON. Secrets are replaced by `<redacted>` unless the caller asks for them, by the rules of
//! [`super::secrets`] that plans use too: `k3os.token`, `k3os.password`, wifi passphrases, the
//! content of `write_files` entries that are not world-readable, `k3os.environment` values
//! whose names say they are secret, and credentials in `k3os.k3s_args`. Pure.

use serde_json::{Map, Value};

use super::convert::parse_mode;
use super::secrets::{env_name_is_secret, mode_is_secret, redact_k3s_args, REDACTED};
use super::yaml::{Kind, Node, BINARY_TAG};

const SECRET_PATHS: &[&str] = &["k3os.token", "k3os.password", "passphrase"];

fn is_secret(path: &str) -> bool {
    SECRET_PATHS
        .iter()
        .any(|s| path == *s || path.ends_with(&format!(".{s}")))
}

/// Whether the value of `key` in mapping `map` (at `path`) is secret.
fn entry_is_secret(path: &str, map: &Node, key: &str) -> bool {
    is_secret(&child(path, key))
        || (path == "write_files" && key == "content" && write_file_is_secret(map))
        || (path == "k3os.environment" && env_name_is_secret(key))
}

/// Whether a `write_files` entry is secret by its `permissions` (default 0644); a mode that
/// does not parse counts as secret.
fn write_file_is_secret(entry: &Node) -> bool {
    match entry.get("permissions").map(|n| &n.kind) {
        None | Some(Kind::Null) => false,
        Some(Kind::Scalar(s)) => parse_mode(&s.value).map_or(true, mode_is_secret),
        Some(_) => true,
    }
}

/// The items of sequence `items` at `path` as they may be shown: `k3os.k3s_args` through
/// [`redact_k3s_args`], `None` (unchanged) for every other sequence.
fn redacted_items(path: &str, items: &[Node]) -> Option<Vec<String>> {
    if path != "k3os.k3s_args" {
        return None;
    }
    let texts: Vec<String> = items
        .iter()
        .map(|i| match &i.kind {
            Kind::Scalar(s) => s.value.clone(),
            _ => String::new(),
        })
        .collect();
    Some(redact_k3s_args(&texts))
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// JSON form of the tree (scalars as strings, `!!binary` as its base64 text).
pub fn to_json(node: &Node, redact: bool) -> Value {
    /// `shown`: the text to print instead of the scalar `n` (a redaction), if any.
    fn go(n: &Node, path: &str, redact: bool, shown: Option<String>) -> Value {
        match &n.kind {
            Kind::Null => Value::Null,
            Kind::Scalar(_) | Kind::Seq(_) | Kind::Map(_) if shown.is_some() => {
                Value::String(shown.unwrap_or_default())
            }
            Kind::Scalar(s) => Value::String(s.value.clone()),
            Kind::Seq(items) => {
                let texts = redacted_items(path, items).filter(|_| redact);
                let shown = |i: usize| texts.as_ref().map(|t| t[i].clone());
                let values = items.iter().enumerate();
                Value::Array(
                    values
                        .map(|(i, it)| go(it, path, redact, shown(i)))
                        .collect(),
                )
            }
            Kind::Map(entries) => {
                let mut m = Map::new();
                for e in entries {
                    let secret = redact && entry_is_secret(path, n, &e.key);
                    let shown = secret.then(|| REDACTED.to_string());
                    m.insert(
                        e.key.clone(),
                        go(&e.value, &child(path, &e.key), redact, shown),
                    );
                }
                Value::Object(m)
            }
        }
    }
    go(node, "", redact, None)
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn plain_key(k: &str) -> String {
    let safe = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
        && !k.starts_with(['-', '.']);
    if safe {
        k.to_string()
    } else {
        quote(k)
    }
}

/// YAML form of the tree. With `explain`, each value is followed by `# file:line:col`.
pub fn to_yaml(node: &Node, explain: bool, redact: bool) -> String {
    let mut out = String::new();
    if explain {
        out.push_str("# merged config; `# file:line:col` shows where each value came from\n");
    }
    match &node.kind {
        Kind::Map(entries) if entries.is_empty() => out.push_str("{}\n"),
        _ => emit(node, 0, "", explain, redact, &mut out),
    }
    out
}

/// The YAML text of leaf `n`; `shown` replaces a value (a redaction).
fn scalar_text(n: &Node, shown: Option<&str>) -> String {
    match &n.kind {
        Kind::Null => "null".into(),
        _ if shown.is_some() => quote(shown.unwrap_or_default()),
        Kind::Scalar(s) if s.tag.as_deref() == Some(BINARY_TAG) => {
            format!(
                "!!binary {}",
                quote(&s.value.split_whitespace().collect::<String>())
            )
        }
        Kind::Scalar(s) => quote(&s.value),
        Kind::Seq(_) => "[]".into(),
        Kind::Map(_) => "{}".into(),
    }
}

fn is_leaf(n: &Node) -> bool {
    match &n.kind {
        Kind::Seq(v) => v.is_empty(),
        Kind::Map(m) => m.is_empty(),
        _ => true,
    }
}

fn emit(n: &Node, indent: usize, path: &str, explain: bool, redact: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    let origin = |n: &Node| {
        if explain {
            format!("  # {}", n.pos)
        } else {
            String::new()
        }
    };
    match &n.kind {
        Kind::Map(entries) => {
            for e in entries {
                let p = child(path, &e.key);
                let secret = redact && entry_is_secret(path, n, &e.key);
                if secret || is_leaf(&e.value) {
                    out.push_str(&format!(
                        "{pad}{}: {}{}\n",
                        plain_key(&e.key),
                        scalar_text(&e.value, secret.then_some(REDACTED)),
                        origin(&e.value)
                    ));
                } else {
                    out.push_str(&format!(
                        "{pad}{}:{}\n",
                        plain_key(&e.key),
                        origin(&e.value)
                    ));
                    emit(&e.value, indent + 2, &p, explain, redact, out);
                }
            }
        }
        Kind::Seq(items) => {
            let texts = redacted_items(path, items).filter(|_| redact);
            for (i, it) in items.iter().enumerate() {
                if is_leaf(it) {
                    let shown = texts.as_ref().map(|t| t[i].as_str());
                    out.push_str(&format!(
                        "{pad}- {}{}\n",
                        scalar_text(it, shown),
                        origin(it)
                    ));
                } else {
                    let mut inner = String::new();
                    emit(it, indent + 2, path, explain, redact, &mut inner);
                    // Put the first line of the item after "- ".
                    let trimmed = inner.trim_start_matches(' ');
                    out.push_str(&format!("{pad}- {trimmed}"));
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}{}\n", scalar_text(n, None), origin(n))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    #[test]
    fn yaml_round_trips_through_the_parser() {
        let src = "hostname: a\nk3os:\n  labels:\n    x/y: \"1\"\n  token: sekrit\nwrite_files:\n- path: /a\n  content: \"line1\\nline2\"\n";
        let n = parse("t.yaml", src).unwrap();
        let y = to_yaml(&n, true, true);
        assert!(!y.contains("sekrit"), "{y}");
        assert!(y.contains("# t.yaml:1:11"), "{y}");
        let back = parse("back.yaml", &to_yaml(&n, false, false)).unwrap();
        assert_eq!(to_json(&back, false), to_json(&n, false));
    }
}
