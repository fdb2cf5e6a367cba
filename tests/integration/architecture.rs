//! The code's shape matches `docs/ARCHITECTURE.md`: every module is in its layer table, no
//! module imports one of a higher (or another of the same) layer, only tests import
//! `testing`, `daemon.rs` stays the loop (≤ 450 lines), and no production function is over
//! 100 lines nor any file over 1,000 production lines. Reads the sources as text; inline
//! `#[cfg(test)] mod tests` blocks and comments are not production code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `module path → layer` from the table in docs/ARCHITECTURE.md.
fn layers() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(crate_dir().join("../docs/ARCHITECTURE.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let (Ok(layer), Some(module)) = (
            cells[1].parse::<u32>(),
            cells[2].strip_prefix('`').and_then(|m| m.strip_suffix('`')),
        ) else {
            continue;
        };
        out.insert(module.to_string(), layer);
    }
    assert!(
        out.len() > 20,
        "layer table not found in docs/ARCHITECTURE.md"
    );
    out
}

struct Source {
    /// `upgrade::install::http`, `daemon`, …
    module: String,
    path: PathBuf,
    /// Production lines: without the inline test module.
    production: Vec<String>,
}

fn sources() -> Vec<Source> {
    let root = crate_dir().join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            let end = lines
                .windows(2)
                .position(|w| w[0] == "#[cfg(test)]" && w[1].starts_with("mod "))
                .unwrap_or(lines.len());
            out.push(Source {
                module: parts.join("::"),
                path: p,
                production: lines[..end].to_vec(),
            });
        }
    }
    out
}

/// The table entry a module path belongs to: the longest listed prefix.
fn entry<'a>(table: &'a BTreeMap<String, u32>, module: &str) -> Option<(&'a str, u32)> {
    let mut best: Option<(&str, u32)> = None;
    for (name, layer) in table {
        let hit = module == name || module.starts_with(&format!("{name}::"));
        if hit && best.is_none_or(|(b, _)| name.len() > b.len()) {
            best = Some((name, *layer));
        }
    }
    best
}

/// `crate::a::b` paths named in code (not in comments).
fn imports(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_string());
        }
        // `use crate::{a, b}` lists
        if let Some(i) = code.find("crate::{") {
            let list = &code[i + "crate::{".len()..];
            for item in list.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn every_module_is_in_the_layer_table_and_imports_only_lower_layers() {
    let table = layers();
    let mut problems = Vec::new();
    for src in sources() {
        if matches!(src.module.as_str(), "lib" | "main") {
            continue;
        }
        let Some((own, own_layer)) = entry(&table, &src.module) else {
            // A parent that only declares its submodules (which are in the table) is no layer.
            let declarations_only = src.production.iter().all(|l| {
                let l = l.trim();
                l.is_empty() || l.starts_with("//") || l.starts_with("pub mod ")
            });
            if declarations_only {
                continue;
            }
            problems.push(format!(
                "{}: module {} is not in docs/ARCHITECTURE.md's layer table",
                src.path.display(),
                src.module
            ));
            continue;
        };
        for path in imports(&src.production) {
            if path.is_empty() {
                continue;
            }
            let Some((other, layer)) = entry(&table, &path) else {
                continue;
            };
            if other == own {
                continue;
            }
            if other == "testing" {
                problems.push(format!(
                    "{}: production code imports crate::testing",
                    src.path.display()
                ));
            } else if layer >= own_layer {
                problems.push(format!(
                    "{}: {own} (layer {own_layer}) imports crate::{path} ({other}, layer {layer})",
                    src.path.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Production functions over `max` lines, as `file:line name (n lines)` (rustfmt'd code: a
/// function ends at the first `}` at its own indentation).
fn long_functions(src: &Source, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let lines = &src.production;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let Some(fn_at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let before_ok = words[..fn_at].iter().all(|w| {
            matches!(*w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub(")
        });
        if !before_ok || trimmed.ends_with(';') || trimmed.starts_with("//") {
            continue;
        }
        let close = format!("{indent}}}");
        let Some(len) = lines[i..].iter().position(|l| *l == close) else {
            continue;
        };
        if len + 1 > max {
            let name = words.get(fn_at + 1).copied().unwrap_or("?");
            out.push(format!(
                "{}:{} {name} ({} lines)",
                src.path.display(),
                i + 1,
                len + 1
            ));
        }
    }
    out
}

#[test]
fn the_loop_stays_small_and_no_function_or_file_is_oversized() {
    let mut problems = Vec::new();
    for src in sources() {
        if src.production.len() > 1000 {
            problems.push(format!(
                "{}: {} production lines (max 1,000)",
                src.path.display(),
                src.production.len()
            ));
        }
        problems.extend(long_functions(&src, 100));
    }
    let daemon = crate_dir().join("src/daemon.rs");
    let n = std::fs::read_to_string(&daemon).unwrap().lines().count();
    if n > 450 {
        problems.push(format!(
            "{}: {n} lines (the loop: max 450)",
            daemon.display()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_disruption_hook_named_in_the_architecture_is_what_the_code_calls() {
    let doc = std::fs::read_to_string(crate_dir().join("../docs/ARCHITECTURE.md")).unwrap();
    assert!(doc.contains("`disruption::about_to_disrupt`"));
    let callers: Vec<String> = sources()
        .into_iter()
        .filter(|s| s.module != "disruption")
        .filter(|s| s.production.iter().any(|l| l.contains("about_to_disrupt(")))
        .map(|s| s.module)
        .collect();
    for expected in ["guarded_apply", "upgrade::actor"] {
        assert!(
            callers.iter().any(|c| c == expected),
            "{expected} must announce its disruptive actions; callers: {callers:?}"
        );
    }
}
