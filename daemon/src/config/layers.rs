//! Layers: reading the files of a config repo snapshot, canonicalising their keys, and merging
//! the ones that apply to a hostname.
//!
//! Order: `config.yaml` → every `groups/*.yaml` whose `match:` globs hit the hostname (file-name
//! order) → `nodes/<hostname>.yaml`. Merge rules: mappings merge key by key, scalars and lists
//! replace, `write_files` entries merge by `path` (the later layer wins), and an explicit `null`
//! removes the key inherited from earlier layers. Every node keeps its file and position, so the
//! merged tree still says where each value came from.
//!
//! Keys are canonicalised (k3os spellings → snake_case) and values coerced to their declared
//! shape (scalar → one-element list, `KEY=VALUE` list → mapping) *before* merging, so `runcmd` in
//! the base and `run_cmd` in a node layer are the same key.

use super::diag::Diagnostic;
use super::spec::{self, Field, Shape};
use super::yaml::{self, Entry, Kind, Node, Scalar};
use crate::glob::{self, Dialect};
use crate::snapshot::Snapshot;

/// One parsed, canonicalised layer file.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Path of the file in the snapshot (`config.yaml`, `groups/edge.yaml`, `nodes/edge-1.yaml`).
    pub file: String,
    /// Its canonical tree (keys canonicalised, values coerced; `match:` removed from groups); an
    /// empty file is an empty mapping.
    pub root: Node,
}

/// A `groups/*.yaml` layer and the hostname globs that select it.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's settings (without `match:`).
    pub layer: Layer,
    /// Hostname globs (`*`, `?`, `[a-z]`, `[!x]`).
    pub matches: Vec<String>,
}

/// The layers every node shares (`config.yaml` and the groups), parsed once. A node's own
/// file is parsed separately ([`parse_node`]) and handed to [`Repo::merged`], so checking many
/// nodes never holds more than one node file.
#[derive(Debug, Clone)]
pub struct Repo {
    /// `config.yaml`, when the snapshot has one that parsed.
    pub base: Option<Layer>,
    /// `groups/*.yaml` layers that parsed, in file-name order (the merge order).
    pub groups: Vec<Group>,
    /// Problems found while parsing the shared files (errors make them unusable).
    pub diagnostics: Vec<Diagnostic>,
}

impl Repo {
    /// Parses and canonicalises `config.yaml` and every `groups/*.yaml` of the snapshot;
    /// `nodes/` is not looked at. Pure.
    pub fn parse(snapshot: &Snapshot, strict: bool) -> Repo {
        let mut diags = Vec::new();
        let base = snapshot
            .get("config.yaml")
            .and_then(|b| parse_layer("config.yaml", b, strict, &mut diags));
        let mut groups = Vec::new();
        for (file, bytes) in snapshot.list("groups") {
            if !is_layer_file(file) {
                continue;
            }
            if let Some(mut layer) = parse_layer(file, bytes, strict, &mut diags) {
                let matches = take_match(&mut layer, &mut diags);
                groups.push(Group { layer, matches });
            }
        }
        if let Some(b) = &base {
            warn_match_outside_groups(b, &mut diags);
        }
        Repo {
            base,
            groups,
            diagnostics: diags,
        }
    }

    /// The layers that apply to `hostname`, in merge order: the base, the matching groups,
    /// then `node` (the node's own file, if any).
    pub fn layers_for<'a>(&'a self, hostname: &str, node: Option<&'a Layer>) -> Vec<&'a Layer> {
        let mut out = Vec::new();
        out.extend(self.base.iter());
        for g in &self.groups {
            if g.matches
                .iter()
                .any(|pat| glob::matches(Dialect::Shell, pat, hostname))
            {
                out.push(&g.layer);
            }
        }
        out.extend(node);
        out
    }

    /// Merges the layers for `hostname` (with its own file `node`) into one canonical tree.
    /// Pure.
    pub fn merged(&self, hostname: &str, node: Option<&Layer>) -> Node {
        merge_all(
            self.layers_for(hostname, node)
                .into_iter()
                .map(|l| l.root.clone()),
        )
    }

    /// [`Repo::merged`] without copying: consumes the layers. Returns the merged tree and the
    /// files merged, in order. Pure.
    pub fn into_merged(self, hostname: &str, node: Option<Layer>) -> (Node, Vec<String>) {
        let mut layers: Vec<Layer> = self.base.into_iter().collect();
        for g in self.groups {
            if g.matches
                .iter()
                .any(|pat| glob::matches(Dialect::Shell, pat, hostname))
            {
                layers.push(g.layer);
            }
        }
        layers.extend(node);
        let files = layers.iter().map(|l| l.file.clone()).collect();
        (merge_all(layers.into_iter().map(|l| l.root)), files)
    }
}

