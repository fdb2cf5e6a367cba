//! Diagnostics: what is wrong (or suspicious) in a config file, where, and what was expected.
//!
//! Display form: `file:line:col: field: message`. `field` is the dotted path of the value in the
//! merged config (`k3os.labels`, `write_files[/etc/foo].content`).
//!
//! Three kinds: errors (the config is rejected), warnings, and lenient warnings: an item bosun
//! skipped or repaired where k3os degraded that one item and kept the rest (an unparseable
//! literal ssh key, a relative `write_files` path, `k3s_args` starting with a flag). `--strict`
//! turns lenient warnings into errors ([`Diagnostic::under_strict`]); the daemon applies with
//! them and counts them as config warnings.

use std::fmt;

use super::yaml::Pos;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Suspicious but usable (unknown key, not-applicable k3os key); the config still loads.
    Warning,
    /// The value is unusable; the layer (or the node's config) is rejected.
    Error,
}

/// One finding in a config file: where, which field, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Warning or error.
    pub severity: Severity,
    /// Where the offending value (or key) is.
    pub pos: Pos,
    /// Dotted path of the value in the merged config (`k3os.labels`,
    /// `write_files[/etc/foo].content`); empty for file-level problems.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// A k3os leniency: bosun skipped or repaired one item where k3os degraded that item and
    /// kept the rest of the config (issue 13). A warning, or an error under `--strict`
    /// ([`Diagnostic::under_strict`]).
    pub lenient: bool,
}

impl Diagnostic {
    /// An error at `pos` for `field`.
    pub fn error(pos: Pos, field: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            pos,
            field: field.to_string(),
            message: message.into(),
            lenient: false,
        }
    }

    /// A warning at `pos` for `field`.
    pub fn warning(pos: Pos, field: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            pos,
            field: field.to_string(),
            message: message.into(),
            lenient: false,
        }
    }

    /// A k3os leniency (see [`Diagnostic::lenient`]): a warning that `--strict` makes an error.
    pub fn lenient(pos: Pos, field: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            lenient: true,
            ..Diagnostic::warning(pos, field, message)
        }
    }

    /// This diagnostic as `--strict` sees it: a lenient warning becomes an error; anything
    /// else is unchanged.
    pub fn under_strict(self) -> Self {
        if self.lenient {
            Diagnostic {
                severity: Severity::Error,
                ..self
            }
        } else {
            self
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.pos)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        match (self.lenient, self.severity) {
            (true, Severity::Warning) => f.write_str(" (an error with --strict)"),
            (true, Severity::Error) => f.write_str(" (an error because of --strict)"),
            _ => Ok(()),
        }
    }
}

/// The config was rejected: one or more error diagnostics (warnings are kept for context).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Every diagnostic of the load, errors and warnings, in file and position order.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// The error diagnostics only (what [`Display`](std::fmt::Display) prints).
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in self.errors() {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Diagnostic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Diagnostic", 7)?;
        st.serialize_field("severity", &self.severity)?;
        st.serialize_field("file", &*self.pos.file)?;
        st.serialize_field("line", &self.pos.line)?;
        st.serialize_field("col", &self.pos.col)?;
        st.serialize_field("field", &self.field)?;
        st.serialize_field("message", &self.message)?;
        st.serialize_field("lenient", &self.lenient)?;
        st.end()
    }
}
