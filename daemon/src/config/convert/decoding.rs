//! The content of a `write_files` entry: its `encoding` (base64, gzip, both, or a `!!binary`
//! scalar) and the decoding itself, capped at [`ConvertOptions::max_file_size`] so a gzip bomb is
//! refused while it is read, before anything could be written. A gzip stream is read member by
//! member as k3os's Go reader read it (every member, concatenated); trailing bytes that do not
//! start another member are an error.
//!
//! [`ConvertOptions::max_file_size`]: super::ConvertOptions::max_file_size

use std::io::Read;

use base64::Engine;

use super::tree::{join, scalar, text};
use super::{Cx, Reported};
use crate::config::model::Encoding;
use crate::config::yaml::{Node, Pos, Scalar, BINARY_TAG};

/// The decoded content of one entry.
pub(super) struct Content {
    pub(super) bytes: Vec<u8>,
    pub(super) encoding: Encoding,
    /// Where content problems are reported: the `content` value, else the entry.
    pub(super) pos: Pos,
}

/// The layers an `encoding` value names, outermost (base64) first.
struct Layers {
    base64: bool,
    gzip: bool,
}

/// Decodes the `content` of entry `item` (field name `field`) as its `encoding` says. Every
/// failure is reported at the content (or encoding) and stops the entry. The size cap is
/// enforced inside gunzip only; the caller checks the decoded size against the limit.
pub(super) fn decode_content(cx: &mut Cx, item: &Node, field: &str) -> Result<Content, Reported> {
    let encoding_text = item.get("encoding").and_then(text).unwrap_or_default();
    let layers = layers(cx, item, field, &encoding_text)?;
    let cnode = item.get("content");
    let (mut bytes, binary) = raw_content(cx, cnode, field)?;
    let pos = cnode.map(|n| n.pos.clone()).unwrap_or(item.pos.clone());
    let content_field = join(field, "content");
    if layers.base64 {
        // The text is the scalar itself unless it was `!!binary` (then it is decoded bytes).
        let text = cnode.and_then(scalar).filter(|_| !binary);
        let decoded = match std::str::from_utf8(&bytes) {
            Ok(t) => decode_b64(t).map_err(|e| base64_problem(t, text, e)),
            Err(_) => Err("the !!binary bytes are not base64 text".to_string()),
        };
        match decoded {
            Ok(b) => bytes = b,
            Err(e) => {
                let msg = format!("invalid base64 (encoding {encoding_text:?}): {e}");
                cx.err(&pos, &content_field, msg);
                return Err(Reported);
            }
        }
    }
    if layers.gzip {
        match gunzip(&bytes, cx.opts.max_file_size) {
            Ok(b) => bytes = b,
            Err(e) => {
                let msg = format!("invalid gzip (encoding {encoding_text:?}): {e}");
                cx.err(&pos, &content_field, msg);
                return Err(Reported);
            }
        }
    }
    let encoding = match (binary, layers.base64, layers.gzip) {
        (true, _, _) => Encoding::YamlBinary,
        (false, true, true) => Encoding::GzipBase64,
        (false, true, false) => Encoding::Base64,
        (false, false, true) => Encoding::Gzip,
        (false, false, false) => Encoding::Plain,
    };
    Ok(Content {
        bytes,
        encoding,
        pos,
    })
}

/// The layers named by `encoding_text` (case-insensitive, k3os's spellings).
fn layers(cx: &mut Cx, item: &Node, field: &str, encoding_text: &str) -> Result<Layers, Reported> {
    let (base64, gzip) = match encoding_text.trim().to_ascii_lowercase().as_str() {
        "" => (false, false),
        "b64" | "base64" => (true, false),
        "gz" | "gzip" => (false, true),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => (true, true),
        other => {
            let pos = &item.get("encoding").unwrap_or(item).pos;
            cx.err(pos, &join(field, "encoding"), format!("unsupported encoding {other:?}; expected one of \"\", b64, base64, gz, gzip, gz+base64, gzip+base64, gz+b64, gzip+b64"));
            return Err(Reported);
        }
    };
    Ok(Layers { base64, gzip })
}

/// The bytes of the `content` scalar (empty when absent) and whether it was a `!!binary`
/// scalar, which is decoded here.
fn raw_content(
    cx: &mut Cx,
    cnode: Option<&Node>,
    field: &str,
) -> Result<(Vec<u8>, bool), Reported> {
    let Some((node, s)) = cnode.and_then(|n| scalar(n).map(|s| (n, s))) else {
        return Ok((Vec::new(), false));
    };
    if s.tag.as_deref() != Some(BINARY_TAG) {
        return Ok((s.value.clone().into_bytes(), false));
    }
    match decode_b64(&s.value) {
        Ok(b) => Ok((b, true)),
        Err(e) => {
            let msg = format!(
                "invalid !!binary base64: {}",
                base64_problem(&s.value, Some(s), e)
            );
            cx.err(&node.pos, &join(field, "content"), msg);
            Err(Reported)
        }
    }
}

/// Standard base64, ignoring ASCII whitespace (line-wrapped blocks).
fn decode_b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact.as_bytes())
}