/// Merges layer trees in order, then drops the explicit nulls. Pure.
fn merge_all(roots: impl Iterator<Item = Node>) -> Node {
    let mut acc: Option<Node> = None;
    for root in roots {
        acc = Some(match acc {
            None => root,
            Some(base) => merge(base, root, ""),
        });
    }
    let mut node = acc.unwrap_or_else(|| Node {
        kind: Kind::Map(Vec::new()),
        pos: yaml::Pos {
            file: "config.yaml".into(),
            line: 1,
            col: 1,
        },
    });
    strip_nulls(&mut node);
    node
}

/// Parses a node's own file from `files` (its paths and contents: `nodes/<host>.yaml` and/or
/// `nodes/<host>.yml`). Exactly one may exist: two are an error naming both, and neither
/// file is used. Pure.
pub fn parse_node(
    files: &[(&str, &[u8])],
    strict: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<Layer> {
    match files {
        [] => None,
        [(file, bytes)] => {
            let layer = parse_layer(file, bytes, strict, diags)?;
            warn_match_outside_groups(&layer, diags);
            Some(layer)
        }
        [(first, _), rest @ ..] => {
            let others: Vec<&str> = rest.iter().map(|(f, _)| *f).collect();
            let names = format!("{first} and {}", others.join(" and "));
            for (file, _) in files {
                diags.push(Diagnostic::error(
                    yaml::Pos {
                        file: (*file).into(),
                        line: 1,
                        col: 1,
                    },
                    "",
                    format!(
                        "{names} both configure this node; keep exactly one of them (the \
                         .yaml and .yml spellings are not merged)"
                    ),
                ));
            }
            None
        }
    }
}

fn is_layer_file(file: &str) -> bool {
    crate::snapshot::is_layer_file(file)
}

/// Parses and canonicalises one layer file (pure): UTF-8 and YAML checks, keys canonicalised and
/// values coerced against [`spec::TOP`]. Problems go to `diags`; `None` when the file is unusable.
pub fn parse_layer(
    file: &str,
    bytes: &[u8],
    strict: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<Layer> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::error(
                yaml::Pos::of_offset(file, bytes, e.valid_up_to()),
                "",
                format!("file is not UTF-8 text (invalid byte at offset {}); use `encoding: base64` or `!!binary` for binary content", e.valid_up_to()),
            ));
            return None;
        }
    };
    let node = match yaml::parse(file, text) {
        Ok(n) => n,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let root = normalize(node, spec::TOP, "", strict, diags);
    let root = match root.kind {
        Kind::Null => Node {
            kind: Kind::Map(Vec::new()),
            pos: root.pos,
        },
        _ => root,
    };
    Some(Layer {
        file: file.to_string(),
        root,
    })
}

