//! A YAML document as a tree of spanned nodes.
//!
//! Built from serde-saphyr's parser events (`serde_saphyr::granit_parser`) rather than through
//! serde, because the config model needs what serde hides: the line and column of every value
//! (and of every character of a one-line scalar or a literal block, [`Layout`]),
//! the raw text of scalars (`permissions: 0644` means the octal digits the user wrote), the
//! `!!binary` tag, and duplicate keys (rejected here, before any merging).
//!
//! Invariants: every [`Node`] carries the file and position it came from; mapping keys are
//! unique within a mapping; the tree's size is bounded while it is built: every node, string and
//! alias copy is charged against [`MAX_EXPANDED_BYTES`] *before* it is allocated, so a "billion
//! laughs" alias bomb, a large scalar aliased many times, or a file of millions of tiny values is
//! refused with little memory spent (the refusal costs at most the budget, never the expansion).

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use super::diag::Diagnostic;
use super::model::Origin;

/// The YAML tag of `!!binary` scalars.
pub const BINARY_TAG: &str = "tag:yaml.org,2002:binary";

/// Largest estimated in-memory size of one document's tree, counting every node (its struct, as
/// `NODE_COST`), every string byte, every alias expansion and the copy kept per anchor.
/// Twice the largest config file ([`MAX_CONFIG_FILE`](crate::snapshot::MAX_CONFIG_FILE)): any
/// real file fits with its per-node overhead, while the tree plus the text stays well below the
/// 64 MiB a refused document may cost the process (the daemon's unit allows 256 MiB in all).
pub const MAX_EXPANDED_BYTES: usize = 32 << 20;
/// Charged per node: the size of a mapping entry (key, positions and value), the largest
/// place a node is stored, plus an allocator's per-allocation overhead for its strings and a
/// key's slot in its mapping's duplicate index.
const NODE_COST: usize = std::mem::size_of::<Entry>() + 32;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// Position of a node: shared file name plus 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// The layer file, shared by every node of the document.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl Pos {
    /// The position (1-based line, column in characters) of byte `offset` of `bytes`, whose
    /// first `offset` bytes are UTF-8 (e.g. the valid prefix before an invalid byte). Pure.
    pub fn of_offset(file: &str, bytes: &[u8], offset: usize) -> Pos {
        let before = std::str::from_utf8(&bytes[..offset.min(bytes.len())]).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            file: file.into(),
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
        }
    }

    /// The same position as an owned [`Origin`], for the typed config and messages.
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

/// A scalar value with what YAML resolution needs (raw text, style, tag).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The value after YAML escape processing.
    pub value: String,
    /// True for plain (unquoted) scalars, which YAML may resolve as null, bool or number.
    pub plain: bool,
    /// Resolved tag, e.g. `tag:yaml.org,2002:binary`.
    pub tag: Option<String>,
    /// Where the value's characters are in the file ([`Scalar::locate`]).
    pub layout: Layout,
}

/// Where a scalar's characters sit in its file, so a message can point inside a value (the
/// bad character of a base64 blob). Known exactly for the two forms whose characters map one
/// to one onto the source: a one-line scalar without escapes, and a literal block (`|`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One line: the value's character `i` is at `line`, column `col + i` (1-based).
    Inline {
        /// File line of the value.
        line: u32,
        /// File column of its first character.
        col: u32,
    },
    /// A literal block: the value's line `k` is file line `line + k`, its character `i` at
    /// column `col + i` (1-based; `col` is the block's indentation plus one).
    Block {
        /// File line of the block's first line.
        line: u32,
        /// Indentation plus one.
        col: u32,
    },
    /// Folded blocks, multi-line flow scalars, escapes, values made by the merge: no exact map.
    Unknown,
}

impl Layout {
    /// The layout of a scalar event: `value` as parsed, `style`, and its span (a block
    /// scalar's span starts at its first content character, a quoted one's at the quote).
    fn of(value: &str, style: ScalarStyle, span: &Span) -> Layout {
        let (start, end) = (span.start, span.end);
        let (Ok(line), Ok(col)) = (u32::try_from(start.line()), u32::try_from(start.col())) else {
            return Layout::Unknown;
        };
        let chars = value.chars().count();
        match style {
            ScalarStyle::Literal => {
                let lead = value.bytes().take_while(|b| *b == b'\n').count() as u32;
                match line.checked_sub(lead) {
                    Some(first) => Layout::Block {
                        line: first,
                        col: col + 1,
                    },
                    None => Layout::Unknown,
                }
            }
            ScalarStyle::Folded => Layout::Unknown,
            _ if start.line() != end.line() || value.contains('\n') => Layout::Unknown,
            ScalarStyle::Plain if end.col() - start.col() == chars => {
                Layout::Inline { line, col: col + 1 }
            }
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted
                if end.col() - start.col() == chars + 2 =>
            {
                Layout::Inline { line, col: col + 2 }
            }
            _ => Layout::Unknown,
        }
    }
}

