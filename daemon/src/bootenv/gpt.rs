//! GPT codec (headers, partition entry arrays, ChromeOS/gptprio attribute bits) and the
//! [`GptPrio`] backend.
//!
//! Layout (UEFI spec; 512-byte logical sectors only: on a 4Kn disk no table is found and
//! reads fail with [`GptError::NoValidTable`]): the primary header at LBA 1 points to its entry array
//! (LBA 2 by convention) and to the backup header at the last LBA, whose entry array sits just
//! before it. Each header carries a CRC32 of itself (with the CRC field zeroed) and of its
//! entry array. Attribute bits of an entry (bytes 48..56, little-endian u64): 48–51 priority,
//! 52–55 tries, 56 successful; other bits are preserved untouched.
//!
//! Writes keep the disk valid for `sgdisk -v`: both arrays get the same attributes, both
//! headers get fresh array and header CRCs. The write plan is ordered backup array, backup
//! header, primary array, primary header, each fsynced. A power cut at any point leaves either
//! the old primary table valid (readers use it), or a torn primary whose CRC fails while the
//! backup already holds the new state (readers, including this one, fall back to the backup).
//! A later write repairs whichever table is invalid.

use std::path::PathBuf;

use super::{
    apply_writes, read_at, BootEnv, BootEnvError, BootState, DiskWrite, GoodSlots, Slot, Trial,
};

/// Sector size this codec supports.
pub const SECTOR: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Largest entry array accepted (the usual one is 16 KiB); bounds memory on a corrupt header.
const MAX_ARRAY_BYTES: u64 = 1 << 20;

/// Errors decoding a GPT or mapping its attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    /// The sector where a header belongs does not start with `EFI PART` (no GPT, or a 4Kn disk).
    #[error("{which} header: no \"EFI PART\" signature at LBA {lba}")]
    NoSignature {
        /// `primary` or `backup`.
        which: &'static str,
        /// The sector read.
        lba: u64,
    },
    /// The header declares a size outside 92..=512 bytes.
    #[error("{which} header at LBA {lba}: header size {size} out of range 92..=512")]
    BadHeaderSize {
        /// `primary` or `backup`.
        which: &'static str,
        /// The sector read.
        lba: u64,
        /// The declared header size.
        size: u32,
    },
    /// The header's CRC32 does not match (torn or corrupt header).
    #[error("{which} header at LBA {lba}: header CRC32 mismatch")]
    BadHeaderCrc {
        /// `primary` or `backup`.
        which: &'static str,
        /// The sector read.
        lba: u64,
    },
    /// The declared entry size is not a multiple of 128.
    #[error("{which} header at LBA {lba}: entry size {size} must be a multiple of 128")]
    BadEntrySize {
        /// `primary` or `backup`.
        which: &'static str,
        /// The sector read.
        lba: u64,
        /// The declared entry size in bytes.
        size: u32,
    },
    /// The declared number of entries is 0 or above 16384.
    #[error("{which} header at LBA {lba}: {count} entries is out of range 1..=16384")]
    BadEntryCount {
        /// `primary` or `backup`.
        which: &'static str,
        /// The sector read.
        lba: u64,
        /// The declared number of entries.
        count: u32,
    },
    /// The entry array would exceed 1 MiB (a corrupt header; bounds memory).
    #[error("{which} header at LBA {lba}: entry array of {bytes} bytes exceeds 1 MiB")]
    ArrayTooLarge {
        /// `primary` or `backup`.
        which: &'static str,
        /// The sector read.
        lba: u64,
        /// The array size the header implies.
        bytes: u64,
    },
    /// The header's own LBA field disagrees with where it was read (a copied or stale header).
    #[error("{which} header read at LBA {lba} says it lives at LBA {claimed}")]
    WrongMyLba {
        /// `primary` or `backup`.
        which: &'static str,
        /// The sector read.
        lba: u64,
        /// The LBA the header names as its own.
        claimed: u64,
    },
    /// The entry array's CRC32 does not match the header's (torn or corrupt array).
    #[error("{which} partition entry array at LBA {lba}: CRC32 mismatch")]
    BadArrayCrc {
        /// `primary` or `backup`.
        which: &'static str,
        /// First sector of the array.
        lba: u64,
    },
    /// Neither the primary nor the backup table is valid; nothing is written.
    #[error("both GPT tables are invalid: primary: {primary}; backup: {backup}")]
    NoValidTable {
        /// Why the primary table is invalid.
        primary: String,
        /// Why the backup table is invalid.
        backup: String,
    },
    /// A slot partition number is 0 or beyond the table (number, table size).
    #[error("partition {0} does not exist (numbers start at 1, table has {1} entries)")]
    NoSuchPartition(u32, u32),
    /// A slot partition number names an unused entry (zero type GUID).
    #[error("partition {0} is an unused entry")]
    UnusedPartition(u32),
    /// Slots a and b were given the same partition number.
    #[error("slots a and b must be different partitions, both are {0}")]
    SamePartition(u32),
    /// The disk (size in bytes) cannot hold two GPTs.
    #[error("disk is too small ({0} bytes) for a GPT")]
    TooSmall(u64),
    /// Neither slot partition is marked successful with a non-zero priority, so the disk has no
    /// fallback to boot; bosun does not guess one.
    #[error(
        "no slot is bootable-good (successful bit 56 set and priority > 0); provision one, e.g. \
         `sgdisk -A N:set:56 -A N:set:49 DISK`"
    )]
    NoGoodSlot,
}

