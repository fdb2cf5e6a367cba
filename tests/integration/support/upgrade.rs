//! Test node for A/B upgrade scenarios: slot files, a boot environment on a real medium (GRUB
//! env block, redundant U-Boot env, GPT disk), a kernel command line file, and a bootloader
//! simulator that applies the boot contract of `boot/grub.cfg` / `boot/boot.scr.txt` /
//! gptprio to that medium with the real tools (`grub-editenv`, `fw_setenv`, `sgdisk`), the way
//! the bootloader's own `save_env`/`saveenv`/tries decrement would.
//!
//! Power cuts: [`Power`] is a budget of effects shared by [`CutStore`], [`CutEnv`] and
//! [`CutInstaller`]; the effect that exhausts it is torn (half-written) and fails, like a
//! power loss in the middle of it, and every later effect fails untouched.

#![allow(dead_code)]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bosun::bootenv::{
    BootEnv, BootEnvError, BootState, DiskWrite, GoodSlots, GptPrio, GrubEnv, Slot, UbootEnv,
};
use bosun::config::model::UpgradeConfig;
use bosun::testing::RecordingRunner;
use bosun::upgrade::actor::{
    FileStateStore, InstallFailure, Installer, LocalCopyInstaller, SlotPaths, StateStore,
    UpgradeActor, UpgradeError,
};
use bosun::upgrade::machine::UpgradeState;
use sha2::{Digest, Sha256};

use crate::bootenv_interop::{tool, UbootFixture};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Grub,
    Uboot,
    Gpt,
}

pub const ALL_BACKENDS: [Backend; 3] = [Backend::Grub, Backend::Uboot, Backend::Gpt];

/// Slot size in bytes; images are smaller.
const SLOT_SIZE: usize = 96 * 1024;

/// A fake OS image: a recognisable header and deterministic content.
#[derive(Debug, Clone)]
pub struct Image {
    pub version: String,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl Image {
    pub fn config(&self, tries: u8) -> UpgradeConfig {
        UpgradeConfig {
            version: self.version.clone(),
            image: self.path.display().to_string(),
            sha256: Sha256::digest(&self.bytes).into(),
            size: Some(self.bytes.len() as u64),
            compression: None,
            tries,
        }
    }

    pub fn sha_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }
}

/// An image served zstd-compressed (see [`Node::zstd_image`]).
#[derive(Debug, Clone)]
pub struct ZstdImage {
    /// The uncompressed image (what a slot holds after the install).
    pub image: Image,
    pub zst: PathBuf,
    /// SHA-256 of the compressed file (what `upgrade.sha256` names).
    pub zst_sha_hex: String,
    pub zst_len: u64,
}

/// A GPT disk made once per test process with sgdisk (which sleeps a second per write) and
/// provisioned as boot/README.md says: slot a (partition 2) good primary. Nodes copy it.
fn gpt_template() -> &'static Path {
    static TEMPLATE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let disk = crate::bootenv_interop::gpt_disk(dir.path());
            tool(
                "sgdisk",
                &["-A", "2:set:56", "-A", "2:set:49", disk.to_str().unwrap()],
            );
            (dir, disk)
        })
        .1
}

pub enum Medium {
    Grub(PathBuf),
    Uboot(UbootFixture),
    Gpt(PathBuf),
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub medium: Medium,
    pub slots: SlotPaths,
    pub cmdline: PathBuf,
    pub state_dir: PathBuf,
    pub images: Vec<Image>,
    pub runner: Arc<RecordingRunner>,
    /// Boots the simulator performed, as the slots it chose.
    pub boots: Vec<Slot>,
}

