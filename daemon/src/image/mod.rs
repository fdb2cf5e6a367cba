//! `bosun image`: builds what an A/B node boots from.
//!
//! * `bosun image slot` ([`slot`]): a root filesystem (directory, tarball, or OCI image) →
//!   an ext4 slot image, zstd-compressed, with the `upgrade:` block that names it.
//! * `bosun image disk` ([`disk`]): a slot image → a first-install GPT disk image (BIOS boot
//!   partition, ESP with GRUB for BIOS and UEFI, slots a and b, data partition).
//!
//! Parts:
//! * [`oci`]: OCI image index / manifest / config parsing (pure) and a blob store that checks
//!   every blob's size and SHA-256 before handing it out;
//! * [`layers`]: tar layers → entries, path checks and whiteout names (pure);
//! * [`rootfs`]: the staging tree the layers are applied to, with owners, modes, xattrs and
//!   device nodes kept in memory (so no root is needed), and the checks of the result;
//! * [`ext4`]: sizing (pure), `mke2fs -d` and the `debugfs` pass that writes owners, modes,
//!   xattrs and fixed timestamps;
//! * [`disk`]: the disk layout and GRUB configs (pure) and their assembly in a plain file.
//!
//! Invariants: nothing is written at `--out` until the whole image is built and verified
//! (built next to it under a temporary name, then renamed); every external tool (mke2fs,
//! debugfs, sfdisk, mkfs.vfat, mtools, grub-mkimage, qemu-img) runs through the
//! [`CommandRunner`] seam with [`TOOL_TIMEOUT`]; no root, no loop devices, no mounts.

pub mod disk;
pub mod ext4;
pub mod layers;
pub mod oci;
pub mod rootfs;
pub mod slot;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::runner::{display_argv, CommandRunner, RunError};

/// How long one image tool (mke2fs of a multi-GiB slot, grub-mkimage, qemu-img) may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The `bosun image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an ext4 A/B slot image from a root filesystem directory, a tarball, or an OCI
    /// image (oci-archive tarball or OCI layout directory), zstd-compressed; print the
    /// `upgrade:` block that names it.
    Slot(slot::SlotArgs),
    /// Build a first-install disk image (GPT, BIOS + UEFI GRUB, slots a and b, data
    /// partition) from a slot image. Raw, plus qcow2 when qemu-img is installed.
    Disk(disk::DiskArgs),
}

/// Runs `bosun image …`.
pub fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Slot(args) => slot::run(args),
        ImageCommand::Disk(args) => disk::run(args),
    }
}

/// Why an image could not be built. Each variant names the input, entry or tool at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing a file of the build (input tree, layer blob, staging dir, output) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory the I/O was on.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The OCI input is unusable: unreadable index, manifest or config, or no manifest for the
    /// requested platform.
    #[error("OCI image {origin}: {message}")]
    Oci {
        /// The OCI archive or layout directory, as given on the command line.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A blob's size or SHA-256 differs from its descriptor (corrupt or tampered OCI input).
    #[error(
        "OCI blob {digest}: {what} mismatch: the descriptor says {expected}, the blob has {actual}"
    )]
    BlobMismatch {
        /// The blob's digest, as named by its descriptor.
        digest: String,
        /// Which property disagrees: `"size"` or `"sha256"`.
        what: &'static str,
        /// The value the descriptor states.
        expected: String,
        /// The value measured on the blob.
        actual: String,
    },
    /// One tar entry of a layer is refused: an unsafe path (`..`, absolute), an unsupported type or
    /// a bad PAX record, or it cannot be applied to the staging tree.
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Entry {
        /// The layer the entry is in (blob digest or tarball path).
        layer: String,
        /// The entry's path as stored in the tar (lossily decoded).
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A whole layer is unusable: not a readable tar, or its uncompressed content does not match
    /// the image config's `diff_id`.
    #[error("layer {layer}: {reason}")]
    Layer {
        /// The layer (blob digest or tarball path).
        layer: String,
        /// Why it was refused.
        reason: String,
    },
    /// The staged tree lacks parts an A/B slot boots with (kernel, initrd, an executable
    /// `/usr/bin/bosun`, …); lists every missing part with a hint.
    #[error("the root filesystem is not bootable as an A/B slot: {}", .0.join("; "))]
    NotBootable(Vec<String>),
    /// The content does not fit the requested size: `--size` below the estimate, mke2fs running out
    /// of space or inodes, or a slot image larger than its disk partition.
    #[error(
        "the image needs at least {needed} bytes ({} MiB) but --size is {size} bytes ({} MiB); \
         raise --size or leave it out to size the image automatically",
        needed.div_ceil(1 << 20), size / (1 << 20)
    )]
    TooBig {
        /// Bytes the content needs at least.
        needed: u64,
        /// Bytes available (the requested or partition size).
        size: u64,
    },
    /// A flag value is invalid (version string, kernel command line, disk layout); the message says
    /// which and why.
    #[error("{0}")]
    Invalid(String),
    /// An external tool (mke2fs, debugfs, sfdisk, grub-mkimage, …) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool {
        /// The command line, shell-quoted for display.
        command: String,
        /// Its exit status, as text (`exit status 1`, `killed by a signal`).
        status: String,
        /// Its stderr (stdout when stderr was empty), trimmed.
        stderr: String,
    },
    /// The tool could not be started or timed out ([`CommandRunner`] error).
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Builds an [`ImageError::Io`] for `path` (for `map_err`).
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs one tool through `runner`; a non-zero exit is an [`ImageError::Tool`] carrying its
/// stderr. Returns stdout. Side effects: whatever the tool does.
pub(crate) fn run_tool(runner: &dyn CommandRunner, argv: &[String]) -> Result<Vec<u8>, ImageError> {
    let out = runner.run(argv)?;
    if !out.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(ImageError::Tool {
            command: display_argv(argv),
            status: out.status_text(),
            stderr,
        });
    }
    Ok(out.stdout)
}

/// `argv` as owned strings.
pub(crate) fn argv<S: AsRef<str>>(words: &[S]) -> Vec<String> {
    words.iter().map(|w| w.as_ref().to_string()).collect()
}

/// A temporary path next to `out` (same filesystem, so the final rename is atomic).
pub(crate) fn temp_next_to(out: &Path, tag: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    out.with_file_name(format!(".{name}.{tag}.{}", std::process::id()))
}

/// Removes a file or directory tree on drop unless [`Cleanup::keep`] was called.
pub(crate) struct Cleanup {
    path: Option<PathBuf>,
}

impl Cleanup {
    pub(crate) fn new(path: PathBuf) -> Cleanup {
        Cleanup { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keeps the path (it was renamed into place or is wanted).
    pub(crate) fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for Cleanup {
    /// Removes the path (a file or a whole tree); errors are ignored.
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}