/// A decoded GPT header (only what the codec needs, plus its raw sector for re-encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    /// The LBA this header says it is at (1 for the primary).
    pub my_lba: u64,
    /// The LBA of the other header (the last LBA for the primary).
    pub alternate_lba: u64,
    /// First LBA of this header's entry array.
    pub entries_lba: u64,
    /// Number of entries in the array.
    pub num_entries: u32,
    /// Size of one entry in bytes (128 usually).
    pub entry_size: u32,
    /// CRC32 of the entry array, as stored.
    pub array_crc: u32,
    header_size: u32,
    raw: Vec<u8>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn header_crc(raw: &[u8], size: usize) -> u32 {
    let mut h = raw[..size].to_vec();
    h[16..20].fill(0);
    crc32fast::hash(&h)
}

impl GptHeader {
    /// Decodes and validates a header sector read from `lba` (pure). `which` names it in errors.
    pub fn parse(sector: &[u8], lba: u64, which: &'static str) -> Result<GptHeader, GptError> {
        if sector.len() < SECTOR as usize || &sector[..8] != SIGNATURE {
            return Err(GptError::NoSignature { which, lba });
        }
        let header_size = le32(sector, 12);
        if !(92..=SECTOR as u32).contains(&header_size) {
            return Err(GptError::BadHeaderSize {
                which,
                lba,
                size: header_size,
            });
        }
        if header_crc(sector, header_size as usize) != le32(sector, 16) {
            return Err(GptError::BadHeaderCrc { which, lba });
        }
        let entry_size = le32(sector, 84);
        if entry_size < 128 || !entry_size.is_multiple_of(128) || entry_size > 4096 {
            return Err(GptError::BadEntrySize {
                which,
                lba,
                size: entry_size,
            });
        }
        let num_entries = le32(sector, 80);
        if num_entries == 0 || num_entries > 16384 {
            return Err(GptError::BadEntryCount {
                which,
                lba,
                count: num_entries,
            });
        }
        let bytes = u64::from(num_entries) * u64::from(entry_size);
        if bytes > MAX_ARRAY_BYTES {
            return Err(GptError::ArrayTooLarge { which, lba, bytes });
        }
        let my_lba = le64(sector, 24);
        if my_lba != lba {
            return Err(GptError::WrongMyLba {
                which,
                lba,
                claimed: my_lba,
            });
        }
        Ok(GptHeader {
            my_lba,
            alternate_lba: le64(sector, 32),
            entries_lba: le64(sector, 72),
            num_entries,
            entry_size,
            array_crc: le32(sector, 88),
            header_size,
            raw: sector[..SECTOR as usize].to_vec(),
        })
    }

    /// Bytes of the entry array this header describes.
    pub fn array_len(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }

    /// Checks `array` against the header's array CRC (pure).
    pub fn check_array(&self, array: &[u8], which: &'static str) -> Result<(), GptError> {
        if array.len() != self.array_len() || crc32fast::hash(array) != self.array_crc {
            return Err(GptError::BadArrayCrc {
                which,
                lba: self.entries_lba,
            });
        }
        Ok(())
    }