/// What is wrong with base64 `text`, in the user's terms: the offending character and, when
/// `scalar` (the YAML value `text` was read from) maps its characters onto the file, its line
/// and column there.
fn base64_problem(text: &str, scalar: Option<&Scalar>, e: base64::DecodeError) -> String {
    use base64::DecodeError as E;
    // The decoder saw `text` without whitespace: find the character behind a byte offset.
    let at = |offset: usize| {
        let mut compact = 0;
        for (index, c) in text.chars().enumerate() {
            if c.is_ascii_whitespace() {
                continue;
            }
            if compact >= offset {
                let place = scalar.and_then(|s| s.locate(index)).map_or_else(
                    || format!("character {} of the value", index + 1),
                    |(line, col)| format!("line {line}, column {col}"),
                );
                return (c, place);
            }
            compact += c.len_utf8();
        }
        ('?', "the end of the value".to_string())
    };
    match e {
        E::InvalidByte(offset, _) => match at(offset) {
            ('=', place) => format!("'=' padding at {place} is followed by more data"),
            (c, place) => format!(
                "{c:?} at {place} is not a base64 character (A-Z, a-z, 0-9, +, /, = padding)"
            ),
        },
        E::InvalidLastSymbol(offset, _) => {
            let (c, place) = at(offset);
            format!("the last character {c:?} at {place} does not end a base64 group (truncated?)")
        }
        E::InvalidLength(n) => format!(
            "{n} base64 characters, which is not a whole number of 4-character groups (truncated or missing '=' padding?)"
        ),
        E::InvalidPadding => "missing or misplaced '=' padding (truncated?)".to_string(),
    }
}

/// Gunzips `data` as Go's `gzip.Reader` (k3os) reads it: every member in turn, concatenated
/// (`cat a.gz b.gz`); bytes after a member that do not start another one are an error (k3os
/// logged it and skipped the entry). At most `cap + 1` bytes are inflated across all members,
/// so a bomb stops at the cap.
fn gunzip(data: &[u8], cap: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    for member in 1.. {
        let mut dec = flate2::bufread::GzDecoder::new(rest);
        let room = (cap + 1).saturating_sub(out.len() as u64);
        let read = (&mut dec).take(room).read_to_end(&mut out);
        if out.len() as u64 > cap {
            return Err(format!(
                "decompresses to more than the {cap} byte limit per file (a gzip bomb?)"
            ));
        }
        read.map_err(|e| match member {
            1 => e.to_string(),
            n => format!("member {n}: {e}"),
        })?;
        rest = dec.into_inner();
        if rest.is_empty() {
            break;
        }
        if !rest.starts_with(&[0x1f, 0x8b]) {
            let offset = data.len() - rest.len();
            return Err(format!(
                "{} byte(s) after gzip member {member} (from byte {offset} of the compressed data) are not another gzip member; expected only gzip members",
                rest.len()
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar `key` of a one-file YAML document.
    fn scalar_of(doc: &Node, key: &str) -> Scalar {
        match &doc.get(key).unwrap().kind {
            crate::config::yaml::Kind::Scalar(s) => s.clone(),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn base64_errors_name_the_character_and_where_it_is() {
        let text = "a: CiMgVGhpcyBmaWxl...\nb: !!binary |\n  f0VMRgIBAQAA\n  AEAAHg.AdAAYA\nc: QUJD RA=x\nd: \"QU\\x2eJD\"\ne: QUJDRA\n";
        let doc = crate::config::yaml::parse("f.yaml", text).unwrap();
        let problem = |key: &str| {
            let s = scalar_of(&doc, key);
            base64_problem(&s.value, Some(&s), decode_b64(&s.value).unwrap_err())
        };
        assert_eq!(
            problem("a"),
            "'.' at line 1, column 20 is not a base64 character (A-Z, a-z, 0-9, +, /, = padding)"
        );
        assert!(
            problem("b").starts_with("'.' at line 4, column 9 "),
            "{}",
            problem("b")
        );
        assert_eq!(
            problem("c"),
            "'=' padding at line 5, column 11 is followed by more data"
        );
        // Escapes shift columns: the character is named by its place in the value.
        assert!(
            problem("d").starts_with("'.' at character 3 of the value"),
            "{}",
            problem("d")
        );
        assert_eq!(
            problem("e"),
            "missing or misplaced '=' padding (truncated?)"
        );
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_bomb_is_capped() {
        let gz = gz(&vec![0u8; 2 << 20]);
        assert!(gunzip(&gz, 1 << 20).unwrap_err().contains("limit"));
        assert_eq!(gunzip(&gz, 4 << 20).unwrap().len(), 2 << 20);
        // The cap counts every member: two of 2 MiB are over a 3 MiB cap.
        let two = [gz.clone(), gz].concat();
        assert!(gunzip(&two, 3 << 20).unwrap_err().contains("limit"));
        assert_eq!(gunzip(&two, 4 << 20).unwrap().len(), 4 << 20);
    }

    #[test]
    fn every_member_is_read_and_trailing_bytes_are_refused() {
        let (a, b) = (gz(b"hello "), gz(b"world\n"));
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(gunzip(&both, 1 << 20).unwrap(), b"hello world\n");
        let garbage = [a.clone(), b"garbage".to_vec()].concat();
        let e = gunzip(&garbage, 1 << 20).unwrap_err();
        assert!(
            e.contains(&format!(
                "7 byte(s) after gzip member 1 (from byte {}",
                a.len()
            )),
            "{e}"
        );
        // A second member that is cut short is an error, not a silent end.
        let cut = [a.clone(), b[..b.len() - 4].to_vec()].concat();
        assert!(gunzip(&cut, 1 << 20).unwrap_err().starts_with("member 2:"));
        // One truncated member, and no data at all.
        assert!(gunzip(&a[..a.len() - 4], 1 << 20).is_err());
        assert!(gunzip(b"", 1 << 20).is_err());
    }
}
