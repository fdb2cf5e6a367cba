//! The command line: argument parsing and the subcommands. `main` only calls [`run`].
//!
//! Exit codes: 0 success (for `plan`: no changes), 1 error, 2 (`plan`) changes pending.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, explain, Diagnostic, LoadOptions};
use crate::snapshot::Snapshot;

#[derive(Debug, Parser)]
#[command(
    name = "bosun",
    version,
    about = "GitOps node daemon for K3s fleets (k3os config.yaml compatible)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config repo (every layer file, and every node that has a nodes/ file) or the
    /// given standalone config files. Exit 0 when valid, 1 on errors.
    Validate {
        /// Config repo directory (holding config.yaml, groups/, nodes/).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Treat unknown keys as errors (k3os ignored them silently).
        #[arg(long)]
        strict: bool,
        /// Largest decoded write_files content, in bytes.
        #[arg(long, default_value_t = 64 << 20)]
        max_file_size: u64,
        /// Validate these files on their own (each as a complete k3os config.yaml) instead of the repo.
        files: Vec<PathBuf>,
        /// Output format for diagnostics.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the merged config of one node.
    Render {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        hostname: String,
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
        /// Annotate every value with the file:line:col it came from (YAML only).
        #[arg(long)]
        explain: bool,
        /// Print tokens, passwords and passphrases instead of `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
        #[arg(long)]
        strict: bool,
    },
    /// Print the JSON Schema of config.yaml layers.
    Schema,
}

/// Runs the command line. Prints to stdout/stderr; returns the exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate {
            repo,
            strict,
            max_file_size,
            files,
            format,
        } => {
            let opts = LoadOptions {
                strict,
                convert: config::ConvertOptions { max_file_size },
            };
            validate(&repo, &files, &opts, format)
        }
        Command::Render {
            repo,
            hostname,
            format,
            explain,
            show_secrets,
            strict,
        } => {
            let snap = Snapshot::from_dir(&repo)
                .with_context(|| format!("reading config repo {}", repo.display()))?;
            let opts = LoadOptions {
                strict,
                ..Default::default()
            };
            let loaded = match config::load(&snap, &hostname, &opts) {
                Ok(l) => l,
                Err(e) => {
                    print_diags(&e.diagnostics);
                    return Ok(ExitCode::from(1));
                }
            };
            print_diags(&loaded.warnings);
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    let v = explain::to_json(&loaded.merged, !show_secrets);
                    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                }
                _ => {
                    writeln!(out, "# layers: {}", loaded.layers.join(" → "))?;
                    write!(
                        out,
                        "{}",
                        explain::to_yaml(&loaded.merged, explain, !show_secrets)
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            println!("{}", schema_text());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The committed `schemas/config.schema.json` must equal this text.
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&config::spec::json_schema()).unwrap_or_default()
}

fn print_diags(diags: &[Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        let _ = writeln!(err, "{d}");
    }
}

fn validate(
    repo: &std::path::Path,
    files: &[PathBuf],
    opts: &LoadOptions,
    format: Format,
) -> Result<ExitCode> {
    let mut diags = Vec::new();
    if files.is_empty() {
        let snap = Snapshot::from_dir(repo)
            .with_context(|| format!("reading config repo {}", repo.display()))?;
        diags = config::validate_repo(&snap, opts);
    } else {
        for f in files {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            match config::load_file(&f.display().to_string(), &bytes, opts) {
                Ok(l) => diags.extend(l.warnings),
                Err(e) => diags.extend(e.diagnostics),
            }
        }
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&diags)?),
        _ => {
            for d in &diags {
                println!("{d}");
            }
            let warnings = diags.len() - errors;
            if errors == 0 {
                eprintln!("valid ({warnings} warning(s))");
            } else {
                eprintln!("invalid: {errors} error(s), {warnings} warning(s)");
            }
        }
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