    /// This header relocated (`my_lba`, `alternate_lba`, `entries_lba`) and describing
    /// `array`, encoded as a sector with fresh array and header CRCs (pure).
    pub fn encode(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        array: &[u8],
    ) -> Vec<u8> {
        let mut raw = self.raw.clone();
        raw[24..32].copy_from_slice(&my_lba.to_le_bytes());
        raw[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        raw[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        raw[88..92].copy_from_slice(&crc32fast::hash(array).to_le_bytes());
        let crc = header_crc(&raw, self.header_size as usize);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        raw
    }
}

/// The gptprio fields of a partition's attribute word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrioAttrs {
    /// 0..=15; 0 = never boot.
    pub priority: u8,
    /// 0..=15; boot attempts left while not successful.
    pub tries: u8,
    /// Bit 56: the slot booted successfully (known good).
    pub successful: bool,
}

const PRIO_MASK: u64 = 0x1ff << 48;

impl PrioAttrs {
    /// The gptprio fields of an attribute word (other bits ignored).
    pub fn from_bits(attrs: u64) -> PrioAttrs {
        PrioAttrs {
            priority: ((attrs >> 48) & 0xf) as u8,
            tries: ((attrs >> 52) & 0xf) as u8,
            successful: (attrs >> 56) & 1 == 1,
        }
    }

    /// `attrs` with bits 48–56 replaced by these fields (other bits kept).
    pub fn apply(&self, attrs: u64) -> u64 {
        (attrs & !PRIO_MASK)
            | (u64::from(self.priority & 0xf) << 48)
            | (u64::from(self.tries & 0xf) << 52)
            | (u64::from(self.successful) << 56)
    }
}

/// Attribute word of entry `index` (0-based) in an entry array (pure).
pub fn entry_attributes(array: &[u8], entry_size: u32, index: usize) -> u64 {
    le64(array, index * entry_size as usize + 48)
}

fn entry_is_used(array: &[u8], entry_size: u32, index: usize) -> bool {
    let at = index * entry_size as usize;
    array[at..at + 16].iter().any(|&b| b != 0)
}

fn set_entry_attributes(array: &mut [u8], entry_size: u32, index: usize, attrs: u64) {
    let at = index * entry_size as usize + 48;
    array[at..at + 8].copy_from_slice(&attrs.to_le_bytes());
}

/// Priorities bosun writes (see the contract in [`crate::bootenv`]).
const PRIO_TRIAL: u8 = 3;
const PRIO_PRIMARY: u8 = 2;
const PRIO_FALLBACK: u8 = 1;

/// Maps a state to the attributes of slots a and b (pure).
pub fn attrs_for_state(state: &BootState) -> (PrioAttrs, PrioAttrs) {
    let one = |slot: Slot| -> PrioAttrs {
        match state.trial {
            Some(t) if t.slot == slot => PrioAttrs {
                priority: PRIO_TRIAL,
                tries: t.tries_left.min(15),
                successful: false,
            },
            _ if slot == state.primary => PrioAttrs {
                priority: PRIO_PRIMARY,
                tries: 0,
                successful: true,
            },
            _ if state.is_good(slot) => PrioAttrs {
                priority: PRIO_FALLBACK,
                tries: 0,
                successful: true,
            },
            _ => PrioAttrs::default(),
        }
    };
    (one(Slot::A), one(Slot::B))
}

/// Maps the attributes of slots a and b to a state (pure). Good = successful with a non-zero
/// priority; primary = the good slot with the higher priority (a on a tie); trial = an
/// unsuccessful slot with a higher priority than the primary (tries 0 = exhausted).
pub fn state_from_attrs(a: PrioAttrs, b: PrioAttrs) -> Result<BootState, GptError> {
    let good = GoodSlots {
        a: a.successful && a.priority > 0,
        b: b.successful && b.priority > 0,
    };
    let primary = match (good.a, good.b) {
        (true, true) if b.priority > a.priority => Slot::B,
        (true, _) => Slot::A,
        (false, true) => Slot::B,
        (false, false) => return Err(GptError::NoGoodSlot),
    };
    let (p, o) = match primary {
        Slot::A => (a, b),
        Slot::B => (b, a),
    };
    let trial = (!o.successful && o.priority > p.priority).then_some(Trial {
        slot: primary.other(),
        tries_left: o.tries,
    });
    Ok(BootState {
        primary,
        trial,
        good,
    })
}

/// A whole-disk GPT whose two slot partitions carry the gptprio attributes.
#[derive(Debug, Clone)]
pub struct GptPrio {
    /// Disk image file or block device.
    pub disk: PathBuf,
    /// Partition numbers (1-based, as `sgdisk` counts) of slots a and b.
    pub part_a: u32,
    /// Partition number of slot b (1-based).
    pub part_b: u32,
}

/// Both tables as read from disk, each with the reason it is invalid.
struct Tables {
    /// Where the backup header is (or belongs): the primary's `alternate_lba` when the
    /// primary is valid and points inside the disk, else the last LBA.
    backup_lba: u64,
    primary: Result<(GptHeader, Vec<u8>), GptError>,
    backup: Result<(GptHeader, Vec<u8>), GptError>,
}

impl GptPrio {
    /// The backend for slot partitions `part_a` and `part_b` of `disk`. Touches nothing.
    pub fn new(disk: impl Into<PathBuf>, part_a: u32, part_b: u32) -> GptPrio {
        GptPrio {
            disk: disk.into(),
            part_a,
            part_b,
        }
    }

