//! OCI images: the image index, manifests and config (parsing is pure), and a blob store over
//! an OCI layout directory or an `oci-archive` tarball (as `podman save --format
//! oci-archive`, `skopeo copy … oci-archive:` and `docker save` since Docker 25 write them).
//!
//! Invariants:
//! - A blob is handed out only after its size and SHA-256 matched its descriptor
//!   ([`BlobStore::verified`]); a mismatch is [`ImageError::BlobMismatch`] naming the digest.
//! - Digests are `sha256:` + 64 lowercase hex digits; anything else is refused before a path
//!   is built from it, so a digest can never name a file outside `blobs/sha256/`.
//! - An archive is unpacked into a private work directory, and only `index.json`,
//!   `oci-layout` and `blobs/sha256/<hex>` regular files are taken from it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{io_err, ImageError};

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 4 << 20;

/// Media type of an OCI image index (`index.json` or a nested index); Docker's manifest list is
/// accepted as the same thing.
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest; Docker's v2 manifest (and an empty media type) are accepted
/// as the same thing.
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor (OCI image-spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is ([`MT_INDEX`], [`MT_MANIFEST`], a layer type, …); empty when the descriptor
    /// omits it.
    #[serde(default)]
    pub media_type: String,
    /// The blob's content address, `sha256:<64 hex>` (other algorithms are refused).
    pub digest: String,
    /// The blob's length in bytes; the blob store checks it before the digest.
    pub size: u64,
    /// The platform a manifest is for (in an index); picks the manifest for `--platform`.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Free-form annotations such as `org.opencontainers.image.ref.name` (read, not interpreted).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The platform of a manifest in an image index (OCI image-spec `image-index.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's spelling (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v8` for arm64), when the index gives one.
    #[serde(default)]
    pub variant: Option<String>,
}

/// `index.json` or a nested image index.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Image-spec schema version (2 for every OCI and Docker v2 document).
    pub schema_version: u32,
    /// The manifests or nested indexes it lists, with their platforms.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Image-spec schema version (2).
    pub schema_version: u32,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of the image config bosun uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture the image was built for (`amd64`); empty when unspecified.
    #[serde(default)]
    pub architecture: String,
    /// Operating system the image was built for (`linux`); empty when unspecified, which skips the
    /// platform check.
    #[serde(default)]
    pub os: String,
    /// The layer list of the root filesystem.
    pub rootfs: RootfsSection,
}

/// The `rootfs` section of an image config: the uncompressed digests of the layers.
#[derive(Debug, Clone, Deserialize)]
pub struct RootfsSection {
    /// Always `"layers"` (anything else is refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// SHA-256 of each layer's uncompressed tar, bottom first, one per manifest layer; checked with
    /// [`DiffIdReader`] after the layer is applied.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// A resolved image: its config and its layers, bottom first.
#[derive(Debug, Clone)]
pub struct Image {
    /// Digest of the manifest chosen for the platform (kept for provenance; not printed today).
    pub manifest_digest: String,
    /// The image config (verified and checked against the manifest and the platform).
    pub config: ImageConfig,
    /// The layer blobs, bottom first (not yet verified: the blob store verifies each when it is
    /// read).
    pub layers: Vec<Descriptor>,
}

/// The hex part of a `sha256:` digest (pure). Refuses other algorithms and malformed hex.
pub fn sha256_hex(digest: &str) -> Result<&str, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        format!("digest {digest:?}: only sha256 digests are supported (expected sha256:<64 hex>)")
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest {digest:?}: expected sha256: followed by 64 lowercase hex digits"
        ));
    }
    Ok(hex)
}

/// Parses a JSON document (pure); the error names `what`.
fn parse_json<T: serde::de::DeserializeOwned>(text: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(text).map_err(|e| format!("{what}: {e}"))
}

/// The descriptor to follow from an index (pure): the only manifest, or the one for
/// `platform` (`os/arch`, e.g. `linux/amd64`).
pub fn choose_manifest<'a>(index: &'a Index, platform: &str) -> Result<&'a Descriptor, String> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type != "application/vnd.oci.image.layer.v1.tar")
        .collect();
    match candidates.as_slice() {
        [] => Err("the index lists no manifests".into()),
        [only] => Ok(only),
        many => {
            let matching: Vec<&&Descriptor> = many
                .iter()
                .filter(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| format!("{}/{}", p.os, p.architecture) == platform)
                })
                .collect();
            match matching.as_slice() {
                [one] => Ok(one),
                [] => Err(format!(
                    "the index lists {} manifests and none is for platform {platform} (have: {}); \
                     pass --platform",
                    many.len(),
                    many.iter()
                        .map(|d| d
                            .platform
                            .as_ref()
                            .map(|p| format!("{}/{}", p.os, p.architecture))
                            .unwrap_or_else(|| "unspecified".into()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                several => Err(format!(
                    "the index lists {} manifests for platform {platform}; keep one image per \
                     archive",
                    several.len()
                )),
            }
        }
    }
}

/// The platform bosun was built for, in OCI terms (`linux/amd64`, `linux/arm64`).
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    format!("linux/{arch}")
}

