//! `bosun image slot`: a root filesystem (directory, tarball or OCI image) → an ext4 A/B
//! slot image, zstd-compressed, and the `upgrade:` block naming it.
//!
//! Order: read and check every input (OCI blobs verified, layers applied to the staging
//! tree, `IMAGE_VERSION` written, bootability checked), size the filesystem, build it in
//! the work directory, compress it next to `--out`, and only then rename it to `--out`.
//! Any error before the rename leaves `--out` as it was (absent or the previous image).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sha2::{Digest, Sha256};

use super::ext4::{self, Ext4Spec};
use super::layers::{self, Entry};
use super::oci::{self, BlobStore, DiffIdReader};
use super::rootfs::{self, Staging};
use super::{io_err, temp_next_to, Cleanup, ImageError, TOOL_TIMEOUT};
use crate::runner::{CommandRunner, SystemRunner};

/// Flags of `bosun image slot`.
#[derive(Debug, clap::Args)]
pub struct SlotArgs {
    /// Root filesystem: a directory, or a tarball (.tar, .tar.gz, .tar.zst).
    #[arg(long, required_unless_present = "oci", conflicts_with = "oci")]
    pub rootfs: Option<PathBuf>,
    /// OCI image: an oci-archive tarball (podman save --format oci-archive, docker save) or
    /// an OCI layout directory (skopeo copy … oci:DIR).
    #[arg(long)]
    pub oci: Option<PathBuf>,
    /// Which image of a multi-platform OCI index, as os/arch.
    #[arg(long, default_value_t = oci::host_platform())]
    pub platform: String,
    /// The OS version: written to /etc/os-release as IMAGE_VERSION= and into the
    /// printed `upgrade:` block.
    #[arg(long)]
    pub version: String,
    /// Output file: zstd-compressed when it ends in .zst, else the raw ext4 image.
    #[arg(long)]
    pub out: PathBuf,
    /// Filesystem size (bytes, or 512M, 2G). Default: what the tree needs plus 20% and 32 MiB.
    #[arg(long, value_parser = ext4::parse_size)]
    pub size: Option<u64>,
    /// Filesystem label.
    #[arg(long, default_value = "bosun-root")]
    pub label: String,
    /// Filesystem UUID (also the directory hash seed). Default: derived from --version.
    #[arg(long)]
    pub uuid: Option<String>,
    /// Time for ctime/crtime and everything e2fsprogs stamps. Default: the newest mtime in
    /// the tree, so the same input gives the same image.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<i64>,
    /// Where the image will be served, for the printed `upgrade:` block: an https:// URL or
    /// an absolute path; `{file}` and `{version}` are replaced.
    #[arg(long, default_value = "https://images.example.invalid/{file}")]
    pub image_url: String,
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    /// The file written (`--out`).
    pub out: PathBuf,
    /// Size of the ext4 filesystem.
    pub fs_size: u64,
    /// SHA-256 and size of the file at `out` (what a node downloads).
    pub sha256: String,
    /// Length of the file at `out` in bytes.
    pub size: u64,
}

/// Runs `bosun image slot` with the real tools; prints the report and the `upgrade:` block.
pub fn run(args: SlotArgs) -> anyhow::Result<ExitCode> {
    let runner = SystemRunner::new(TOOL_TIMEOUT);
    let report = build(&args, &runner)?;
    print!("{}", render_report(&args, &report));
    Ok(ExitCode::SUCCESS)
}

/// The summary and the `upgrade:` block to paste into the config repo (pure).
pub fn render_report(args: &SlotArgs, r: &SlotReport) -> String {
    let file = r
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let url = args
        .image_url
        .replace("{file}", &file)
        .replace("{version}", &args.version);
    format!(
        "built {} (ext4 {:?}, {} MiB filesystem), version {}\n\
         sha256 {}  size {}\n\n\
         # upgrade: block for the config repo (config.yaml, groups/*.yaml or nodes/<host>.yaml)\n\
         upgrade:\n  version: \"{}\"\n  image: {url}\n  sha256: {}\n  size: {}\n",
        r.out.display(),
        args.label,
        r.fs_size >> 20,
        args.version,
        r.sha256,
        r.size,
        args.version,
        r.sha256,
        r.size,
    )
}

