//! [`StreamingInstaller`]: the upgrade actor's [`Installer`] seam backed by [`install`].

use std::path::{Path, PathBuf};

use super::{http_client, install, resolve_compression, InstallOptions, InstallRequest};
use crate::upgrade::actor::Installer;

/// The streaming installer behind the upgrade actor's [`Installer`] seam: builds an
/// [`InstallRequest`] from the config's `upgrade:` block and runs [`install`] to completion.
/// Blocking: call it from a blocking thread (the actor's `step`), never from async code.
#[derive(Debug, Clone)]
pub struct StreamingInstaller {
    /// Progress record (and spool, next to it) in the state dir.
    pub progress_file: PathBuf,
    /// Timeouts, checkpoint interval, spool policy and zstd window ([`Default`] in production).
    pub options: InstallOptions,
}

impl StreamingInstaller {
    /// An installer keeping its progress record at `<state_dir>/install-progress.json`, with the
    /// production options. Touches nothing.
    pub fn new(state_dir: &Path) -> Self {
        StreamingInstaller {
            progress_file: state_dir.join("install-progress.json"),
            options: InstallOptions::default(),
        }
    }
}

impl Installer for StreamingInstaller {
    /// Downloads, verifies and writes the image (network, slot and spool writes).
    fn install(
        &self,
        image: &crate::config::UpgradeConfig,
        slot: &Path,
    ) -> Result<(), crate::upgrade::actor::InstallFailure> {
        let fail = |reason: String| crate::upgrade::actor::InstallFailure {
            slot: slot.to_path_buf(),
            reason,
        };
        let req = InstallRequest {
            source: image.image.clone(),
            sha256: image.sha256,
            size: image.size,
            compression: resolve_compression(image.compression, &image.image),
            slot: slot.to_path_buf(),
            progress_file: self.progress_file.clone(),
            verify_written: false,
        };
        let run = async {
            let http = http_client(&self.options).map_err(|e| e.to_string())?;
            install(&req, &http, &self.options)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if image.image.starts_with('/') {
            // Local images need no resume or network: the plain verified copy does.
            return crate::upgrade::actor::LocalCopyInstaller.install(image, slot);
        }
        let result: Result<(), String> = match tokio::runtime::Handle::try_current() {
            // On a blocking thread of the daemon's runtime.
            Ok(handle) => handle.block_on(run),
            Err(_) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run),
                Err(e) => Err(e.to_string()),
            },
        };
        result.map_err(fail)
    }
}