/// Blobs of one OCI layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    origin: String,
}

impl BlobStore {
    /// Opens `input`: an OCI layout directory as is, or an oci-archive tarball unpacked into
    /// `work` (created; writes only there).
    pub fn open(input: &Path, work: &Path) -> Result<BlobStore, ImageError> {
        let origin = input.display().to_string();
        let meta = std::fs::metadata(input).map_err(io_err(input))?;
        let dir = if meta.is_dir() {
            input.to_path_buf()
        } else {
            unpack_archive(input, work)?;
            work.to_path_buf()
        };
        let layout = dir.join("oci-layout");
        let text = std::fs::read(&layout).map_err(|_| ImageError::Oci {
            origin: origin.clone(),
            message: "no oci-layout file: not an OCI layout directory or oci-archive (docker \
                      save writes one since Docker 25; older versions: use skopeo copy \
                      docker-archive:… oci-archive:…)"
                .into(),
        })?;
        let v: serde_json::Value =
            parse_json(&text, "oci-layout").map_err(|message| ImageError::Oci {
                origin: origin.clone(),
                message,
            })?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(ImageError::Oci {
                origin,
                message: format!("oci-layout: unsupported imageLayoutVersion {v}"),
            });
        }
        Ok(BlobStore { dir, origin })
    }

    fn oci_err(&self, message: String) -> ImageError {
        ImageError::Oci {
            origin: self.origin.clone(),
            message,
        }
    }

    /// The path of a blob whose size and SHA-256 match `desc` (reads the whole blob).
    pub fn verified(&self, desc: &Descriptor) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex(&desc.digest).map_err(|m| self.oci_err(m))?;
        let path = self.dir.join("blobs/sha256").join(hex);
        let mut file = File::open(&path).map_err(|e| {
            self.oci_err(format!(
                "blob {} ({}) is missing from the image: {e}",
                desc.digest, desc.media_type
            ))
        })?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher).map_err(io_err(&path))?;
        if size != desc.size {
            return Err(ImageError::BlobMismatch {
                digest: desc.digest.clone(),
                what: "size",
                expected: desc.size.to_string(),
                actual: size.to_string(),
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != hex {
            return Err(ImageError::BlobMismatch {
                digest: desc.digest.clone(),
                what: "sha256",
                expected: hex.to_string(),
                actual,
            });
        }
        Ok(path)
    }

    /// A verified JSON blob, parsed.
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &str,
    ) -> Result<T, ImageError> {
        if desc.size > MAX_JSON {
            return Err(self.oci_err(format!(
                "{what} {} is {} bytes; more than {MAX_JSON} is not a plausible {what}",
                desc.digest, desc.size
            )));
        }
        let path = self.verified(desc)?;
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        parse_json(&text, &format!("{what} {}", desc.digest)).map_err(|m| self.oci_err(m))
    }

    /// Resolves `index.json` → (nested indexes) → manifest → config for `platform`. Reads
    /// and verifies every JSON blob on the way; the layers are verified when they are used.
    pub fn image(&self, platform: &str) -> Result<Image, ImageError> {
        let path = self.dir.join("index.json");
        let text = std::fs::read(&path).map_err(|e| self.oci_err(format!("index.json: {e}")))?;
        let mut index: Index = parse_json(&text, "index.json").map_err(|m| self.oci_err(m))?;
        for _depth in 0..4 {
            let desc = choose_manifest(&index, platform).map_err(|m| self.oci_err(m))?;
            match desc.media_type.as_str() {
                MT_INDEX | MT_DOCKER_LIST => {
                    index = self.json(desc, "image index")?;
                }
                MT_MANIFEST | MT_DOCKER_MANIFEST | "" => {
                    let manifest: Manifest = self.json(desc, "manifest")?;
                    let config: ImageConfig = self.json(&manifest.config, "image config")?;
                    check_config(&config, &manifest, platform).map_err(|m| self.oci_err(m))?;
                    return Ok(Image {
                        manifest_digest: desc.digest.clone(),
                        config,
                        layers: manifest.layers,
                    });
                }
                other => {
                    return Err(self.oci_err(format!(
                        "{}: unsupported media type {other:?} (expected an OCI image manifest or index)",
                        desc.digest
                    )))
                }
            }
        }
        Err(self.oci_err("image indexes nest deeper than 4 levels".into()))
    }
}