impl Scalar {
    /// The file line and column (1-based) of the value's character number `index` (counted
    /// in characters), when [`Scalar::layout`] knows it.
    pub fn locate(&self, index: usize) -> Option<(usize, usize)> {
        let before: String = self.value.chars().take(index).collect();
        let k = before.matches('\n').count();
        let i = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count();
        match self.layout {
            Layout::Inline { line, col } if k == 0 => Some((line as usize, col as usize + i)),
            Layout::Block { line, col } => Some((line as usize + k, col as usize + i)),
            _ => None,
        }
    }
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key's text (keys are scalars; canonicalisation happens later, in `layers`).
    pub key: String,
    /// Where the key is, for messages about the key itself (unknown, duplicate).
    pub key_pos: Pos,
    /// The value.
    pub value: Node,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `~`, `null`, `Null`, `NULL` or nothing at all.
    Null,
    /// A string, number or bool, unresolved: its text plus whether it was plain.
    Scalar(Scalar),
    /// A sequence, in order.
    Seq(Vec<Node>),
    /// A mapping, in document order, keys unique.
    Map(Vec<Entry>),
}

/// A value of the document with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What it holds.
    pub kind: Kind,
    /// Where it starts in the file.
    pub pos: Pos,
}

impl Node {
    /// What the node is, for messages: `null`, `a scalar`, `a list`, `a mapping`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Scalar(_) => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The entries when the node is a mapping.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of `key` when the node is a mapping that has it (exact key text).
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
        expanded: 0,
        kept: 0,
        documents: 0,
        key_hasher: RandomState::new(),
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

/// A collection being built; `start` is [`Builder::expanded`] when it opened, so its own
/// expanded size is known in O(1) when it closes.
enum Frame {
    Seq {
        node: Node,
        anchor: usize,
        start: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        start: usize,
        pending_key: Option<(String, Pos)>,
        /// Hashes of the keys so far: a duplicate check costs O(1), not a scan of every
        /// earlier key (a scan made a 60,000-key mapping take minutes to parse).
        key_hashes: HashSet<u64>,
    },
}

/// An anchored node, kept to copy at each alias, with its expanded size.
struct Anchor {
    id: usize,
    node: Node,
    size: usize,
}

struct Builder {
    file: Arc<str>,
    anchors: Vec<Anchor>,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Estimated bytes of the tree built so far (see [`MAX_EXPANDED_BYTES`]).
    expanded: usize,
    /// Estimated bytes of the copies kept in `anchors`; counted apart from `expanded` so a
    /// node's size (and so each alias's cost) is its own tree, not the copies kept inside it.
    kept: usize,
    documents: usize,
    /// Randomly keyed, so a crafted document cannot make its keys' hashes collide.
    key_hasher: RandomState,
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
                let size = NODE_COST + value.len() + tag.as_ref().map_or(0, String::len);
                self.charge(size, &pos)?;
                let plain = matches!(style, ScalarStyle::Plain);
                let explicit_null = tag.as_deref() == Some("tag:yaml.org,2002:null");
                let kind = if explicit_null || (plain && tag.is_none() && is_null_plain(&value)) {
                    Kind::Null
                } else {
                    Kind::Scalar(Scalar {
                        layout: Layout::of(&value, style, &span),
                        value: value.into_owned(),
                        plain,
                        tag,
                    })
                };
                self.push(Node { kind, pos }, anchor, size)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                self.depth_check(&pos)?;
                self.charge(NODE_COST, &pos)?;
                self.stack.push(Frame::Seq {
                    node: Node {
                        kind: Kind::Seq(Vec::new()),
                        pos,
                    },
                    anchor,
                    start: self.expanded - NODE_COST,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                self.depth_check(&pos)?;
                self.charge(NODE_COST, &pos)?;
                self.stack.push(Frame::Map {
                    node: Node {
                        kind: Kind::Map(Vec::new()),
                        pos,
                    },
                    anchor,
                    start: self.expanded - NODE_COST,
                    pending_key: None,
                    key_hashes: HashSet::new(),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, start) = match self.stack.pop() {
                    Some(Frame::Seq {
                        node,
                        anchor,
                        start,
                    }) => (node, anchor, start),
                    Some(Frame::Map {
                        node,
                        anchor,
                        start,
                        ..
                    }) => (node, anchor, start),
                    None => return Ok(()),
                };
                let size = self.expanded - start;
                self.push(node, anchor, size)?;
            }
            Event::Alias(id) => self.alias(id, pos)?,
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

    /// Attaches a copy of the node anchored as `id`, charged before it is made: a refused
    /// expansion is never allocated.
    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), Diagnostic> {
        let Some(i) = self.anchors.iter().rposition(|a| a.id == id) else {
            return Err(Diagnostic::error(
                pos,
                "",
                "alias refers to an unknown anchor",
            ));
        };
        let size = self.anchors[i].size;
        self.charge(size, &pos)?;
        let mut node = self.anchors[i].node.clone();
        node.pos = pos;
        self.push(node, 0, size)
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

    /// Adds `bytes` to the document's expanded size; refuses the document (at `pos`, where the
    /// budget ran out) when that passes [`MAX_EXPANDED_BYTES`].
    fn charge(&mut self, bytes: usize, pos: &Pos) -> Result<(), Diagnostic> {
        self.expanded = self.expanded.saturating_add(bytes);
        self.check_budget(pos)
    }

    fn check_budget(&self, pos: &Pos) -> Result<(), Diagnostic> {
        if self.expanded.saturating_add(self.kept) > MAX_EXPANDED_BYTES {
            return Err(Diagnostic::error(
                pos.clone(),
                "",
                format!(
                    "document expands to more than {} MiB in memory (through aliases or a great many values); refusing it",
                    MAX_EXPANDED_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    /// Attaches a finished node (whose expanded size is `size`) to its parent; an anchored
    /// node's kept copy is charged too.
    fn push(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            self.kept = self.kept.saturating_add(size);
            self.check_budget(&node.pos)?;
            self.anchors.push(Anchor {
                id: anchor,
                node: node.clone(),
                size,
            });
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
                key_hashes,
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
                    let first = key_hashes.insert(self.key_hasher.hash_one(&key));
                    if let (false, Kind::Map(entries)) = (first, &map.kind) {
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
    fn duplicate_keys_are_found_among_many() {
        let mut text: String = (0..5000).map(|i| format!("k{i}: v\n")).collect();
        text.push_str("k1234: again\n");
        let e = parse("f.yaml", &text).unwrap_err();
        assert_eq!((e.pos.line, e.field.as_str()), (5001, "k1234"), "{e}");
        assert!(e.message.contains("line 1235"), "{e}");
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
    fn expansion_is_charged_before_it_is_built() {
        // One 1 MiB scalar aliased 40 times: few nodes, but 40 MiB of copies.
        let big = format!(
            "a: &a \"{}\"\nb: [{}]\n",
            "x".repeat(1 << 20),
            vec!["*a"; 40].join(", ")
        );
        let e = parse("f.yaml", &big).unwrap_err();
        assert!(e.message.contains("expands to more than 32 MiB"), "{e}");
        assert_eq!(e.pos.line, 2, "{e}");
        // A scalar nearly as large as a config file may be (16 MiB) is not an expansion.
        let large = format!("a: \"{}\"\n", "x".repeat((16 << 20) - 16));
        assert!(parse("f.yaml", &large).is_ok());
        // Nor is the same scalar once anchored and used again.
        let twice = format!("a: &a \"{}\"\nb: *a\n", "x".repeat(8 << 20));
        assert!(parse("f.yaml", &twice).is_ok());
    }

    /// Every character of one-line scalars and literal blocks is located in the file;
    /// forms whose characters do not map one to one are not guessed.
    #[test]
    fn scalar_characters_are_located_in_the_file() {
        let text = "a: plain x\nb: 'quoted'\nc: \"esc\\taped\"\nd: !!binary |\n\n    QUJD\n     REVG\ne: >\n  f\n  g\nf: two\n  lines\n";
        let n = parse("f.yaml", text).unwrap();
        let at = |key: &str, i: usize| match &n.get(key).unwrap().kind {
            Kind::Scalar(s) => s.locate(i),
            k => panic!("{k:?}"),
        };
        assert_eq!(at("a", 0), Some((1, 4)));
        assert_eq!(at("a", 6), Some((1, 10)));
        assert_eq!(at("b", 2), Some((2, 7)));
        assert_eq!(at("c", 0), None, "escapes shift columns");
        // "\nQUJD\n REVG\n": line 0 is the blank line 5, `Q` is at 6:5, `R` at 7:6.
        assert_eq!(at("d", 1), Some((6, 5)));
        assert_eq!(at("d", 7), Some((7, 6)));
        assert_eq!(at("e", 0), None, "folded");
        assert_eq!(at("f", 0), None, "multi-line plain");
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