    fn err(&self, source: GptError) -> BootEnvError {
        BootEnvError::Gpt {
            path: self.disk.clone(),
            source,
        }
    }

    fn read_table(
        &self,
        lba: u64,
        which: &'static str,
    ) -> Result<Result<(GptHeader, Vec<u8>), GptError>, BootEnvError> {
        let sector = read_at(&self.disk, lba * SECTOR, SECTOR as usize)?;
        let header = match GptHeader::parse(&sector, lba, which) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let array = read_at(&self.disk, header.entries_lba * SECTOR, header.array_len())?;
        Ok(header.check_array(&array, which).map(|()| (header, array)))
    }

    fn read_tables(&self) -> Result<Tables, BootEnvError> {
        use std::io::{Seek, SeekFrom};
        let len = std::fs::File::open(&self.disk)
            .and_then(|mut f| f.seek(SeekFrom::End(0)))
            .map_err(|e| BootEnvError::io("measure", &self.disk, e))?;
        if len < 4 * SECTOR {
            return Err(self.err(GptError::TooSmall(len)));
        }
        let last_lba = len / SECTOR - 1;
        let primary = self.read_table(1, "primary")?;
        let backup_lba = match &primary {
            Ok((h, _)) if h.alternate_lba > 1 && h.alternate_lba <= last_lba => h.alternate_lba,
            _ => last_lba,
        };
        Ok(Tables {
            backup_lba,
            primary,
            backup: self.read_table(backup_lba, "backup")?,
        })
    }