/// Checks the config against the manifest and platform (pure).
fn check_config(config: &ImageConfig, manifest: &Manifest, platform: &str) -> Result<(), String> {
    if config.rootfs.kind != "layers" {
        return Err(format!(
            "image config: rootfs.type is {:?}, expected \"layers\"",
            config.rootfs.kind
        ));
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(format!(
            "image config lists {} diff_ids but the manifest has {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        ));
    }
    for d in &config.rootfs.diff_ids {
        sha256_hex(d)?;
    }
    let have = format!("{}/{}", config.os, config.architecture);
    if !config.os.is_empty() && have != platform {
        return Err(format!(
            "the image is for {have}, not {platform} (pass --platform {have} to build it anyway)"
        ));
    }
    Ok(())
}

/// Unpacks the layout files of an oci-archive tarball into `work` (writes only there).
fn unpack_archive(archive: &Path, work: &Path) -> Result<(), ImageError> {
    let origin = archive.display().to_string();
    let err = |message: String| ImageError::Oci {
        origin: origin.clone(),
        message,
    };
    std::fs::create_dir_all(work.join("blobs/sha256")).map_err(io_err(work))?;
    let file = File::open(archive).map_err(io_err(archive))?;
    let reader = super::layers::decompressed(file).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .map_err(|e| err(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| err(format!("reading the archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw);
        let name = name.trim_start_matches("./");
        let dest = match name {
            "index.json" | "oci-layout" => work.join(name),
            _ => match name.strip_prefix("blobs/sha256/") {
                Some(hex) if sha256_hex(&format!("sha256:{hex}")).is_ok() => {
                    work.join("blobs/sha256").join(hex)
                }
                _ => continue,
            },
        };
        if !entry.header().entry_type().is_file() {
            return Err(err(format!("{name}: not a regular file in the archive")));
        }
        let mut out = File::create(&dest).map_err(io_err(&dest))?;
        std::io::copy(&mut entry, &mut out).map_err(io_err(&dest))?;
        out.flush().map_err(io_err(&dest))?;
    }
    Ok(())
}

/// Reads a layer blob's uncompressed bytes while hashing them, so the config's `diff_id` can
/// be checked after the layer was applied.
pub struct DiffIdReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> DiffIdReader<R> {
    /// Wraps `inner`; every byte read through it is hashed.
    pub fn new(inner: R) -> Self {
        DiffIdReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads what is left (tar padding after the end marker) and returns `sha256:<hex>`.
    pub fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for DiffIdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(platform: Option<(&str, &str)>, digest_byte: char) -> Descriptor {
        Descriptor {
            media_type: MT_MANIFEST.into(),
            digest: format!("sha256:{}", digest_byte.to_string().repeat(64)),
            size: 10,
            platform: platform.map(|(os, arch)| Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: None,
            }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn digests_must_be_sha256_with_64_lowercase_hex_digits() {
        let good = format!("sha256:{}", "a1".repeat(32));
        assert_eq!(sha256_hex(&good).unwrap(), "a1".repeat(32));
        for bad in [
            "sha512:abcd".to_string(),
            "sha256:../../etc/passwd".into(),
            format!("sha256:{}", "A1".repeat(32)),
            format!("sha256:{}", "a".repeat(63)),
            "a1".repeat(32),
        ] {
            assert!(sha256_hex(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_only_manifest_is_chosen_whatever_its_platform() {
        let index = Index {
            schema_version: 2,
            manifests: vec![desc(Some(("linux", "arm64")), 'a')],
        };
        assert_eq!(
            choose_manifest(&index, "linux/amd64").unwrap().digest,
            index.manifests[0].digest
        );
    }

    #[test]
    fn a_multi_platform_index_is_resolved_by_platform_or_refused_naming_what_it_has() {
        let index = Index {
            schema_version: 2,
            manifests: vec![
                desc(Some(("linux", "arm64")), 'a'),
                desc(Some(("linux", "amd64")), 'b'),
            ],
        };
        assert!(choose_manifest(&index, "linux/amd64")
            .unwrap()
            .digest
            .ends_with('b'));
        let err = choose_manifest(&index, "linux/riscv64").unwrap_err();
        assert!(err.contains("linux/arm64, linux/amd64"), "{err}");
        let empty = Index {
            schema_version: 2,
            manifests: vec![],
        };
        assert!(choose_manifest(&empty, "linux/amd64").is_err());
    }

    #[test]
    fn config_must_match_the_manifest_layers_and_platform() {
        let manifest = Manifest {
            schema_version: 2,
            config: desc(None, 'c'),
            layers: vec![desc(None, 'd')],
        };
        let config = |os: &str, ids: usize| ImageConfig {
            architecture: "amd64".into(),
            os: os.into(),
            rootfs: RootfsSection {
                kind: "layers".into(),
                diff_ids: vec![format!("sha256:{}", "e".repeat(64)); ids],
            },
        };
        assert!(check_config(&config("linux", 1), &manifest, "linux/amd64").is_ok());
        assert!(check_config(&config("linux", 2), &manifest, "linux/amd64")
            .unwrap_err()
            .contains("2 diff_ids"));
        assert!(
            check_config(&config("windows", 1), &manifest, "linux/amd64")
                .unwrap_err()
                .contains("windows/amd64")
        );
    }

    #[test]
    fn index_and_manifest_parse_from_their_json() {
        let index: Index = parse_json(
            br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":7,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}"#,
            "index.json",
        )
        .unwrap();
        assert_eq!(index.manifests[0].size, 7);
        let err = parse_json::<Manifest>(br#"{"schemaVersion":2}"#, "manifest").unwrap_err();
        assert!(err.contains("manifest") && err.contains("config"), "{err}");
    }
}
