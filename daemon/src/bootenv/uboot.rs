//! The U-Boot environment codec, the `fw_env.config` parser and the [`UbootEnv`] backend.
//!
//! Format of one environment copy of `size` bytes (as U-Boot and libubootenv use it):
//!
//! * 4 bytes CRC32 (IEEE, little-endian) over the data area;
//! * with a redundant environment, 1 flag byte;
//! * the data area: `name=value` strings each ending in NUL, then one more NUL; the rest of
//!   the area is padding that the CRC covers. bosun pads with `0x00`; libubootenv 0.3 leaves
//!   whatever its buffer held (old data or `0xff`), so readers must stop at the double NUL.
//!
//! Redundant copies: each write goes to the copy that is *not* current, with flag = current
//! flag + 1 (wrapping). The current copy is the one with a valid CRC; when both are valid, the
//! higher flag wins, except that `0` beats `0xff` (wrap-around), and on a tie copy 0 wins. This
//! is libubootenv's "incremental" flag scheme for files, block devices, NAND and UBI (verified
//! against fw_setenv by the interop tests), and U-Boot's own `env_import_redund` agrees.
//! NOR-flash MTD devices use a boolean scheme instead and need erases, so `/dev/mtd*` and
//! `/dev/ubi*` devices are rejected.
//!
//! `fw_env.config`: one or two lines `DEVICE OFFSET ENV_SIZE [SECTOR_SIZE [SECTORS]]`, `#`
//! comments and blank lines ignored. Numbers parse as libubootenv's `sscanf("%lli %zx %zx
//! %lx")` does: OFFSET is C-style (decimal, `0x` hex, leading-`0` octal, negative = from the
//! end of the device); sizes are hexadecimal with or without `0x`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    apply_writes, read_at, set_var, state_from_vars, state_to_vars, BootEnv, BootEnvError,
    BootState, DiskWrite,
};

/// Largest environment accepted from `fw_env.config` (real ones are 8 KiB..256 KiB); bounds
/// memory on a mistyped config.
pub const MAX_ENV_SIZE: u64 = 16 << 20;

/// Errors decoding or encoding one environment copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UbootEnvError {
    /// The copy is not larger than its header (a mistyped size in `fw_env.config`).
    #[error("environment size {size} is too small (needs more than {header} header bytes)")]
    TooSmall {
        /// The copy's size in bytes.
        size: usize,
        /// The header size: 4 (CRC) or 5 (CRC and flag, redundant).
        header: usize,
    },
    /// A copy has another length than the configured size. Not returned today: copies are read at
    /// exactly the configured size.
    #[error("copy is {got} bytes, expected {expected}")]
    WrongLength {
        /// Bytes found.
        got: usize,
        /// The configured environment size.
        expected: usize,
    },
    /// The stored CRC32 does not match the data area (torn write, or never provisioned).
    #[error("CRC32 mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// The CRC in the copy's header.
        stored: u32,
        /// The CRC of its data area.
        computed: u32,
    },
    /// The data area has no double NUL ending the variables.
    #[error("data area has no terminating double NUL")]
    Unterminated,
    /// An entry has no `=`.
    #[error("entry at data offset {offset} has no '=' (expected name=value)")]
    MissingEquals {
        /// Offset of the entry in the data area.
        offset: usize,
    },
    /// An entry is not UTF-8.
    #[error("entry at data offset {offset} is not valid UTF-8")]
    NotUtf8 {
        /// Offset of the entry in the data area.
        offset: usize,
    },
    /// Encoding: a variable name is empty or contains `=` or NUL.
    #[error("invalid variable name {0:?}: must be non-empty and contain no '=' or NUL")]
    BadName(String),
    /// Encoding: the value of this variable contains NUL.
    #[error("value of {0} contains a NUL byte")]
    BadValue(String),
    /// Encoding: the variables do not fit in the data area.
    #[error("variables need {needed} bytes, the data area holds {capacity}")]
    TooLarge {
        /// Bytes the entries need, with the terminating NULs.
        needed: usize,
        /// Size of the data area.
        capacity: usize,
    },
    /// No copy decodes (each copy's error is in the message): the environment is not provisioned or
    /// both copies are torn.
    #[error("no copy has a valid CRC ({0})")]
    NoValidCopy(String),
}