    /// The authoritative table: the primary if valid, else the backup.
    fn authoritative<'t>(&self, t: &'t Tables) -> Result<&'t (GptHeader, Vec<u8>), BootEnvError> {
        match (&t.primary, &t.backup) {
            (Ok(p), _) => Ok(p),
            (Err(_), Ok(b)) => Ok(b),
            (Err(p), Err(b)) => Err(self.err(GptError::NoValidTable {
                primary: p.to_string(),
                backup: b.to_string(),
            })),
        }
    }

    fn slot_indices(
        &self,
        header: &GptHeader,
        array: &[u8],
    ) -> Result<(usize, usize), BootEnvError> {
        if self.part_a == self.part_b {
            return Err(self.err(GptError::SamePartition(self.part_a)));
        }
        let index = |n: u32| -> Result<usize, BootEnvError> {
            if n == 0 || n > header.num_entries {
                return Err(self.err(GptError::NoSuchPartition(n, header.num_entries)));
            }
            let i = n as usize - 1;
            if !entry_is_used(array, header.entry_size, i) {
                return Err(self.err(GptError::UnusedPartition(n)));
            }
            Ok(i)
        };
        Ok((index(self.part_a)?, index(self.part_b)?))
    }

    /// The gptprio attributes of slots a and b (reads the disk).
    pub fn read_attrs(&self) -> Result<(PrioAttrs, PrioAttrs), BootEnvError> {
        let tables = self.read_tables()?;
        let (header, array) = self.authoritative(&tables)?;
        let (ia, ib) = self.slot_indices(header, array)?;
        Ok((
            PrioAttrs::from_bits(entry_attributes(array, header.entry_size, ia)),
            PrioAttrs::from_bits(entry_attributes(array, header.entry_size, ib)),
        ))
    }

    /// Computes the ordered writes that persist `state` without performing them (reads the
    /// disk): backup array, backup header, primary array, primary header.
    pub fn plan(&self, state: &BootState) -> Result<Vec<DiskWrite>, BootEnvError> {
        state.check()?;
        let tables = self.read_tables()?;
        let (header, array) = self.authoritative(&tables)?;
        let (ia, ib) = self.slot_indices(header, array)?;
        let (attrs_a, attrs_b) = attrs_for_state(state);
        let mut array = array.clone();
        let es = header.entry_size;
        let old_a = entry_attributes(&array, es, ia);
        set_entry_attributes(&mut array, es, ia, attrs_a.apply(old_a));
        let old_b = entry_attributes(&array, es, ib);
        set_entry_attributes(&mut array, es, ib, attrs_b.apply(old_b));

        // Where each table lives: from the valid headers, or the standard places when one
        // is being repaired (primary array at LBA 2, backup array just before the last LBA).
        let array_sectors = (array.len() as u64).div_ceil(SECTOR);
        let primary_entries = match &tables.primary {
            Ok((h, _)) => h.entries_lba,
            Err(_) => 2,
        };
        let backup_lba = tables.backup_lba;
        let backup_entries = match &tables.backup {
            Ok((h, _)) => h.entries_lba,
            Err(_) => backup_lba.saturating_sub(array_sectors),
        };
        let backup_header = header.encode(backup_lba, 1, backup_entries, &array);
        let primary_header = header.encode(1, backup_lba, primary_entries, &array);
        let w = |lba: u64, data: Vec<u8>| DiskWrite {
            path: self.disk.clone(),
            offset: lba * SECTOR,
            data,
        };
        Ok(vec![
            w(backup_entries, array.clone()),
            w(backup_lba, backup_header),
            w(primary_entries, array),
            w(1, primary_header),
        ])
    }
}

impl BootEnv for GptPrio {
    fn read(&self) -> Result<BootState, BootEnvError> {
        let (a, b) = self.read_attrs()?;
        state_from_attrs(a, b).map_err(|e| self.err(e))
    }

