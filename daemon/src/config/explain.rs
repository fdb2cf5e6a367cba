//! Printing a merged config tree: YAML (optionally with the file:line each value came from) or
//! JSON. Secrets (`k3os.token`, `k3os.password`, wifi passphrases) are replaced by `<redacted>`
//! unless the caller asks for them. Pure.

use serde_json::{Map, Value};

use super::yaml::{Kind, Node, BINARY_TAG};

const SECRET_PATHS: &[&str] = &["k3os.token", "k3os.password", "passphrase"];
const REDACTED: &str = "<redacted>";

fn is_secret(path: &str) -> bool {
    SECRET_PATHS
        .iter()
        .any(|s| path == *s || path.ends_with(&format!(".{s}")))
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
    fn go(n: &Node, path: &str, redact: bool) -> Value {
        match &n.kind {
            Kind::Null => Value::Null,
            Kind::Scalar(_) if redact && is_secret(path) => Value::String(REDACTED.into()),
            Kind::Scalar(s) => Value::String(s.value.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(|i| go(i, path, redact)).collect()),
            Kind::Map(entries) => {
                let mut m = Map::new();
                for e in entries {
                    m.insert(e.key.clone(), go(&e.value, &child(path, &e.key), redact));
                }
                Value::Object(m)
            }
        }
    }
    go(node, "", redact)
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

fn scalar_text(n: &Node, path: &str, redact: bool) -> String {
    match &n.kind {
        Kind::Scalar(_) if redact && is_secret(path) => quote(REDACTED),
        Kind::Scalar(s) if s.tag.as_deref() == Some(BINARY_TAG) => {
            format!(
                "!!binary {}",
                quote(&s.value.split_whitespace().collect::<String>())
            )
        }
        Kind::Scalar(s) => quote(&s.value),
        Kind::Null => "null".into(),
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
                if is_leaf(&e.value) {
                    out.push_str(&format!(
                        "{pad}{}: {}{}\n",
                        plain_key(&e.key),
                        scalar_text(&e.value, &p, redact),
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
            for it in items {
                if is_leaf(it) {
                    out.push_str(&format!(
                        "{pad}- {}{}\n",
                        scalar_text(it, path, redact),
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
        _ => out.push_str(&format!(
            "{pad}{}{}\n",
            scalar_text(n, path, redact),
            origin(n)
        )),
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