/// Checks the arguments before anything is read or written (pure).
fn check_args(args: &SlotArgs) -> Result<(), ImageError> {
    rootfs::check_version(&args.version).map_err(ImageError::Invalid)?;
    if args.label.is_empty() || args.label.len() > 16 {
        return Err(ImageError::Invalid(format!(
            "--label {:?}: an ext4 label has 1 to 16 bytes",
            args.label
        )));
    }
    if !(args.image_url.starts_with("https://") || args.image_url.starts_with('/')) {
        return Err(ImageError::Invalid(format!(
            "--image-url {:?}: expected an https:// URL or an absolute path (what upgrade.image accepts)",
            args.image_url
        )));
    }
    if args.out.is_dir() {
        return Err(ImageError::Invalid(format!(
            "--out {}: is a directory, expected a file name",
            args.out.display()
        )));
    }
    Ok(())
}

/// Builds the slot image (see the module docs for the order). Writes the work directory
/// next to `--out` (removed at the end) and, on success only, `--out`.
pub fn build(args: &SlotArgs, runner: &dyn CommandRunner) -> Result<SlotReport, ImageError> {
    check_args(args)?;
    let work = Cleanup::new(temp_next_to(&args.out, "work"));
    std::fs::create_dir(work.path()).map_err(io_err(work.path()))?;
    let implicit_mtime = args.source_date_epoch.unwrap_or(0);
    let mut staging = Staging::create(&work.path().join("root"), implicit_mtime)?;
    let newest = fill(args, &mut staging, work.path())?;
    // At least 1: e2fsprogs reads E2FSPROGS_FAKE_TIME=0 as "not set" and takes the clock.
    let epoch = args.source_date_epoch.unwrap_or(newest).max(1);
    staging
        .set_image_version(&args.version, epoch)
        .map_err(|m| ImageError::Invalid(format!("writing /etc/os-release: {m}")))?;
    let missing = rootfs::missing_parts(&|p| staging.lookup(p));
    if !missing.is_empty() {
        return Err(ImageError::NotBootable(missing));
    }
    let nodes = staging.nodes()?;
    let estimate = ext4::estimate(&nodes);
    let size = ext4::choose_size(&estimate, args.size)?;
    let uuid = match &args.uuid {
        Some(u) => u.clone(),
        None => ext4::uuid_from(&format!("bosun-slot {}", args.version)),
    };
    let raw = work.path().join("slot.img");
    let spec = Ext4Spec {
        staging: staging.dir(),
        nodes: &nodes,
        label: &args.label,
        uuid: &uuid,
        size,
        inodes: estimate.inodes,
        epoch,
        work: work.path(),
    };
    ext4::build(runner, &spec, &raw)?;
    let (sha256, out_size) = write_output(&raw, &args.out, args.zstd_level)?;
    Ok(SlotReport {
        out: args.out.clone(),
        fs_size: size,
        sha256,
        size: out_size,
    })
}

