//! A YAML document as a tree of spanned nodes.
//!
//! Built from serde-saphyr's parser events (`serde_saphyr::granit_parser`) rather than through
//! serde, because the config model needs what serde hides: the line and column of every value,
//! the raw text of scalars (`permissions: 0644` means the octal digits the user wrote), the
//! `!!binary` tag, and duplicate keys (rejected here, before any merging).
//!
//! Invariants: every [`Node`] carries the file and position it came from; mapping keys are
//! unique within a mapping; alias expansion is bounded, so a "billion laughs" document is refused.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};
use std::sync::Arc;

use super::diag::Diagnostic;
use super::model::Origin;

/// The YAML tag of `!!binary` scalars.
pub const BINARY_TAG: &str = "tag:yaml.org,2002:binary";

/// Most nodes one document may expand to (counting alias expansions).
const MAX_NODES: usize = 1_000_000;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// Position of a node: shared file name plus 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn origin(&self) -> Origin {
        Origin {
            file: self.file.to_string(),
            line: self.line,
            col: self.col,
        }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The value after YAML escape processing.
    pub value: String,
    /// True for plain (unquoted) scalars, which YAML may resolve as null, bool or number.
    pub plain: bool,
    /// Resolved tag, e.g. `tag:yaml.org,2002:binary`.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `~`, `null`, `Null`, `NULL` or nothing at all.
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Scalar(_) => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }
}

fn is_null_plain(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// Parses one YAML document. An empty file is an empty mapping.
/// Multiple documents in one file are refused: a layer is one document.
pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
    let file: Arc<str> = Arc::from(file);
    let mut b = Builder {
        file: file.clone(),
        anchors: Vec::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        documents: 0,
    };
    for ev in Parser::new_from_str(text) {
        let (event, span) = ev.map_err(|e| {
            let m = e.marker();
            Diagnostic::error(
                Pos {
                    file: file.clone(),
                    line: m.line(),
                    col: m.col() + 1,
                },
                "",
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        b.event(event, span)?;
    }
    Ok(b.root.unwrap_or(Node {
        kind: Kind::Map(Vec::new()),
        pos: Pos {
            file,
            line: 1,
            col: 1,
        },
    }))
}

enum Frame {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        pending_key: Option<(String, Pos)>,
    },
}

struct Builder {
    file: Arc<str>,
    anchors: Vec<(usize, Node)>,
    stack: Vec<Frame>,
    root: Option<Node>,
    nodes: usize,
    documents: usize,
}

fn count(node: &Node) -> usize {
    match &node.kind {
        Kind::Seq(v) => 1 + v.iter().map(count).sum::<usize>(),
        Kind::Map(m) => 1 + m.iter().map(|e| count(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    /// A node starts at its tag when it has one (`!!binary …`), else at its content.
    fn pos(&self, span: &Span) -> Pos {
        let m = span.tag_start.unwrap_or(span.start);
        Pos {
            file: self.file.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Diagnostic> {
        let pos = self.pos(&span);
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        pos,
                        "",
                        "a layer file holds one YAML document; found a second (`---`)",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let tag = tag.map(|t| format!("{}{}", t.handle(), t.suffix()));
                let plain = matches!(style, ScalarStyle::Plain);
                let explicit_null = tag.as_deref() == Some("tag:yaml.org,2002:null");
                let kind = if explicit_null || (plain && tag.is_none() && is_null_plain(&value)) {
                    Kind::Null
                } else {
                    Kind::Scalar(Scalar {
                        value: value.into_owned(),
                        plain,
                        tag,
                    })
                };
                self.push(Node { kind, pos }, anchor)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                self.depth_check(&pos)?;
                self.stack.push(Frame::Seq {
                    node: Node {
                        kind: Kind::Seq(Vec::new()),
                        pos,
                    },
                    anchor,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                self.depth_check(&pos)?;
                self.stack.push(Frame::Map {
                    node: Node {
                        kind: Kind::Map(Vec::new()),
                        pos,
                    },
                    anchor,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { node, anchor }) => (node, anchor),
                    Some(Frame::Map { node, anchor, .. }) => (node, anchor),
                    None => return Ok(()),
                };
                self.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some((_, target)) = self.anchors.iter().rev().find(|(a, _)| *a == id) else {
                    return Err(Diagnostic::error(
                        pos,
                        "",
                        "alias refers to an unknown anchor",
                    ));
                };
                let mut node = target.clone();
                self.nodes += count(&node);
                if self.nodes > MAX_NODES {
                    return Err(Diagnostic::error(
                        pos,
                        "",
                        format!("document expands to more than {MAX_NODES} nodes through aliases; refusing it"),
                    ));
                }
                node.pos = pos;
                self.push(node, 0)?;
            }
            Event::UnresolvedAlias(name) => {
                return Err(Diagnostic::error(
                    pos,
                    "",
                    format!("alias *{name} has no anchor before it"),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn depth_check(&self, pos: &Pos) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error(
                pos.clone(),
                "",
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        self.nodes += 1;
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { node: seq, .. }) => {
                if let Kind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: map,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match node.kind {
                        Kind::Scalar(s) => s.value,
                        Kind::Null => String::new(),
                        _ => {
                            return Err(Diagnostic::error(
                                node.pos,
                                "",
                                "mapping keys must be plain strings, not lists or mappings",
                            ))
                        }
                    };
                    if let Kind::Map(entries) = &map.kind {
                        if let Some(prev) = entries.iter().find(|e| e.key == key) {
                            return Err(Diagnostic::error(
                                node.pos,
                                &key,
                                format!(
                                    "duplicate key (first defined at line {}); each key may appear once",
                                    prev.key_pos.line
                                ),
                            ));
                        }
                    }
                    *pending_key = Some((key, node.pos));
                }
                Some((key, key_pos)) => {
                    if let Kind::Map(entries) = &mut map.kind {
                        entries.push(Entry {
                            key,
                            key_pos,
                            value: node,
                        });
                    }
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("f.yaml", "a: 1\nb:\n  - x\n").unwrap();
        let b = n.get("b").unwrap();
        assert_eq!((b.pos.line, b.pos.col), (3, 3));
        let a = n.get("a").unwrap();
        assert_eq!((a.pos.line, a.pos.col), (1, 4));
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_lines() {
        let e = parse("f.yaml", "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos.line, 3);
        assert!(e.message.contains("line 1"), "{e}");
    }

    #[test]
    fn null_spellings_and_quoted_null() {
        let n = parse("f.yaml", "a: ~\nb:\nc: 'null'\nd: null\n").unwrap();
        assert_eq!(n.get("a").unwrap().kind, Kind::Null);
        assert_eq!(n.get("b").unwrap().kind, Kind::Null);
        assert!(matches!(n.get("c").unwrap().kind, Kind::Scalar(_)));
        assert_eq!(n.get("d").unwrap().kind, Kind::Null);
    }

    #[test]
    fn binary_tag_is_kept() {
        let n = parse("f.yaml", "c: !!binary aGk=\n").unwrap();
        match &n.get("c").unwrap().kind {
            Kind::Scalar(s) => assert_eq!(s.tag.as_deref(), Some(BINARY_TAG)),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let n = parse("f.yaml", "a: &x [1, 2]\nb: *x\n").unwrap();
        assert_eq!(n.get("b").unwrap().as_map(), None);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let e = parse("f.yaml", &bomb).unwrap_err();
        assert!(e.message.contains("aliases"), "{e}");
    }

    #[test]
    fn second_document_is_refused() {
        assert!(parse("f.yaml", "a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("f.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1);
        assert!(e.message.starts_with("invalid YAML"));
    }
}