/// One decoded environment copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCopy {
    /// The flag byte (redundant environments only).
    pub flag: Option<u8>,
    /// Variables in stored order.
    pub vars: Vec<(String, String)>,
}

impl EnvCopy {
    /// The value of `name` (the first occurrence).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`: replaces the first occurrence and drops duplicates, or appends.
    pub fn set(&mut self, name: &str, value: &str) {
        set_var(&mut self.vars, name, value);
    }
}

fn header_len(redundant: bool) -> usize {
    if redundant {
        5
    } else {
        4
    }
}

/// Decodes one copy of `bytes.len()` bytes; checks the CRC first (pure).
pub fn decode(bytes: &[u8], redundant: bool) -> Result<EnvCopy, UbootEnvError> {
    let header = header_len(redundant);
    if bytes.len() <= header + 1 {
        return Err(UbootEnvError::TooSmall {
            size: bytes.len(),
            header,
        });
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data = &bytes[header..];
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(UbootEnvError::BadCrc { stored, computed });
    }
    let mut vars = Vec::new();
    let mut p = 0;
    loop {
        let len = data[p..]
            .iter()
            .position(|&b| b == 0)
            .ok_or(UbootEnvError::Unterminated)?;
        if len == 0 {
            break;
        }
        let entry = std::str::from_utf8(&data[p..p + len])
            .map_err(|_| UbootEnvError::NotUtf8 { offset: p })?;
        let (name, value) = entry
            .split_once('=')
            .ok_or(UbootEnvError::MissingEquals { offset: p })?;
        vars.push((name.to_string(), value.to_string()));
        p += len + 1;
        if p >= data.len() {
            return Err(UbootEnvError::Unterminated);
        }
    }
    Ok(EnvCopy {
        flag: redundant.then_some(bytes[4]),
        vars,
    })
}

/// Encodes `vars` into a copy of exactly `size` bytes, padding with `0x00` (pure).
pub fn encode(
    vars: &[(String, String)],
    size: usize,
    flag: Option<u8>,
) -> Result<Vec<u8>, UbootEnvError> {
    let header = header_len(flag.is_some());
    if size <= header + 1 {
        return Err(UbootEnvError::TooSmall { size, header });
    }
    let mut data = Vec::with_capacity(size);
    for (name, value) in vars {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(UbootEnvError::BadName(name.clone()));
        }
        if value.contains('\0') {
            return Err(UbootEnvError::BadValue(name.clone()));
        }
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    if vars.is_empty() {
        // An empty environment still needs the double NUL.
        data.push(0);
    }
    let capacity = size - header;
    if data.len() > capacity {
        return Err(UbootEnvError::TooLarge {
            needed: data.len(),
            capacity,
        });
    }
    data.resize(capacity, 0);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
    if let Some(f) = flag {
        out.push(f);
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// Picks the current copy of a redundant environment from the two flags of CRC-valid copies
/// (`None` = invalid copy). Returns the copy index, `None` if neither is valid (pure).
pub fn select_current(flag0: Option<u8>, flag1: Option<u8>) -> Option<usize> {
    match (flag0, flag1) {
        (None, None) => None,
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (Some(0xff), Some(0)) => Some(1),
        (Some(0), Some(0xff)) => Some(0),
        (Some(f0), Some(f1)) => Some(if f1 > f0 { 1 } else { 0 }),
    }
}

/// One line of `fw_env.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvDevice {
    /// The device or file holding the copy.
    pub path: PathBuf,
    /// Byte offset; negative counts back from the end of the device.
    pub offset: i64,
    /// Size of the copy in bytes (hexadecimal in the file).
    pub env_size: u64,
    /// Flash sector size, when given (parsed, not used: only files and block devices are
    /// supported).
    pub sector_size: Option<u64>,
    /// Number of sectors, when given (parsed, not used).
    pub sectors: Option<u64>,
}

/// A parsed `fw_env.config`: one device line, or two for a redundant environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UbootConfig {
    /// One device line (single copy) or two (redundant copies, same size).
    pub devices: Vec<EnvDevice>,
}