    /// Writes both GPT tables in crash-safe order, fsyncing each step (writes to disk).
    fn write(&self, state: &BootState) -> Result<(), BootEnvError> {
        apply_writes(&self.plan(state)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prio_bits_match_sgdisk_numbering() {
        // sgdisk -A 2:set:48 -A 2:set:56 shows "Attribute flags: 0101000000000000".
        let a = PrioAttrs::from_bits(0x0101_0000_0000_0000);
        assert_eq!(
            a,
            PrioAttrs {
                priority: 1,
                tries: 0,
                successful: true
            }
        );
        let t = PrioAttrs {
            priority: 15,
            tries: 15,
            successful: false,
        };
        assert_eq!(t.apply(0), 0x00ff_0000_0000_0000);
        // Other bits (e.g. 0 "required", 60 "read-only") are preserved.
        let other = 1 | (1 << 60) | (1 << 47) | (1 << 57);
        assert_eq!(t.apply(other | PRIO_MASK), other | 0x00ff_0000_0000_0000);
        assert_eq!(PrioAttrs::from_bits(t.apply(other)), t);
    }

    #[test]
    fn state_attr_mapping_round_trips() {
        let base = BootState::initial();
        let states = [
            base,
            base.with_trial(Slot::B, 3).unwrap(),
            base.with_trial(Slot::B, 15).unwrap(),
            base.with_trial(Slot::B, 1).unwrap().committed(Slot::B),
            base.committed(Slot::B).marked_bad(Slot::A).unwrap(),
            BootState {
                primary: Slot::B,
                trial: Some(Trial {
                    slot: Slot::A,
                    tries_left: 0,
                }),
                good: GoodSlots { a: false, b: true },
            },
        ];
        for s in states {
            let (a, b) = attrs_for_state(&s);
            assert_eq!(state_from_attrs(a, b).unwrap(), s, "{s}");
        }
    }

    #[test]
    fn gptprio_picks_the_same_slot_as_next_boot() {
        // What a gptprio bootloader boots: highest priority among successful or tries > 0.
        fn gptprio(a: PrioAttrs, b: PrioAttrs) -> Slot {
            let ok = |p: PrioAttrs| p.priority > 0 && (p.successful || p.tries > 0);
            match (ok(a), ok(b)) {
                (true, true) if b.priority > a.priority => Slot::B,
                (true, _) => Slot::A,
                _ => Slot::B,
            }
        }
        let t = BootState::initial().with_trial(Slot::B, 2).unwrap();
        for s in [
            BootState::initial(),
            t,
            t.committed(Slot::B),
            t.marked_bad(Slot::B).unwrap(),
        ] {
            let (a, b) = attrs_for_state(&s);
            assert_eq!(gptprio(a, b), s.next_boot(), "{s}");
        }
        let mut exhausted = t;
        exhausted.trial.as_mut().unwrap().tries_left = 0;
        let (a, b) = attrs_for_state(&exhausted);
        assert_eq!(gptprio(a, b), Slot::A);
    }

    #[test]
    fn no_good_slot_is_an_error() {
        assert_eq!(
            state_from_attrs(PrioAttrs::default(), PrioAttrs::default()),
            Err(GptError::NoGoodSlot)
        );
        let unsuccessful = PrioAttrs {
            priority: 5,
            tries: 2,
            successful: false,
        };
        assert_eq!(
            state_from_attrs(unsuccessful, PrioAttrs::default()),
            Err(GptError::NoGoodSlot)
        );
    }

    fn header_sector() -> Vec<u8> {
        let mut s = vec![0u8; SECTOR as usize];
        s[..8].copy_from_slice(SIGNATURE);
        s[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        s[12..16].copy_from_slice(&92u32.to_le_bytes());
        s[80..84].copy_from_slice(&4u32.to_le_bytes());
        s[84..88].copy_from_slice(&128u32.to_le_bytes());
        s[24..32].copy_from_slice(&1u64.to_le_bytes());
        s
    }

    #[test]
    fn header_encode_parse_round_trip_and_crc_checks() {
        let mut raw = header_sector();
        let crc = header_crc(&raw, 92);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        let h = GptHeader::parse(&raw, 1, "primary").unwrap();
        assert!(matches!(
            GptHeader::parse(&raw, 7, "backup"),
            Err(GptError::WrongMyLba { claimed: 1, .. })
        ));
        let array = vec![7u8; 4 * 128];
        let enc = h.encode(99, 1, 95, &array);
        let h2 = GptHeader::parse(&enc, 99, "backup").unwrap();
        assert_eq!((h2.my_lba, h2.alternate_lba, h2.entries_lba), (99, 1, 95));
        h2.check_array(&array, "backup").unwrap();
        let mut torn = array.clone();
        torn[300] ^= 1;
        assert!(matches!(
            h2.check_array(&torn, "backup"),
            Err(GptError::BadArrayCrc { .. })
        ));
        let mut bad = enc.clone();
        bad[40] ^= 1;
        assert!(matches!(
            GptHeader::parse(&bad, 99, "backup"),
            Err(GptError::BadHeaderCrc { .. })
        ));
        let mut nosig = enc;
        nosig[0] = b'X';
        assert!(matches!(
            GptHeader::parse(&nosig, 99, "backup"),
            Err(GptError::NoSignature { .. })
        ));
    }

    #[test]
    fn rejects_bad_header_fields() {
        let mut raw = header_sector();
        raw[84..88].copy_from_slice(&100u32.to_le_bytes());
        let crc = header_crc(&raw, 92);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            GptHeader::parse(&raw, 1, "primary"),
            Err(GptError::BadEntrySize { size: 100, .. })
        ));
        let mut raw = header_sector();
        raw[80..84].copy_from_slice(&16384u32.to_le_bytes());
        raw[84..88].copy_from_slice(&256u32.to_le_bytes());
        let crc = header_crc(&raw, 92);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            GptHeader::parse(&raw, 1, "primary"),
            Err(GptError::ArrayTooLarge { .. })
        ));
    }
}