impl Node {
    /// A node booted from slot a, which holds image `v1` (good, primary). With
    /// `old_b_good`, slot b holds image `v0` and is marked good too (a previous version).
    pub fn new(backend: Backend, old_b_good: bool) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let slots = SlotPaths {
            a: dir.path().join("slot-a.img"),
            b: dir.path().join("slot-b.img"),
        };
        let medium = match backend {
            Backend::Grub => {
                let p = dir.path().join("bosun.env");
                tool("grub-editenv", &[p.to_str().unwrap(), "create"]);
                Medium::Grub(p)
            }
            Backend::Uboot => {
                let fx = UbootFixture::new(true, 0xff);
                fx.setenv("bootcmd", "run distro_bootcmd");
                Medium::Uboot(fx)
            }
            Backend::Gpt => {
                let disk = dir.path().join("disk.img");
                std::fs::copy(gpt_template(), &disk).unwrap();
                Medium::Gpt(disk)
            }
        };
        let mut node = Node {
            cmdline: dir.path().join("cmdline"),
            state_dir: dir.path().join("state"),
            dir,
            backend,
            medium,
            slots,
            images: Vec::new(),
            runner: Arc::new(RecordingRunner::new()),
            boots: Vec::new(),
        };
        let v0 = node.image("v0");
        let v1 = node.image("v1");
        let mut a = v1.bytes.clone();
        a.resize(SLOT_SIZE, 0);
        std::fs::write(&node.slots.a, a).unwrap();
        let mut b = if old_b_good {
            v0.bytes.clone()
        } else {
            Vec::new()
        };
        b.resize(SLOT_SIZE, 0);
        std::fs::write(&node.slots.b, b).unwrap();
        node.env()
            .write(&BootState {
                primary: Slot::A,
                trial: None,
                good: GoodSlots {
                    a: true,
                    b: old_b_good,
                },
            })
            .unwrap();
        node.set_booted(Slot::A);
        node
    }

    /// Creates (once) the image file of `version`.
    pub fn image(&mut self, version: &str) -> Image {
        if let Some(i) = self.images.iter().find(|i| i.version == version) {
            return i.clone();
        }
        let mut bytes = format!("BOSUN-TEST-IMAGE {version}\n").into_bytes();
        let mut x: u32 = version
            .bytes()
            .fold(7, |h, b| h.wrapping_mul(31) ^ u32::from(b));
        while bytes.len() < 48 * 1024 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            bytes.push((x >> 16) as u8);
        }
        let path = self.dir.path().join(format!("{version}.img"));
        std::fs::write(&path, &bytes).unwrap();
        let img = Image {
            version: version.into(),
            path,
            bytes,
        };
        self.images.push(img.clone());
        img
    }

    /// Creates (once) a `size`-byte image of `version` (deterministic, compressible) and its
    /// zstd-compressed file, for serving over HTTP. The uncompressed image is registered like
    /// [`Node::image`]'s, so the bootloader simulator recognises it in a slot.
    pub fn zstd_image(&mut self, version: &str, size: u64) -> ZstdImage {
        let raw = self.dir.path().join(format!("{version}.img"));
        let zst = self.dir.path().join(format!("{version}.img.zst"));
        if !zst.exists() {
            let seed = version
                .bytes()
                .fold(0x5eed_u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
            crate::support::image_server::generate_raw(&raw, size, seed);
            let mut enc =
                zstd::stream::write::Encoder::new(std::fs::File::create(&zst).unwrap(), 3).unwrap();
            std::io::copy(&mut std::fs::File::open(&raw).unwrap(), &mut enc).unwrap();
            enc.finish().unwrap().sync_all().unwrap();
            self.images.retain(|i| i.version != version);
            self.images.push(Image {
                version: version.into(),
                path: raw.clone(),
                bytes: std::fs::read(&raw).unwrap(),
            });
        }
        let image = self
            .images
            .iter()
            .find(|i| i.version == version)
            .unwrap()
            .clone();
        let packed = std::fs::read(&zst).unwrap();
        ZstdImage {
            image,
            zst_sha_hex: hex::encode(Sha256::digest(&packed)),
            zst_len: packed.len() as u64,
            zst,
        }
    }

    /// The backend bosun uses for this medium.
    pub fn env(&self) -> Box<dyn BootEnv + Send> {
        match &self.medium {
            Medium::Grub(p) => Box::new(GrubEnv::new(p)),
            Medium::Uboot(fx) => Box::new(fx.env()),
            Medium::Gpt(d) => Box::new(GptPrio::new(d, 2, 3)),
        }
    }

    /// The CLI flags naming this node's slots and boot env.
    pub fn cli_args(&self) -> Vec<String> {
        let mut v = vec![
            "--root".into(),
            self.dir.path().display().to_string(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--cmdline".into(),
            self.cmdline.display().to_string(),
            "--slot-a".into(),
            self.slots.a.display().to_string(),
            "--slot-b".into(),
            self.slots.b.display().to_string(),
        ];
        match &self.medium {
            Medium::Grub(p) => v.extend(["--grub-env".into(), p.display().to_string()]),
            Medium::Uboot(fx) => {
                v.extend(["--uboot-config".into(), fx.config.display().to_string()])
            }
            Medium::Gpt(d) => v.extend([
                "--gpt-disk".into(),
                d.display().to_string(),
                "--gpt-parts".into(),
                "2,3".into(),
            ]),
        }
        v
    }

    pub fn set_booted(&self, slot: Slot) {
        std::fs::write(
            &self.cmdline,
            format!("root=LABEL=bosun-{slot} bosun.slot={slot} panic=10\n"),
        )
        .unwrap();
    }

    /// An actor on this node with real I/O, a recording runner and the given power budget.
    pub fn actor(&self, power: &Power) -> UpgradeActor {
        let mut actor = UpgradeActor::new(
            &self.state_dir,
            self.cmdline.clone(),
            Some(self.slots.clone()),
            Some(Box::new(CutEnv {
                inner: self.env(),
                medium: self.medium_ref(),
                power: power.clone(),
            })),
            Box::new(CutInstaller {
                power: power.clone(),
            }),
            self.runner.clone(),
        );
        actor.store = Box::new(CutStore {
            inner: FileStateStore::in_dir(&self.state_dir),
            power: power.clone(),
        });
        actor
    }

    fn medium_ref(&self) -> MediumRef {
        match &self.medium {
            Medium::Grub(p) => MediumRef::Grub(p.clone()),
            Medium::Uboot(fx) => MediumRef::Uboot(fx.env()),
            Medium::Gpt(d) => MediumRef::Gpt(GptPrio::new(d, 2, 3)),
        }
    }

    pub fn state(&self) -> UpgradeState {
        FileStateStore::in_dir(&self.state_dir)
            .load()
            .unwrap()
            .unwrap_or_default()
    }

    /// The version whose complete image `slot` holds, if any.
    pub fn slot_version(&self, slot: Slot) -> Option<String> {
        let content = std::fs::read(self.slots.get(slot)).unwrap();
        self.images
            .iter()
            .find(|i| content.starts_with(&i.bytes))
            .map(|i| i.version.clone())
    }

    pub fn reboots_requested(&self) -> usize {
        self.runner
            .calls()
            .iter()
            .filter(|c| *c == &["systemctl".to_string(), "reboot".to_string()])
            .count()
    }

    /// The invariant "the node always has a good slot": the env decodes (with bosun) to a
    /// state whose primary is good, and every slot the bootloader may pick (primary, good
    /// slots, a trial with tries left) holds a complete image.
    pub fn assert_bootable(&self, at: &str) {
        let env = self
            .env()
            .read()
            .unwrap_or_else(|e| panic!("{at}: boot env unreadable: {e}"));
        env.check()
            .unwrap_or_else(|e| panic!("{at}: boot env {env} has no good primary: {e}"));
        for slot in [Slot::A, Slot::B] {
            let may_boot = env.primary == slot
                || env.is_good(slot)
                || env
                    .trial
                    .is_some_and(|t| t.slot == slot && t.tries_left > 0);
            if may_boot {
                assert!(
                    self.slot_version(slot).is_some(),
                    "{at}: boot env {env} may boot slot {slot}, which holds no complete image"
                );
            }
        }
    }

    /// One power-on: the bootloader simulator chooses and "boots" a slot (see the module
    /// docs), and the kernel command line says so. Panics if no slot can boot.
    pub fn boot(&mut self) -> Slot {
        let slot = match &self.medium {
            Medium::Grub(_) | Medium::Uboot(_) => self.boot_env_script(),
            Medium::Gpt(_) => self.boot_gptprio(),
        };
        self.set_booted(slot);
        self.boots.push(slot);
        slot
    }

    fn env_vars(&self) -> Vec<(String, String)> {
        let out = match &self.medium {
            Medium::Grub(p) => tool("grub-editenv", &[p.to_str().unwrap(), "list"]),
            Medium::Uboot(fx) => fx.printenv().join("\n"),
            Medium::Gpt(_) => unreachable!(),
        };
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn save_tries(&self, tries: &str) {
        match &self.medium {
            Medium::Grub(p) => {
                tool(
                    "grub-editenv",
                    &[p.to_str().unwrap(), "set", &format!("bosun_tries={tries}")],
                );
            }
            Medium::Uboot(fx) => fx.setenv("bosun_tries", tries),
            Medium::Gpt(_) => unreachable!(),
        }
    }

    /// `boot/grub.cfg` (and `boot.scr.txt`, which has the same logic) as a Rust function;
    /// [`grub_cfg_matches_the_simulator`](super::upgrade_scenarios) checks the script still
    /// has these steps.
    fn boot_env_script(&self) -> Slot {
        let vars = self.env_vars();
        // `load_env` takes only the contract variables; absent ones are empty.
        let get = |n: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let primary = if get("bosun_primary") == "b" {
            "b"
        } else {
            "a"
        };
        let trial = get("bosun_trial");
        let mut chosen = primary.to_string();
        // 1. A pending trial: decrement, save, and only then boot the trial slot.
        if (trial == "a" || trial == "b") && trial != primary {
            let tries = get("bosun_tries");
            let next = (1..=15u8)
                .find(|n| n.to_string() == tries)
                .map(|n| (n - 1).to_string());
            if let Some(next) = next {
                self.save_tries(&next);
                chosen = trial.clone();
            }
        }
        let slot = |s: &str| s.parse::<Slot>().unwrap();
        if self.slot_version(slot(&chosen)).is_some() {
            return slot(&chosen);
        }
        // 2. The chosen kernel did not load: primary after a failed trial, else the other
        //    slot if it is marked good.
        let fallback = if chosen != primary {
            Some(primary.to_string())
        } else {
            let other = if primary == "a" { "b" } else { "a" };
            (get(&format!("bosun_good_{other}")) == "1").then(|| other.to_string())
        };
        match fallback {
            Some(f) if self.slot_version(slot(&f)).is_some() => slot(&f),
            _ => panic!("bootloader: no bootable slot (env {vars:?})"),
        }
    }

    fn gpt_attrs(&self, part: u32) -> u64 {
        let Medium::Gpt(disk) = &self.medium else {
            unreachable!()
        };
        let out = tool("sgdisk", &["-i", &part.to_string(), disk.to_str().unwrap()]);
        let hex = out
            .lines()
            .find_map(|l| l.strip_prefix("Attribute flags: "))
            .unwrap_or_else(|| panic!("no attribute flags in {out}"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    }

    /// A gptprio bootloader: among partitions with priority > 0 that are successful or have
    /// tries left, the highest priority (a on a tie) boots; an unsuccessful one has its tries
    /// decremented first (written with sgdisk). If it does not load, the next candidate.
    fn boot_gptprio(&self) -> Slot {
        let Medium::Gpt(disk) = &self.medium else {
            unreachable!()
        };
        let mut cands: Vec<(Slot, u32, u64)> = [(Slot::A, 2), (Slot::B, 3)]
            .into_iter()
            .map(|(s, p)| (s, p, self.gpt_attrs(p)))
            .collect();
        cands.sort_by_key(|(s, _, a)| (std::cmp::Reverse((a >> 48) & 0xf), *s == Slot::B));
        for (slot, part, attrs) in cands {
            let prio = (attrs >> 48) & 0xf;
            let tries = (attrs >> 52) & 0xf;
            let ok = (attrs >> 56) & 1 == 1;
            if prio == 0 || (!ok && tries == 0) {
                continue;
            }
            if !ok {
                // Decrement the tries, keeping every other bit, with sfdisk (sgdisk would
                // do too, but sleeps a second per write).
                let next = (attrs & !(0xf << 52)) | ((tries - 1) << 52);
                let bits: Vec<String> = (48..64)
                    .filter(|b| next >> b & 1 == 1)
                    .map(|b| b.to_string())
                    .collect();
                let spec = format!("GUID:{}", bits.join(","));
                tool(
                    "sfdisk",
                    &[
                        "--part-attrs",
                        disk.to_str().unwrap(),
                        &part.to_string(),
                        &spec,
                    ],
                );
                assert_eq!(self.gpt_attrs(part), next, "sfdisk wrote the tries");
            }
            if self.slot_version(slot).is_some() {
                return slot;
            }
        }
        panic!("gptprio: no bootable slot");
    }
}

/// A budget of effects before the power is cut; `Power::unlimited()` never cuts.
#[derive(Debug, Clone)]
pub struct Power(Arc<AtomicUsize>);

impl Power {
    pub fn unlimited() -> Power {
        Power(Arc::new(AtomicUsize::new(usize::MAX)))
    }

    pub fn cut_after(effects: usize) -> Power {
        Power(Arc::new(AtomicUsize::new(effects)))
    }

    /// `true` if the effect may run; `false` if the power dies during it (or died before).
    fn spend(&self) -> Spend {
        let left = self.0.load(Ordering::SeqCst);
        if left == usize::MAX {
            return Spend::Run;
        }
        if left == 0 {
            return Spend::Dead;
        }
        self.0.store(left - 1, Ordering::SeqCst);
        if left == 1 {
            Spend::Tear
        } else {
            Spend::Run
        }
    }

    pub fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}

enum Spend {
    Run,
    /// The power dies while this effect runs.
    Tear,
    /// The power is already off.
    Dead,
}

fn power_cut() -> std::io::Error {
    std::io::Error::other("power cut (simulated)")
}

pub struct CutStore {
    pub inner: FileStateStore,
    pub power: Power,
}

impl StateStore for CutStore {
    fn load(&self) -> Result<Option<UpgradeState>, UpgradeError> {
        self.inner.load()
    }

    /// A torn atomic write leaves the old file (and a stray temp file, swept later).
    fn save(&self, state: &UpgradeState) -> Result<(), UpgradeError> {
        match self.power.spend() {
            Spend::Run => self.inner.save(state),
            Spend::Tear | Spend::Dead => {
                let tmp = self.inner.path.with_file_name(".upgrade.json.tmp.1.dead");
                if let Some(dir) = tmp.parent() {
                    std::fs::create_dir_all(dir).unwrap();
                }
                std::fs::write(tmp, b"{\"format\":1,\"lifec").unwrap();
                Err(bosun::statefile::StateFileError {
                    path: self.inner.path.clone(),
                    op: "write temp file",
                    source: power_cut(),
                }
                .into())
            }
        }
    }
}

pub enum MediumRef {
    Grub(PathBuf),
    Uboot(UbootEnv),
    Gpt(GptPrio),
}

/// The node's boot env, whose write is torn when the power dies during it.
pub struct CutEnv {
    pub inner: Box<dyn BootEnv + Send>,
    pub medium: MediumRef,
    pub power: Power,
}

fn apply_torn(writes: &[DiskWrite]) {
    // All steps but the last complete, the last one half-written.
    let (last, done) = writes.split_last().unwrap();
    for w in done.iter().chain(std::iter::once(last)) {
        let data = if std::ptr::eq(w, last) {
            &w.data[..w.data.len() / 2]
        } else {
            &w.data[..]
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&w.path)
            .unwrap();
        f.seek(SeekFrom::Start(w.offset)).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
    }
}

impl BootEnv for CutEnv {
    fn read(&self) -> Result<BootState, BootEnvError> {
        self.inner.read()
    }

    fn write(&self, state: &BootState) -> Result<(), BootEnvError> {
        match self.power.spend() {
            Spend::Run => return self.inner.write(state),
            Spend::Dead => {}
            Spend::Tear => match &self.medium {
                MediumRef::Grub(path) => {
                    // The new block, half-written into GrubEnv's temp file (not renamed).
                    let scratch = tempfile::tempdir().unwrap();
                    let copy = scratch.path().join("env");
                    std::fs::copy(path, &copy).unwrap();
                    GrubEnv::new(&copy).write(state)?;
                    let bytes = std::fs::read(&copy).unwrap();
                    std::fs::write(GrubEnv::new(path).temp_path(), &bytes[..bytes.len() / 2])
                        .unwrap();
                }
                MediumRef::Uboot(env) => apply_torn(&env.plan(state)?),
                MediumRef::Gpt(env) => {
                    // Cut inside the primary array write: backup table done, primary torn.
                    let plan = env.plan(state)?;
                    apply_torn(&plan[..3]);
                }
            },
        }
        Err(BootEnvError::Io {
            op: "write",
            path: PathBuf::from("boot env"),
            source: power_cut(),
        })
    }
}

/// [`LocalCopyInstaller`], torn halfway through the slot when the power dies.
pub struct CutInstaller {
    pub power: Power,
}

impl Installer for CutInstaller {
    fn install(&self, image: &UpgradeConfig, slot: &Path) -> Result<(), InstallFailure> {
        match self.power.spend() {
            Spend::Run => LocalCopyInstaller.install(image, slot),
            Spend::Tear => {
                let bytes = std::fs::read(&image.image).unwrap();
                let mut f = std::fs::OpenOptions::new().write(true).open(slot).unwrap();
                f.write_all(&bytes[..bytes.len() / 2]).unwrap();
                f.sync_all().unwrap();
                Err(InstallFailure {
                    slot: slot.to_path_buf(),
                    reason: "power cut (simulated)".into(),
                })
            }
            Spend::Dead => Err(InstallFailure {
                slot: slot.to_path_buf(),
                reason: "power cut (simulated)".into(),
            }),
        }
    }
}