/// Errors parsing `fw_env.config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A device line has the wrong number of fields, an unparsable number, an env size out of range
    /// or an MTD/UBI device.
    #[error("line {line}: {msg}; expected \"DEVICE OFFSET ENV_SIZE [SECTOR_SIZE [SECTORS]]\"")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        msg: String,
    },
    /// The file has no device line.
    #[error("no device line found; expected one line (single copy) or two (redundant)")]
    Empty,
    /// A third device line.
    #[error("line {line}: more than two device lines; expected one or two")]
    TooMany {
        /// 1-based line number of the third line.
        line: usize,
    },
    /// The two copies have different sizes (in bytes).
    #[error("the two copies have different sizes ({0:#x} and {1:#x}); they must match")]
    SizeMismatch(u64, u64),
}

impl UbootConfig {
    /// Parses `fw_env.config` text (pure).
    pub fn parse(text: &str) -> Result<UbootConfig, ConfigError> {
        let mut devices: Vec<EnvDevice> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let err = |msg: String| ConfigError::Line { line, msg };
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            if fields.len() < 3 {
                return Err(err(format!("{} field(s)", fields.len())));
            }
            if fields.len() > 5 {
                return Err(err(format!("{} fields, at most 5", fields.len())));
            }
            let path = fields[0];
            if path.starts_with("/dev/mtd") || path.starts_with("/dev/ubi") {
                return Err(err(format!(
                    "{path}: MTD/UBI flash devices are not supported (files and block devices only)"
                )));
            }
            let offset = parse_c_int(fields[1])
                .ok_or_else(|| err(format!("offset {:?} is not a number", fields[1])))?;
            let hex = |idx: usize, what: &str| -> Result<Option<u64>, ConfigError> {
                fields
                    .get(idx)
                    .map(|f| {
                        parse_hex(f)
                            .ok_or_else(|| err(format!("{what} {f:?} is not a hexadecimal number")))
                    })
                    .transpose()
            };
            let env_size = hex(2, "env size")?.unwrap_or(0);
            if env_size <= 5 || env_size > MAX_ENV_SIZE {
                return Err(err(format!(
                    "env size {env_size:#x} out of range 0x6..={MAX_ENV_SIZE:#x}"
                )));
            }
            if devices.len() == 2 {
                return Err(ConfigError::TooMany { line });
            }
            devices.push(EnvDevice {
                path: PathBuf::from(path),
                offset,
                env_size,
                sector_size: hex(3, "sector size")?,
                sectors: hex(4, "sector count")?,
            });
        }
        match devices.as_slice() {
            [] => Err(ConfigError::Empty),
            [a, b] if a.env_size != b.env_size => {
                Err(ConfigError::SizeMismatch(a.env_size, b.env_size))
            }
            _ => Ok(UbootConfig { devices }),
        }
    }

    /// Whether the environment has two copies (flag byte, alternating writes).
    pub fn redundant(&self) -> bool {
        self.devices.len() == 2
    }

    /// Size of one copy in bytes.
    pub fn env_size(&self) -> usize {
        self.devices[0].env_size as usize
    }
}

/// `strtoll(s, _, 0)`: optional sign, `0x` hex, leading-`0` octal, else decimal.
fn parse_c_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `%zx`: hexadecimal with an optional `0x`.
fn parse_hex(s: &str) -> Option<u64> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(h, 16).ok()
}

