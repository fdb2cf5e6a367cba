//! Reading values out of the spanned YAML tree: scalars, lists and mappings of scalars, each
//! with the position a diagnostic should point at. Pure; never records a diagnostic (a value of
//! the wrong shape reads as absent, the layer parser has already reported it).

use crate::config::yaml::{Kind, Node, Pos, Scalar};

/// The scalar of `n`, if it is one.
pub(super) fn scalar(n: &Node) -> Option<&Scalar> {
    match &n.kind {
        Kind::Scalar(s) => Some(s),
        _ => None,
    }
}

/// The text of a scalar node.
pub(super) fn text(n: &Node) -> Option<String> {
    scalar(n).map(|s| s.value.clone())
}

/// A list of scalars as (value, position of the value); anything else reads as empty.
pub(super) fn list(n: Option<&Node>) -> Vec<(String, Pos)> {
    match n.map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items
            .iter()
            .filter_map(|it| text(it).map(|t| (t, it.pos.clone())))
            .collect(),
        _ => Vec::new(),
    }
}

/// A mapping of scalars as (key, value, position of the key, position of the value).
pub(super) fn map(n: Option<&Node>) -> Vec<(String, String, Pos, Pos)> {
    match n.map(|n| &n.kind) {
        Some(Kind::Map(entries)) => entries
            .iter()
            .filter_map(|e| {
                text(&e.value).map(|t| (e.key.clone(), t, e.key_pos.clone(), e.value.pos.clone()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Position of `key` itself within a mapping node.
pub(super) fn key_pos<'a>(n: &'a Node, key: &str) -> Option<&'a Pos> {
    n.as_map()?
        .iter()
        .find(|e| e.key == key)
        .map(|e| &e.key_pos)
}

/// The field name of `b` inside `a`: `a.b`.
pub(super) fn join(a: &str, b: &str) -> String {
    format!("{a}.{b}")
}

/// A scalar read as a non-negative integer; the error text names the value.
pub(super) fn parse_uint(n: &Node) -> Result<u64, String> {
    let t = text(n).unwrap_or_default();
    t.trim()
        .parse::<u64>()
        .map_err(|_| format!("{t:?} is not a non-negative integer"))
}
