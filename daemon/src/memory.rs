//! Giving back the code pages that a burst of work mapped in.
//!
//! An apply (config parsing, rendering, planning, the transaction, health checks) runs code that
//! the idle loop never touches again: several MiB of bosun's own executable. The kernel keeps
//! those pages mapped in the daemon until memory runs short, and a mapped executable page is
//! among the last it reclaims. On a 1 GB node that is memory k3s could use. So after a step
//! that applied or re-planned, bosun asks the kernel to page its own read-only executable
//! mappings out (`madvise(MADV_PAGEOUT)`, Linux ≥ 5.4). Clean file pages
//! are simply dropped; the idle loop faults back the few it needs, and the next apply re-reads
//! the rest from disk (a few MiB, once per apply).
//!
//! When: after a loop step that applied or re-planned ([`CodePages::note_work`]), at most once
//! per [`MIN_GAP`] so that a commit rejected at every poll does not re-read the code from disk
//! every minute. Idle polls never release. A release the gap held back is not dropped: the
//! daemon loop wakes at [`CodePages::next_release`] to do it, so any idle period longer than
//! [`MIN_GAP`] ends with the code paged out, however many applies came before it.
//!
//! Heap: freed memory of a burst (libgit2's pack indexer takes about 240 bytes per object of a
//! fetch, 12 MiB for a first fetch of a 50,000-file repo, on a blocking-pool thread whose malloc
//! arena keeps it) is handed back with `malloc_trim(0)` ([`trim_heap`]) after every step that did
//! work and after every fetch that received a pack. Unlike the code page-out this costs no disk
//! reads, so it is not rate-limited.
//!
//! Invariants:
//! - Only mappings of bosun's own executable (matched by inode) without write permission are
//!   advised; a read-only mapping of another file with the same inode number would only be
//!   paged out too, which is as harmless. Their contents never change: a clean file page is re-read from the file, a relocated (copy-on-
//!   write) page can only go to swap. Nothing here can change what the program reads.
//! - Every failure (no `/proc`, an old kernel without `MADV_PAGEOUT`) just leaves the pages
//!   where they are.
//! - The kernel only pages out what this process maps alone: a code page that another running
//!   process of the same executable file also maps (a `bosun status` at that moment, or a
//!   second daemon from the same file on a test machine) stays resident. Benchmarks that run
//!   several daemons at once give each its own copy of the binary (`bench/daemon/README.md`).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Least time between two releases.
pub const MIN_GAP: Duration = Duration::from_secs(300);

/// Decides when to release. Pure (time is passed in).
#[derive(Debug, Clone, Default)]
pub struct Releaser {
    pending: bool,
    last: Option<Instant>,
}

impl Releaser {
    /// A step did work that ran code the idle loop does not (apply, re-plan).
    pub fn note_work(&mut self) {
        self.pending = true;
    }

    /// When a held-back release becomes due: `None` when nothing is pending, or when it may
    /// happen at once (the next [`Releaser::due`] releases).
    pub fn next_due(&self) -> Option<Instant> {
        match (self.pending, self.last) {
            (true, Some(last)) => Some(last + MIN_GAP),
            _ => None,
        }
    }

    /// Called after each step; true means "release now".
    pub fn due(&mut self, now: Instant) -> bool {
        let gap_ok = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= MIN_GAP);
        if self.pending && gap_ok {
            self.pending = false;
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// Releases for the running process.
#[derive(Debug, Default)]
pub struct CodePages {
    releaser: Releaser,
    /// Work was done since the last step: trim the heap after it.
    trim: bool,
}

impl CodePages {
    /// See [`Releaser::note_work`].
    pub fn note_work(&mut self) {
        self.releaser.note_work();
        self.trim = true;
    }

    /// When the loop must wake to do a release the gap held back (see [`Releaser::next_due`]).
    pub fn next_release(&self) -> Option<Instant> {
        self.releaser.next_due()
    }

    /// Call after each step of the daemon loop. On a release, reads `/proc/self/maps` and
    /// advises the kernel; returns the bytes advised.
    pub fn after_step(&mut self) -> Option<u64> {
        if std::mem::take(&mut self.trim) {
            trim_heap();
        }
        if !self.releaser.due(Instant::now()) {
            return None;
        }
        let advised = release_exe_pages();
        // At most once per MIN_GAP: worth a line at the default level.
        tracing::info!(
            advised_kib = advised / 1024,
            "paged out bosun's code pages after a burst of work"
        );
        Some(advised)
    }
}

/// Returns the free memory of every malloc arena to the kernel (glibc's `malloc_trim(0)`: the
/// free top of each heap and the whole free pages inside it). Does nothing on other C
/// libraries. Advises the kernel; the next allocations fault fresh zero pages.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes the arenas' locks itself and only releases memory
        // no allocation uses; it is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// One mapping line of `/proc/<pid>/maps` that may be advised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First address of the mapping.
    pub start: usize,
    /// One past its last address.
    pub end: usize,
}

/// The read-only mappings of the file with inode `inode` in a `/proc/<pid>/maps` text. Pure.
pub fn read_only_mappings_of(maps: &str, inode: u64) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (_offset, _dev, ino) = (f.next()?, f.next()?, f.next()?);
            if ino.parse::<u64>().ok()? != inode || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
            })
        })
        .filter(|m| m.end > m.start)
        .collect()
}