/// A U-Boot environment described by a `fw_env.config`-style [`UbootConfig`], holding the
/// `bosun_*` variables (see [`crate::bootenv`]); all other variables are preserved.
///
/// Power-cut safety: with two copies, a write only touches the inactive copy and the new flag
/// makes it current, so a torn write leaves the old copy current. With a single copy the write
/// is in place: a torn write leaves a bad CRC, and U-Boot then boots with its built-in default
/// environment (slot a unless the default sets `bosun_primary`). Use a redundant environment.
///
/// An environment with no valid copy is an error (bosun does not invent one, because the
/// board's own variables such as `bootcmd` would be lost); provision it with `fw_setenv`.
#[derive(Debug, Clone)]
pub struct UbootEnv {
    /// The parsed `fw_env.config`: where the copies are.
    pub config: UbootConfig,
    /// Where the config came from (for error messages).
    pub config_path: PathBuf,
    /// The lock file shared with `fw_printenv`/`fw_setenv` (U-Boot's tools and libubootenv):
    /// shared for reads, exclusive for writes. `None` disables locking. When its directory does
    /// not exist, nobody can hold it and bosun proceeds without it.
    pub lock_file: Option<PathBuf>,
    /// How long to wait for another holder of the lock before giving up.
    pub lock_wait: Duration,
}

/// The lock file of U-Boot's `fw_printenv`/`fw_setenv` and libubootenv.
pub const DEFAULT_LOCK_FILE: &str = "/var/lock/fw_printenv.lock";

/// The decoded current copy and where the next write goes.
#[derive(Debug, Clone)]
pub struct LoadedEnv {
    /// The copy U-Boot would use (valid CRC; the higher flag when both are valid).
    pub current: EnvCopy,
    /// Index of the device holding the current copy.
    pub current_index: usize,
}

impl UbootEnv {
    /// Reads and parses `fw_env.config` at `path` (reads the file).
    pub fn from_config_file(path: impl Into<PathBuf>) -> Result<UbootEnv, BootEnvError> {
        let path = path.into();
        let text =
            std::fs::read_to_string(&path).map_err(|e| BootEnvError::io("read", &path, e))?;
        let config = UbootConfig::parse(&text).map_err(|source| BootEnvError::UbootConfig {
            path: path.clone(),
            source,
        })?;
        Ok(UbootEnv {
            config,
            config_path: path,
            lock_file: Some(PathBuf::from(DEFAULT_LOCK_FILE)),
            lock_wait: Duration::from_secs(30),
        })
    }