/// Removes `match:` from a group layer and returns its globs; an invalid glob (such as an
/// unclosed `[`) is an error at its position and is not used.
fn take_match(layer: &mut Layer, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    let mut out = Vec::new();
    let mut refused = false;
    if let Kind::Map(entries) = &mut layer.root.kind {
        if let Some(i) = entries.iter().position(|e| e.key == "match") {
            let e = entries.remove(i);
            if let Kind::Seq(items) = e.value.kind {
                for (i, it) in items.into_iter().enumerate() {
                    if let Kind::Scalar(s) = it.kind {
                        match glob::check_shell(&s.value) {
                            Ok(()) => out.push(s.value),
                            Err(reason) => {
                                refused = true;
                                diags.push(Diagnostic::error(
                                    it.pos,
                                    &format!("match[{i}]"),
                                    format!("invalid glob {:?}: {reason}", s.value),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    if out.is_empty() && !refused {
        diags.push(Diagnostic::warning(
            layer.root.pos.clone(),
            "match",
            "group has no `match:` globs, so it applies to no node",
        ));
    }
    out
}

fn warn_match_outside_groups(layer: &Layer, diags: &mut Vec<Diagnostic>) {
    if let Some(Entry { key_pos, .. }) = layer
        .root
        .as_map()
        .and_then(|m| m.iter().find(|e| e.key == "match"))
    {
        diags.push(Diagnostic::warning(
            key_pos.clone(),
            "match",
            "`match:` only has a meaning in groups/*.yaml; ignored here",
        ));
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn unknown_key(
    pos: yaml::Pos,
    path: &str,
    key: &str,
    fields: &[Field],
    strict: bool,
) -> Diagnostic {
    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
    let msg = format!("unknown key `{key}`; known keys here: {}", names.join(", "));
    let field = join(path, key);
    if strict {
        Diagnostic::error(pos, &field, msg)
    } else {
        Diagnostic::warning(pos, &field, format!("{msg} (ignored)"))
    }
}

/// Canonicalises the keys of an object node and coerces each value to its declared shape.
/// Unknown keys are dropped with a warning (an error when `strict`). Pure.
pub fn normalize(
    node: Node,
    fields: &'static [Field],
    path: &str,
    strict: bool,
    diags: &mut Vec<Diagnostic>,
) -> Node {
    let pos = node.pos.clone();
    let entries = match node.kind {
        Kind::Null => {
            return Node {
                kind: Kind::Null,
                pos,
            }
        }
        Kind::Map(e) => e,
        _ => {
            let what = node_kind_name(&node.kind);
            diags.push(Diagnostic::error(
                pos.clone(),
                path,
                format!("expected a mapping of keys, found {what}"),
            ));
            return Node {
                kind: Kind::Map(Vec::new()),
                pos,
            };
        }
    };
    let mut out: Vec<Entry> = Vec::new();
    for e in entries {
        let Some(field) = spec::lookup(fields, &e.key) else {
            diags.push(unknown_key(e.key_pos.clone(), path, &e.key, fields, strict));
            continue;
        };
        let fpath = join(path, field.name);
        if let Some(prev) = out.iter().find(|p| p.key == field.name) {
            diags.push(Diagnostic::error(
                e.key_pos.clone(),
                &fpath,
                format!(
                    "`{}` sets the same key as line {}; write it once",
                    e.key, prev.key_pos.line
                ),
            ));
            continue;
        }
        if let Some(value) = coerce(e.value, field.shape, &fpath, strict, diags) {
            out.push(Entry {
                key: field.name.to_string(),
                key_pos: e.key_pos,
                value,
            });
        }
    }
    Node {
        kind: Kind::Map(out),
        pos,
    }
}

fn node_kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Null => "null",
        Kind::Scalar(_) => "a scalar",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}

fn coerce(
    value: Node,
    shape: Shape,
    path: &str,
    strict: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<Node> {
    let pos = value.pos.clone();
    if value.kind == Kind::Null {
        return Some(value);
    }
    let scalar_only = |value: Node, what: &str, diags: &mut Vec<Diagnostic>| -> Option<Node> {
        match value.kind {
            Kind::Scalar(_) => Some(value),
            ref k => {
                diags.push(Diagnostic::error(
                    value.pos.clone(),
                    path,
                    format!("expected {what}, found {}", node_kind_name(k)),
                ));
                None
            }
        }
    };
    match shape {
        Shape::Any => Some(value),
        Shape::Str | Shape::Secret | Shape::Content => scalar_only(value, "a string", diags),
        Shape::Int => scalar_only(value, "an integer", diags),
        Shape::Duration => {
            scalar_only(value, "a duration (seconds, or like 90s, 5m, 1h30m)", diags)
        }
        Shape::Permissions => scalar_only(value, "an octal mode such as '0644'", diags),
        Shape::Enum(words) => scalar_only(value, &format!("one of: {}", quote_words(words)), diags),
        Shape::StrList => match value.kind {
            Kind::Scalar(_) => Some(Node {
                kind: Kind::Seq(vec![value]),
                pos,
            }),
            Kind::Seq(items) => {
                let mut out = Vec::new();
                for (i, it) in items.into_iter().enumerate() {
                    match it.kind {
                        Kind::Scalar(_) => out.push(it),
                        ref k => diags.push(Diagnostic::error(
                            it.pos.clone(),
                            &format!("{path}[{i}]"),
                            format!("expected a string, found {}", node_kind_name(k)),
                        )),
                    }
                }
                Some(Node {
                    kind: Kind::Seq(out),
                    pos,
                })
            }
            ref k => {
                diags.push(Diagnostic::error(
                    pos.clone(),
                    path,
                    format!(
                        "expected a list of strings (or one string), found {}",
                        node_kind_name(k)
                    ),
                ));
                None
            }
        },
        Shape::StrMap => coerce_map(value, path, diags),
        Shape::Object(fields) => Some(normalize(value, fields, path, strict, diags)),
        Shape::ObjList(fields) => {
            let items = match value.kind {
                Kind::Seq(items) => items,
                Kind::Map(_) => vec![value],
                ref k => {
                    diags.push(Diagnostic::error(
                        pos.clone(),
                        path,
                        format!("expected a list of mappings, found {}", node_kind_name(k)),
                    ));
                    return None;
                }
            };
            let out = items
                .into_iter()
                .enumerate()
                .map(|(i, it)| normalize(it, fields, &format!("{path}[{i}]"), strict, diags))
                .collect();
            Some(Node {
                kind: Kind::Seq(out),
                pos,
            })
        }
    }
}

fn quote_words(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `KEY: VALUE` mapping, `[KEY=VALUE, …]` list or one `KEY=VALUE` string → mapping of scalars.
fn coerce_map(value: Node, path: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    let pos = value.pos.clone();
    let pair = |it: Node, diags: &mut Vec<Diagnostic>| -> Option<Entry> {
        match &it.kind {
            Kind::Scalar(s) => match s.value.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Some(Entry {
                    key: k.trim().to_string(),
                    key_pos: it.pos.clone(),
                    value: Node {
                        kind: Kind::Scalar(Scalar {
                            value: v.to_string(),
                            plain: false,
                            tag: None,
                            layout: yaml::Layout::Unknown,
                        }),
                        pos: it.pos.clone(),
                    },
                }),
                _ => {
                    diags.push(Diagnostic::error(
                        it.pos.clone(),
                        path,
                        format!("expected KEY=VALUE, found {:?}", s.value),
                    ));
                    None
                }
            },
            k => {
                diags.push(Diagnostic::error(
                    it.pos.clone(),
                    path,
                    format!("expected KEY=VALUE, found {}", node_kind_name(k)),
                ));
                None
            }
        }
    };
    let entries = match value.kind {
        Kind::Map(entries) => {
            let mut out = Vec::new();
            for e in entries {
                match e.value.kind {
                    Kind::Scalar(_) | Kind::Null => out.push(e),
                    ref k => diags.push(Diagnostic::error(
                        e.value.pos.clone(),
                        &join(path, &e.key),
                        format!("expected a scalar value, found {}", node_kind_name(k)),
                    )),
                }
            }
            out
        }
        Kind::Seq(items) => {
            let mut out: Vec<Entry> = Vec::new();
            for it in items {
                if let Some(e) = pair(it, diags) {
                    if out.iter().any(|o| o.key == e.key) {
                        diags.push(Diagnostic::error(
                            e.key_pos.clone(),
                            &join(path, &e.key),
                            "key given twice",
                        ));
                        continue;
                    }
                    out.push(e);
                }
            }
            out
        }
        Kind::Scalar(_) => pair(value, diags).into_iter().collect(),
        Kind::Null => Vec::new(),
    };
    Some(Node {
        kind: Kind::Map(entries),
        pos,
    })
}

/// Merges `over` onto `base` by the layer rules. Pure.
pub fn merge(base: Node, over: Node, path: &str) -> Node {
    match (base.kind, over.kind) {
        (Kind::Map(mut b), Kind::Map(o)) => {
            for e in o {
                match b.iter().position(|x| x.key == e.key) {
                    Some(i) if e.value.kind == Kind::Null => {
                        // explicit null: remove; keep a Null marker so later layers see nothing.
                        b[i].value = e.value;
                    }
                    Some(i) => {
                        let fpath = join(path, &e.key);
                        let old = std::mem::replace(
                            &mut b[i].value,
                            Node {
                                kind: Kind::Null,
                                pos: e.value.pos.clone(),
                            },
                        );
                        b[i].value = if fpath == "write_files" {
                            merge_write_files(old, e.value)
                        } else {
                            merge(old, e.value, &fpath)
                        };
                        b[i].key_pos = e.key_pos;
                    }
                    None => b.push(e),
                }
            }
            Node {
                kind: Kind::Map(b),
                pos: base.pos,
            }
        }
        (_, kind) => Node {
            kind,
            pos: over.pos,
        },
    }
}

fn entry_path(n: &Node) -> Option<String> {
    match &n.get("path")?.kind {
        Kind::Scalar(s) => Some(s.value.trim().to_string()),
        _ => None,
    }
}

fn merge_write_files(base: Node, over: Node) -> Node {
    match (base.kind, over.kind) {
        (Kind::Seq(mut b), Kind::Seq(o)) => {
            for item in o {
                let p = entry_path(&item);
                match b.iter().position(|x| p.is_some() && entry_path(x) == p) {
                    Some(i) => b[i] = item,
                    None => b.push(item),
                }
            }
            Node {
                kind: Kind::Seq(b),
                pos: over.pos,
            }
        }
        (_, kind) => Node {
            kind,
            pos: over.pos,
        },
    }
}

fn strip_nulls(node: &mut Node) {
    match &mut node.kind {
        Kind::Map(entries) => {
            entries.retain(|e| e.value.kind != Kind::Null);
            for e in entries {
                strip_nulls(&mut e.value);
            }
        }
        Kind::Seq(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