/// Applies the input to the staging tree. Returns the newest mtime seen.
fn fill(args: &SlotArgs, staging: &mut Staging, work: &Path) -> Result<i64, ImageError> {
    let mut newest = 0i64;
    let mut apply = |layer: &str, staging: &mut Staging, e: Entry, r: &mut dyn Read| {
        newest = newest.max(e.meta.mtime);
        let entry = e.path.clone();
        staging.apply(e, r).map_err(|reason| ImageError::Entry {
            layer: layer.to_string(),
            entry,
            reason,
        })
    };
    if let Some(oci_input) = &args.oci {
        let store = BlobStore::open(oci_input, &work.join("oci"))?;
        let image = store.image(&args.platform)?;
        for (layer, diff_id) in image.layers.iter().zip(&image.config.rootfs.diff_ids) {
            let path = store.verified(layer)?;
            staging.begin_layer();
            let file = File::open(&path).map_err(io_err(&path))?;
            let mut reader = DiffIdReader::new(layers::decompressed(file).map_err(io_err(&path))?);
            layers::for_each_entry(&mut reader, &layer.digest, |e, r| {
                apply(&layer.digest, staging, e, r)
            })?;
            let actual = reader.finish().map_err(io_err(&path))?;
            if &actual != diff_id {
                return Err(ImageError::Layer {
                    layer: layer.digest.clone(),
                    reason: format!(
                        "uncompressed content is {actual}, the image config's diff_id says {diff_id}"
                    ),
                });
            }
        }
        return Ok(newest);
    }
    let Some(input) = &args.rootfs else {
        return Err(ImageError::Invalid("give --rootfs or --oci".into()));
    };
    let meta = std::fs::metadata(input).map_err(io_err(input))?;
    let name = input.display().to_string();
    if meta.is_dir() {
        rootfs::walk_directory(input, &mut |e, r| apply(&name, staging, e, r))?;
    } else {
        let file = File::open(input).map_err(io_err(input))?;
        let reader = layers::decompressed(file).map_err(io_err(input))?;
        layers::for_each_entry(reader, &name, |e, r| apply(&name, staging, e, r))?;
    }
    Ok(newest)
}

/// Writes `raw` to `out` (zstd when `out` ends in .zst) through a temporary file and a
/// rename. Returns the SHA-256 (hex) and size of what is at `out`.
fn write_output(raw: &Path, out: &Path, level: i32) -> Result<(String, u64), ImageError> {
    let tmp = Cleanup::new(temp_next_to(out, "tmp"));
    let file = File::create(tmp.path()).map_err(io_err(tmp.path()))?;
    let mut hashing = HashingWriter {
        inner: file,
        hasher: Sha256::new(),
        written: 0,
    };
    let mut input = File::open(raw).map_err(io_err(raw))?;
    let raw_len = input.metadata().map_err(io_err(raw))?.len();
    if out.extension().is_some_and(|e| e == "zst") {
        let mut enc = zstd::stream::Encoder::new(&mut hashing, level).map_err(io_err(out))?;
        enc.include_checksum(true).map_err(io_err(out))?;
        enc.set_pledged_src_size(Some(raw_len))
            .map_err(io_err(out))?;
        std::io::copy(&mut input, &mut enc).map_err(io_err(out))?;
        enc.finish().map_err(io_err(out))?;
    } else {
        std::io::copy(&mut input, &mut hashing).map_err(io_err(out))?;
    }
    hashing.inner.sync_all().map_err(io_err(tmp.path()))?;
    let sha = hex::encode(hashing.hasher.finalize());
    let size = hashing.written;
    std::fs::rename(tmp.path(), out).map_err(io_err(out))?;
    tmp.keep();
    Ok((sha, size))
}

/// Hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SlotArgs,
    }

    fn args(extra: &[&str]) -> SlotArgs {
        let mut argv = vec![
            "x",
            "--rootfs",
            "/r",
            "--version",
            "v1",
            "--out",
            "/o/os.img.zst",
        ];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn the_upgrade_block_names_version_url_sha256_and_size() {
        let a = args(&["--image-url", "https://img.example.org/{version}/{file}"]);
        let r = SlotReport {
            out: "/o/os.img.zst".into(),
            fs_size: 64 << 20,
            sha256: "ab".repeat(32),
            size: 1234,
        };
        let text = render_report(&a, &r);
        let block = text.split_once("upgrade:\n").unwrap().1;
        assert_eq!(
            block,
            format!(
                "  version: \"v1\"\n  image: https://img.example.org/v1/os.img.zst\n  sha256: {}\n  size: 1234\n",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_is_read() {
        for (extra, field) in [
            (
                &["--image-url", "http://insecure/{file}"][..],
                "--image-url",
            ),
            (&["--label", "a-label-longer-than-16"][..], "--label"),
        ] {
            let err = check_args(&args(extra)).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        let mut a = args(&[]);
        a.version = "has space".into();
        assert!(check_args(&a)
            .unwrap_err()
            .to_string()
            .contains("--version"));
    }
}