    /// Takes the `fw_printenv` lock (shared or exclusive), waiting up to `lock_wait`; released
    /// when the returned file is dropped. `None` when locking is off or impossible here.
    fn lock(&self, exclusive: bool) -> Result<Option<std::fs::File>, BootEnvError> {
        use rustix::fs::FlockOperation;
        use std::os::unix::fs::OpenOptionsExt;
        let Some(path) = &self.lock_file else {
            return Ok(None);
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
        {
            Ok(f) => f,
            // No lock directory (a minimal image): fw_setenv could not lock there either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BootEnvError::io("open lock file", path, e)),
        };
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        let deadline = Instant::now() + self.lock_wait;
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => return Ok(Some(file)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(BootEnvError::io(
                        "lock",
                        path,
                        std::io::Error::new(
                            std::io::ErrorKind::WouldBlock,
                            format!(
                                "held by another process (fw_setenv?) for more than {:?}",
                                self.lock_wait
                            ),
                        ),
                    ))
                }
                Err(e) => return Err(BootEnvError::io("lock", path, e.into())),
            }
        }
    }

    fn resolve_offset(dev: &EnvDevice) -> Result<u64, BootEnvError> {
        if dev.offset >= 0 {
            return Ok(dev.offset as u64);
        }
        let len = device_len(&dev.path)?;
        len.checked_sub(dev.offset.unsigned_abs()).ok_or_else(|| {
            BootEnvError::io(
                "resolve negative offset",
                &dev.path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("offset {} is before the start of the device", dev.offset),
                ),
            )
        })
    }

    fn read_copy(&self, i: usize) -> Result<Result<EnvCopy, UbootEnvError>, BootEnvError> {
        let dev = &self.config.devices[i];
        let offset = Self::resolve_offset(dev)?;
        let bytes = read_at(&dev.path, offset, self.config.env_size())?;
        Ok(decode(&bytes, self.config.redundant()))
    }

    /// Reads every copy and picks the current one (reads the devices).
    pub fn load(&self) -> Result<LoadedEnv, BootEnvError> {
        let first = self.read_copy(0)?;
        let copies = if self.config.redundant() {
            vec![first, self.read_copy(1)?]
        } else {
            vec![first]
        };
        let flags: Vec<Option<u8>> = copies
            .iter()
            .map(|c| c.as_ref().ok().map(|c| c.flag.unwrap_or(0)))
            .collect();
        let current_index = match flags.as_slice() {
            [f] => f.map(|_| 0),
            [f0, f1] => select_current(*f0, *f1),
            _ => None,
        };
        match current_index {
            Some(i) => Ok(LoadedEnv {
                current: copies[i].clone().expect("selected copy is valid"),
                current_index: i,
            }),
            None => {
                let why = copies
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match c {
                        Err(e) => format!("copy {i}: {e}"),
                        Ok(_) => format!("copy {i}: ok"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(BootEnvError::Uboot {
                    path: self.config.devices[0].path.clone(),
                    source: UbootEnvError::NoValidCopy(why),
                })
            }
        }
    }

    /// Computes the write that persists `state` without performing it (reads the devices).
    /// One [`DiskWrite`]: the inactive copy (redundant) or the only copy.
    pub fn plan(&self, state: &BootState) -> Result<Vec<DiskWrite>, BootEnvError> {
        state.check()?;
        let loaded = self.load()?;
        let mut copy = loaded.current.clone();
        for (name, value) in state_to_vars(state) {
            copy.set(name, &value);
        }
        let (target, flag) = if self.config.redundant() {
            let cur = loaded.current.flag.unwrap_or(0);
            (1 - loaded.current_index, Some(cur.wrapping_add(1)))
        } else {
            (0, None)
        };
        let dev = &self.config.devices[target];
        let data = encode(&copy.vars, self.config.env_size(), flag).map_err(|source| {
            BootEnvError::Uboot {
                path: dev.path.clone(),
                source,
            }
        })?;
        Ok(vec![DiskWrite {
            path: dev.path.clone(),
            offset: Self::resolve_offset(dev)?,
            data,
        }])
    }
}

fn device_len(path: &Path) -> Result<u64, BootEnvError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| BootEnvError::io("open", path, e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| BootEnvError::io("seek to end", path, e))
}

impl BootEnv for UbootEnv {
    fn read(&self) -> Result<BootState, BootEnvError> {
        let _lock = self.lock(false)?;
        let loaded = self.load()?;
        let path = &self.config.devices[loaded.current_index].path;
        state_from_vars(|n| loaded.current.get(n)).map_err(|e| e.at(path))
    }

