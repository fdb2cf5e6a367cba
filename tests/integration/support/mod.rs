//! Helpers shared by integration tests.

pub mod fleet;
pub mod fleetlock;
pub mod git;
pub mod image_server;
pub mod kube;
pub mod tls;

use std::collections::BTreeMap;
use std::path::Path;

use sha2::Digest;

/// Every entry under `dir`: directories with their mode, files with the sha256 of their bytes,
/// mode and owner. Two equal trees mean byte-identical files with the same metadata.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if m.is_dir() {
                out.insert(format!("{rel}/"), format!("{:o}", m.mode()));
                stack.push(p);
            } else {
                let h = hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap()));
                out.insert(rel, format!("{h} {:o} {}:{}", m.mode(), m.uid(), m.gid()));
            }
        }
    }
    out
}

/// Spawns `qemu` (whose serial console goes to the file `serial`) and waits for it to exit
/// successfully within 120 s; returns the serial log with `\r` removed. Panics with the log
/// when qemu cannot start, fails, or runs too long (`what` says what should have happened).
pub fn run_qemu(mut qemu: std::process::Command, serial: &Path, what: &str) -> String {
    use std::time::{Duration, Instant};
    let read_log = || {
        std::fs::read_to_string(serial)
            .unwrap_or_default()
            .replace('\r', "")
    };
    let mut child = qemu.spawn().unwrap_or_else(|e| {
        panic!("cannot run qemu-system-x86_64 ({e}): install the Debian package qemu-system-x86")
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "{what} within 120 s did not happen; serial log:\n{}",
                read_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = read_log();
    assert!(
        status.success(),
        "qemu failed ({status}); serial log:\n{log}"
    );
    log
}

/// Runs `cmd` under GNU time (`/usr/bin/time -f %M`); returns its output and its peak RSS in
/// KiB. The time report goes to a file in `dir` so it cannot mix with the command's stderr.
pub fn peak_rss_kib(cmd: &std::process::Command, dir: &Path) -> (std::process::Output, u64) {
    let report = dir.join("time.out");
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .expect("/usr/bin/time (Debian package `time`) must be installed");
    let text = std::fs::read_to_string(&report).unwrap();
    let kib = text
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected /usr/bin/time output {text:?}"));
    (out, kib)
}