/// Advises `MADV_PAGEOUT` on the read-only mappings of the running executable; returns the
/// bytes advised (0 when anything is unavailable).
#[allow(unsafe_code)] // madvise on our own mappings: see the SAFETY comment below.
fn release_exe_pages() -> u64 {
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0u64;
    for m in read_only_mappings_of(&maps, exe.ino()) {
        let len = m.end - m.start;
        // SAFETY: the range is a whole mapping of this process, taken from the kernel's own
        // list, and bosun never unmaps its executable. MADV_PAGEOUT does not change memory
        // contents: it only lets the kernel reclaim the pages now (clean file pages are
        // re-read on the next access; see the module invariants).
        let result = unsafe {
            rustix::mm::madvise(
                m.start as *mut std::ffi::c_void,
                len,
                rustix::mm::Advice::LinuxPageOut,
            )
        };
        if result.is_ok() {
            advised += len as u64;
        }
    }
    advised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_after_work_at_most_once_per_gap() {
        let t0 = Instant::now();
        let mut r = Releaser::default();
        assert!(!r.due(t0), "idle steps never release");
        r.note_work();
        assert!(r.due(t0), "the first apply releases at once");
        assert!(!r.due(t0), "once");
        assert_eq!(r.next_due(), None, "released, nothing pending");
        r.note_work();
        assert!(!r.due(t0 + MIN_GAP / 2), "too soon after the last release");
        assert!(!r.due(t0 + MIN_GAP / 2), "still too soon");
        assert_eq!(
            r.next_due(),
            Some(t0 + MIN_GAP),
            "the held release is scheduled for when the gap ends"
        );
        assert!(
            r.due(t0 + MIN_GAP),
            "the held release happens once the gap has passed"
        );
        assert_eq!(r.next_due(), None);
        assert!(!r.due(t0 + MIN_GAP * 3), "nothing pending");
    }

    #[test]
    fn only_read_only_mappings_of_the_executable() {
        let maps = "\
55d0c0000000-55d0c02ce000 r--p 00000000 fd:01 4242   /usr/local/bin/bosun
55d0c02ce000-55d0c0c5a000 r-xp 002ce000 fd:01 4242   /usr/local/bin/bosun
55d0c0c5a000-55d0c0cc8000 rw-p 00c5a000 fd:01 4242   /usr/local/bin/bosun
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 777    /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 r--p 00000000 fd:01 4242   /usr/local/bin/bosun (deleted)
";
        assert_eq!(
            read_only_mappings_of(maps, 4242),
            vec![
                Mapping {
                    start: 0x55d0c0000000,
                    end: 0x55d0c02ce000
                },
                Mapping {
                    start: 0x55d0c02ce000,
                    end: 0x55d0c0c5a000
                },
                Mapping {
                    start: 0x7f0000200000,
                    end: 0x7f0000300000
                },
            ]
        );
        assert!(read_only_mappings_of(maps, 1).is_empty());
        assert!(read_only_mappings_of("garbage\n\n", 4242).is_empty());
    }

    #[test]
    fn a_release_keeps_the_program_working() {
        // The real thing on this process: afterwards the code and read-only data it maps are
        // still there (a page-out that lost contents would crash or change this result).
        let before: u64 = (1..=10_000u64).map(|i| i * i % 7).sum();
        let mut pages = CodePages::default();
        assert_eq!(pages.after_step(), None, "no work, no release");
        // The heap stays usable after a trim (freed memory only).
        let kept: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
        drop((0..64).map(|_| vec![0u8; 64 << 10]).collect::<Vec<_>>());
        trim_heap();
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|b| *b == i as u8)));
        pages.note_work();
        let advised = pages.after_step();
        let after: u64 = (1..=10_000u64).map(|i| i * i % 7).sum();
        assert_eq!(before, after);
        let exe = std::fs::metadata("/proc/self/exe").unwrap().ino();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let expected: u64 = read_only_mappings_of(&maps, exe)
            .iter()
            .map(|m| (m.end - m.start) as u64)
            .sum();
        assert!(expected > 0, "the test binary maps itself read-only");
        assert_eq!(advised, Some(expected));
    }
}