    /// Writes the inactive copy (redundant) or the only copy, then fsyncs (writes to disk).
    /// Holds the `fw_printenv` lock from reading the current copy to the fsync, so the
    /// board's variables another tool set meanwhile are neither lost nor torn.
    fn write(&self, state: &BootState) -> Result<(), BootEnvError> {
        let _lock = self.lock(true)?;
        apply_writes(&self.plan(state)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn writes_wait_for_the_fw_printenv_lock_and_give_up_naming_it() {
        use super::super::{BootEnv, BootState, Slot};
        use rustix::fs::{flock, FlockOperation};
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("env.img");
        let data = encode(&vars(&[("bootcmd", "boot")]), 0x1000, None).unwrap();
        std::fs::write(&img, &data).unwrap();
        let lock = dir.path().join("fw_printenv.lock");
        let env = UbootEnv {
            config: UbootConfig::parse(&format!("{} 0 0x1000\n", img.display())).unwrap(),
            config_path: dir.path().join("fw_env.config"),
            lock_file: Some(lock.clone()),
            lock_wait: Duration::from_millis(300),
        };
        let trial = BootState::initial().with_trial(Slot::B, 2).unwrap();

        // Another fw_setenv holds the lock: bosun waits, gives up naming it, writes nothing.
        let holder = std::fs::File::create(&lock).unwrap();
        flock(&holder, FlockOperation::LockExclusive).unwrap();
        let err = env.write(&trial).unwrap_err().to_string();
        assert!(
            err.contains("fw_printenv.lock") && err.contains("another process"),
            "{err}"
        );
        assert!(
            env.read().is_err(),
            "a read waits for an exclusive holder too"
        );
        assert_eq!(std::fs::read(&img).unwrap(), data);

        // A reader (fw_printenv) holding it shared: bosun reads, but does not write.
        flock(&holder, FlockOperation::LockShared).unwrap();
        assert_eq!(env.read().unwrap(), BootState::initial());
        assert!(env.write(&trial).is_err());

        // Released: the write goes through, keeping the board's own variables.
        drop(holder);
        env.write(&trial).unwrap();
        assert_eq!(env.read().unwrap(), trial);
        assert_eq!(env.load().unwrap().current.get("bootcmd"), Some("boot"));

        // No lock directory on this system: nobody can hold it, bosun proceeds.
        let unlocked = UbootEnv {
            lock_file: Some(dir.path().join("no-such-dir/fw_printenv.lock")),
            ..env
        };
        unlocked.write(&BootState::initial()).unwrap();
        assert_eq!(unlocked.read().unwrap(), BootState::initial());
    }

    #[test]
    fn encodes_like_fw_setenv() {
        // fw_setenv -c single.config foo bar on a zeroed 0x1000 env produced this CRC.
        let b = encode(&vars(&[("foo", "bar")]), 0x1000, None).unwrap();
        assert_eq!(&b[..4], &[0xb6, 0x61, 0x24, 0x65]);
        assert_eq!(&b[4..13], b"foo=bar\0\0");
        assert!(b[13..].iter().all(|&x| x == 0));
        assert_eq!(b.len(), 0x1000);
    }

    #[test]
    fn round_trips_single_and_redundant() {
        let v = vars(&[("bootcmd", "run x; run y"), ("e", ""), ("eq", "a=b")]);
        for flag in [None, Some(7u8)] {
            let b = encode(&v, 256, flag).unwrap();
            let c = decode(&b, flag.is_some()).unwrap();
            assert_eq!(c.vars, v);
            assert_eq!(c.flag, flag);
        }
        let empty = encode(&[], 64, Some(0)).unwrap();
        assert!(decode(&empty, true).unwrap().vars.is_empty());
    }

    #[test]
    fn ignores_garbage_after_double_nul_but_checks_crc() {
        // libubootenv leaves old bytes after the terminator; the CRC covers them.
        let mut data = b"foo=x\0\0barbarbar\0\0".to_vec();
        data.resize(59, 0xff);
        let mut b = crc32fast::hash(&data).to_le_bytes().to_vec();
        b.push(4);
        b.extend_from_slice(&data);
        let c = decode(&b, true).unwrap();
        assert_eq!(c.vars, vars(&[("foo", "x")]));
        b[20] ^= 1;
        assert!(matches!(
            decode(&b, true),
            Err(UbootEnvError::BadCrc { .. })
        ));
    }

    #[test]
    fn rejects_malformed() {
        let mk = |data: &[u8]| {
            let mut d = data.to_vec();
            d.resize(32, b'z');
            let mut b = crc32fast::hash(&d).to_le_bytes().to_vec();
            b.extend_from_slice(&d);
            b
        };
        assert_eq!(
            decode(&mk(b"noequals\0\0"), false),
            Err(UbootEnvError::MissingEquals { offset: 0 })
        );
        assert_eq!(
            decode(&mk(b"a=1\0"), false),
            Err(UbootEnvError::Unterminated)
        );
        assert!(matches!(
            decode(&mk(b"a=\xff\0\0"), false),
            Err(UbootEnvError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn rejects_oversize_and_bad_names() {
        let v = vars(&[("k", &"v".repeat(100))]);
        assert!(matches!(
            encode(&v, 64, None),
            Err(UbootEnvError::TooLarge { .. })
        ));
        // Exactly full: 4 CRC + "k=" + 56 bytes + NUL + NUL = 64.
        let v = vars(&[("k", &"v".repeat(56))]);
        assert!(encode(&v, 64, None).is_ok());
        let v = vars(&[("k", &"v".repeat(57))]);
        assert!(encode(&v, 64, None).is_err());
        for name in ["", "a=b", "a\0"] {
            assert_eq!(
                encode(&vars(&[(name, "1")]), 64, None),
                Err(UbootEnvError::BadName(name.into()))
            );
        }
        assert!(matches!(
            encode(&vars(&[("a", "x\0y")]), 64, None),
            Err(UbootEnvError::BadValue(_))
        ));
    }

    #[test]
    fn selects_current_copy_like_libubootenv() {
        assert_eq!(select_current(None, None), None);
        assert_eq!(select_current(Some(5), None), Some(0));
        assert_eq!(select_current(None, Some(5)), Some(1));
        assert_eq!(select_current(Some(1), Some(2)), Some(1));
        assert_eq!(select_current(Some(3), Some(2)), Some(0));
        assert_eq!(select_current(Some(0xff), Some(0)), Some(1));
        assert_eq!(select_current(Some(0), Some(0xff)), Some(0));
        assert_eq!(select_current(Some(4), Some(4)), Some(0));
    }

    #[test]
    fn parses_fw_env_config() {
        let c = UbootConfig::parse(
            "# comment\n\n/dev/mmcblk0 0x3FE000 0x2000\n/dev/mmcblk0\t-0x4000 2000 200 0x10\n",
        )
        .unwrap();
        assert!(c.redundant());
        assert_eq!(c.env_size(), 0x2000);
        assert_eq!(
            c.devices[1],
            EnvDevice {
                path: "/dev/mmcblk0".into(),
                offset: -0x4000,
                env_size: 0x2000,
                sector_size: Some(0x200),
                sectors: Some(0x10),
            }
        );
        assert_eq!(c.devices[0].offset, 0x3FE000);
        let c = UbootConfig::parse("env.img 4096 1000\n").unwrap();
        assert!(!c.redundant());
        assert_eq!(c.devices[0].offset, 4096);
        assert_eq!(c.devices[0].env_size, 0x1000);
        assert_eq!(UbootConfig::parse("f 010 10").unwrap().devices[0].offset, 8);
    }

    #[test]
    fn rejects_bad_fw_env_config() {
        assert_eq!(UbootConfig::parse("# only\n"), Err(ConfigError::Empty));
        assert!(matches!(
            UbootConfig::parse("f 0"),
            Err(ConfigError::Line { line: 1, .. })
        ));
        assert!(matches!(
            UbootConfig::parse("f zz 100"),
            Err(ConfigError::Line { line: 1, .. })
        ));
        assert!(matches!(
            UbootConfig::parse("\nf 0 0"),
            Err(ConfigError::Line { line: 2, .. })
        ));
        assert!(matches!(
            UbootConfig::parse("f 0 1g"),
            Err(ConfigError::Line { .. })
        ));
        assert!(matches!(
            UbootConfig::parse("f 0 0x7fffffff"),
            Err(ConfigError::Line { .. })
        ));
        assert!(matches!(
            UbootConfig::parse("/dev/mtd0 0 1000"),
            Err(ConfigError::Line { .. })
        ));
        assert_eq!(
            UbootConfig::parse("f 0 100\nf 100 200"),
            Err(ConfigError::SizeMismatch(0x100, 0x200))
        );
        assert_eq!(
            UbootConfig::parse("f 0 100\nf 100 100\nf 200 100"),
            Err(ConfigError::TooMany { line: 3 })
        );
    }
}
