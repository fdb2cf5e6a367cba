//! `bosun image disk`: a first-install disk image from a slot image, in a plain file.
//!
//! Layout (GPT, 1 MiB aligned; [`layout`] computes it, pure):
//!
//! | # | name | content |
//! |---|---|---|
//! | 1 | `bios` | BIOS boot partition: GRUB's i386-pc core.img |
//! | 2 | `esp` | EFI system partition (FAT, 4 KiB clusters): `EFI/BOOT/BOOTX64.EFI` (GRUB x86_64-efi), `grub/grub.cfg`, `grub/bosun.cfg` (the shipped `boot/grub.cfg`), `grub/bosun.env` |
//! | 3 | `root-a` | slot a: the slot image |
//! | 4 | `root-b` | slot b: empty, same size |
//! | 5 | `data` | ext4 `bosun-data` (state dir, k3s data; optionally filled from `--data-dir`) |
//!
//! Both GRUBs find the ESP by its FAT volume id, load `grub/grub.cfg`, which sets the slots
//! by partition (`bosun_dev_*` on the boot disk, `root=PARTUUID=…`) and sources `bosun.cfg`.
//! The environment block is encoded by [`crate::bootenv::grub`]: slot a primary and good.
//!
//! No root, no loop devices: the partition table is written by `sfdisk` on the file, the
//! filesystems by `mkfs.vfat`/mtools on a separate file and `mke2fs -E offset=`, GRUB by
//! `grub-mkimage`; bosun copies the pieces to their offsets itself (what `dd` would do) and
//! patches the two sector numbers `grub-bios-setup` would (boot.img's kernel sector and
//! core.img's first blocklist), since core.img lives in partition 1, not right after the MBR.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::ext4::{self, parse_size};
use super::{argv, io_err, run_tool, temp_next_to, Cleanup, ImageError, TOOL_TIMEOUT};
use crate::bootenv::grub::GrubEnvBlock;
use crate::bootenv::BootState;
use crate::runner::{CommandRunner, SystemRunner};

/// The shipped A/B boot fragment, installed as `grub/bosun.cfg` on the ESP.
pub const BOSUN_GRUB_CFG: &str = include_str!("../../../boot/grub.cfg");

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// GRUB modules built into both core images (nothing is loaded from disk).
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "ext2",
    "search",
    "search_fs_uuid",
    "search_label",
    "loadenv",
    "test",
    "regexp",
    "linux",
    "serial",
    "terminal",
    "echo",
    "sleep",
    "reboot",
    "halt",
    "normal",
    "configfile",
];

/// Flags of `bosun image disk`.
#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    /// Slot image from `bosun image slot` (.img.zst or raw).
    #[arg(long)]
    pub slot: PathBuf,
    /// Raw disk image to write; with qemu-img installed also <out without .img/.raw>.qcow2.
    #[arg(long)]
    pub out: PathBuf,
    /// Size of each slot partition. Default: twice the slot image, at least 64 MiB more.
    #[arg(long, value_parser = parse_size)]
    pub slot_size: Option<u64>,
    /// Size of the EFI system partition (FAT, at least 32 MiB).
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    pub esp_size: u64,
    /// Size of the data partition.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub data_size: u64,
    /// Files to put on the data partition (mke2fs -d).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Extra kernel arguments (bosun_cmdline; the kernel always gets root= and bosun.slot=).
    #[arg(long, default_value = "panic=10")]
    pub cmdline: String,
    /// GRUB talks on the first serial port (115200 baud) as well as the screen.
    #[arg(long)]
    pub serial: bool,
    /// Do not write the qcow2 copy even when qemu-img is installed.
    #[arg(long)]
    pub no_qcow2: bool,
    /// GRUB's platform directories (i386-pc/, x86_64-efi/).
    #[arg(long, default_value = "/usr/lib/grub")]
    pub grub_dir: PathBuf,
}

/// One GPT partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Partition number (1-based, in table order: bios, esp, root-a, root-b, data).
    pub number: u32,
    /// GPT partition name (`bios`, `esp`, `root-a`, `root-b`, `data`); `root-a`/`root-b` are the
    /// labels the boot env and `bosun upgrade` find the slots by.
    pub name: &'static str,
    /// GPT partition type GUID (BIOS boot, EFI system, Linux filesystem).
    pub type_guid: &'static str,
    /// Unique partition GUID, derived from the layout seed (reproducible).
    pub uuid: String,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
}

impl Part {
    /// Byte offset of the partition in the disk image.
    pub fn offset(&self) -> u64 {
        self.start * SECTOR
    }

    /// Length of the partition in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Disk GUID of the GPT, derived from the layout seed (reproducible).
    pub disk_guid: String,
    /// The partitions, in table order.
    pub parts: Vec<Part>,
    /// Size of the whole image in bytes, including 1 MiB at the end for the backup GPT.
    pub total_bytes: u64,
    /// FAT volume id of the ESP (GRUB's fs-uuid is `xxxx-xxxx` of it).
    pub esp_volume_id: u32,
}

impl Layout {
    /// The partition named `name`; the first partition when there is none (callers pass only names
    /// [`layout`] creates).
    pub fn part(&self, name: &str) -> &Part {
        self.parts
            .iter()
            .find(|p| p.name == name)
            .unwrap_or(&self.parts[0])
    }
}

/// Computes the layout (pure): partitions 1 MiB aligned from 1 MiB, 1 MiB left at the end
/// for the backup GPT. GUIDs are derived from `seed`, so the same inputs give the same disk.
pub fn layout(seed: &str, esp: u64, slot: u64, data: u64) -> Layout {
    let sizes: [(&'static str, &'static str, u64); 5] = [
        ("bios", BIOS_BOOT, MIB),
        ("esp", ESP, esp),
        ("root-a", LINUX_FS, slot),
        ("root-b", LINUX_FS, slot),
        ("data", LINUX_FS, data),
    ];
    let mut start = MIB / SECTOR;
    let mut parts = Vec::new();
    for (i, (name, type_guid, size)) in sizes.into_iter().enumerate() {
        let sectors = size.div_ceil(MIB) * MIB / SECTOR;
        parts.push(Part {
            number: i as u32 + 1,
            name,
            type_guid,
            uuid: ext4::uuid_from(&format!("{seed} partition {name}")),
            start,
            sectors,
        });
        start += sectors;
    }
    let esp_hash = ext4::uuid_from(&format!("{seed} esp volume"));
    Layout {
        disk_guid: ext4::uuid_from(&format!("{seed} disk")),
        parts,
        total_bytes: start * SECTOR + MIB,
        esp_volume_id: u32::from_str_radix(&esp_hash[..8], 16).unwrap_or(0x1234_5678),
    }
}

/// sfdisk's input for the layout (pure).
pub fn sfdisk_script(l: &Layout) -> String {
    let mut s = format!(
        "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: 2048\n",
        l.disk_guid
    );
    for p in &l.parts {
        let _ = writeln!(
            s,
            "start={}, size={}, type={}, uuid={}, name=\"{}\"",
            p.start, p.sectors, p.type_guid, p.uuid, p.name
        );
    }
    s
}

/// GRUB's fs-uuid of the ESP (pure).
pub fn esp_fs_uuid(l: &Layout) -> String {
    format!(
        "{:04x}-{:04x}",
        l.esp_volume_id >> 16,
        l.esp_volume_id & 0xffff
    )
}

const SERIAL: &str =
    "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n";

/// The config built into both core images (pure): find the ESP, set the prefix.
pub fn early_cfg(l: &Layout, serial: bool) -> String {
    format!(
        "{}search --no-floppy --fs-uuid --set=root {}\nset prefix=($root)/grub\n",
        if serial { SERIAL } else { "" },
        esp_fs_uuid(l)
    )
}

/// Checks extra kernel arguments for the GRUB script (pure).
pub fn check_cmdline(cmdline: &str) -> Result<(), String> {
    if cmdline.contains(['"', '\\', '$', '\n', '\'', ';']) {
        return Err(format!(
            "--cmdline {cmdline:?}: quotes, backslashes, `$`, `;` and newlines cannot be passed \
             through GRUB's script"
        ));
    }
    Ok(())
}

/// `grub/grub.cfg` on the ESP (pure): the slots by partition on the disk GRUB booted from,
/// `root=PARTUUID=`, the extra kernel arguments, then the shipped fragment.
pub fn grub_cfg(l: &Layout, cmdline: &str, serial: bool) -> String {
    let (a, b) = (l.part("root-a"), l.part("root-b"));
    format!(
        "# Written by `bosun image disk`. The A/B logic is bosun.cfg (bosun's boot/grub.cfg).\n\
         {}\
         # The slots are partitions {} and {} of the disk holding this ESP ($root is hdN,gpt{}).\n\
         regexp --set=1:bosun_disk '^([^,]+),' \"$root\"\n\
         set bosun_dev_a=\"${{bosun_disk}},gpt{}\"\n\
         set bosun_dev_b=\"${{bosun_disk}},gpt{}\"\n\
         set bosun_root_a=PARTUUID={}\n\
         set bosun_root_b=PARTUUID={}\n\
         set bosun_cmdline=\"{cmdline}\"\n\
         source ${{prefix}}/bosun.cfg\n",
        if serial { SERIAL } else { "" },
        a.number,
        b.number,
        l.part("esp").number,
        a.number,
        b.number,
        a.uuid,
        b.uuid,
    )
}

/// The GRUB environment block of a new disk: slot a primary and good (pure).
pub fn initial_env() -> Vec<u8> {
    let mut block = GrubEnvBlock::default();
    for (name, value) in crate::bootenv::state_to_vars(&BootState::initial()) {
        block.set(name, &value);
    }
    block
        .encode()
        .unwrap_or_else(|_| vec![b'#'; crate::bootenv::grub::BLOCK_SIZE])
}

/// Patches boot.img (first 440 bytes of the MBR) and core.img for core.img at `core_start`
/// (pure): boot.img's kernel sector (0x5c), its drive check turned into NOPs for hard disks
/// (0x66), and the first blocklist entry of core.img's first sector (0x1f4: start sector of
/// the rest). These are the fields `grub-bios-setup` writes.
pub fn patch_bios_boot(boot: &mut [u8], core: &mut [u8], core_start: u64) -> Result<(), String> {
    if boot.len() != 512 || core.len() < 1024 {
        return Err(format!(
            "boot.img is {} bytes (expected 512) / core.img is {} bytes (expected > 1024)",
            boot.len(),
            core.len()
        ));
    }
    boot[0x5c..0x64].copy_from_slice(&core_start.to_le_bytes());
    boot[0x66] = 0x90;
    boot[0x67] = 0x90;
    core[0x1f4..0x1fc].copy_from_slice(&(core_start + 1).to_le_bytes());
    Ok(())
}

/// Runs `bosun image disk` with the real tools.
pub fn run(args: DiskArgs) -> anyhow::Result<ExitCode> {
    let runner = SystemRunner::new(TOOL_TIMEOUT);
    let (layout, qcow2) = build(&args, &runner)?;
    print!("{}", render_report(&args, &layout, qcow2.as_deref()));
    Ok(ExitCode::SUCCESS)
}

/// What was written and the agent config that matches the disk (pure).
pub fn render_report(args: &DiskArgs, l: &Layout, qcow2: Option<&Path>) -> String {
    let mut s = format!("built {} ({} MiB)", args.out.display(), l.total_bytes >> 20);
    if let Some(q) = qcow2 {
        let _ = write!(s, " and {}", q.display());
    }
    s.push('\n');
    for p in &l.parts {
        let _ = writeln!(
            s,
            "  {} {:<7} {:>6} MiB at {:>6} MiB  PARTUUID={}",
            p.number,
            p.name,
            p.bytes() >> 20,
            p.offset() >> 20,
            p.uuid
        );
    }
    let (a, b) = (l.part("root-a"), l.part("root-b"));
    let _ = write!(
        s,
        "\n# agent config (/etc/bosun/agent.yaml) for this disk, with the ESP mounted at /boot/efi:\n\
         upgrade:\n  slots: {{a: /dev/disk/by-partuuid/{}, b: /dev/disk/by-partuuid/{}}}\n  \
         bootloader: grub\n  grubenv: /boot/efi/grub/bosun.env\n",
        a.uuid, b.uuid
    );
    s
}

/// The raw size of a slot image (the zstd frame's content size, or the file size).
fn slot_raw_size(slot: &Path) -> Result<u64, ImageError> {
    let mut f = File::open(slot).map_err(io_err(slot))?;
    let mut head = [0u8; 18];
    let n = f.read(&mut head).map_err(io_err(slot))?;
    if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(&head[..n]) {
            return Ok(size);
        }
        let mut dec = zstd::stream::read::Decoder::new(File::open(slot).map_err(io_err(slot))?)
            .map_err(io_err(slot))?;
        return std::io::copy(&mut dec, &mut std::io::sink()).map_err(io_err(slot));
    }
    Ok(f.metadata().map_err(io_err(slot))?.len())
}

/// Checks the arguments and computes the layout (reads the slot image's header).
fn plan(args: &DiskArgs) -> Result<(Layout, u64), ImageError> {
    check_cmdline(&args.cmdline).map_err(ImageError::Invalid)?;
    if args.esp_size < 32 * MIB {
        return Err(ImageError::Invalid(format!(
            "--esp-size {}: the ESP needs at least 32 MiB",
            args.esp_size
        )));
    }
    let raw = slot_raw_size(&args.slot)?;
    let slot_size = args
        .slot_size
        .unwrap_or_else(|| (raw * 2).max(raw + 64 * MIB));
    if slot_size < raw {
        return Err(ImageError::TooBig {
            needed: raw,
            size: slot_size,
        });
    }
    let name = args
        .slot
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seed = format!("bosun-disk {name} {raw}");
    Ok((layout(&seed, args.esp_size, slot_size, args.data_size), raw))
}

/// Builds the disk next to `--out` and renames it into place (plus the qcow2 copy).
pub fn build(
    args: &DiskArgs,
    runner: &dyn CommandRunner,
) -> Result<(Layout, Option<PathBuf>), ImageError> {
    let (l, _raw) = plan(args)?;
    let work = Cleanup::new(temp_next_to(&args.out, "work"));
    std::fs::create_dir(work.path()).map_err(io_err(work.path()))?;
    let disk = Cleanup::new(temp_next_to(&args.out, "tmp"));
    {
        let f = File::create(disk.path()).map_err(io_err(disk.path()))?;
        f.set_len(l.total_bytes).map_err(io_err(disk.path()))?;
    }
    partition(runner, &l, disk.path(), work.path())?;
    write_bios_grub(runner, args, &l, disk.path(), work.path())?;
    let esp = build_esp(runner, args, &l, work.path())?;
    copy_at(&esp, disk.path(), l.part("esp"), false)?;
    copy_at(&args.slot, disk.path(), l.part("root-a"), true)?;
    make_data(runner, args, &l, disk.path(), work.path())?;
    File::open(disk.path())
        .and_then(|f| f.sync_all())
        .map_err(io_err(disk.path()))?;
    let qcow2 = if args.no_qcow2 || !on_path("qemu-img") {
        None
    } else {
        let q = args.out.with_extension("qcow2");
        let tmp = Cleanup::new(temp_next_to(&q, "tmp"));
        run_tool(
            runner,
            &argv(&[
                "qemu-img".to_string(),
                "convert".into(),
                "-f".into(),
                "raw".into(),
                "-O".into(),
                "qcow2".into(),
                disk.path().display().to_string(),
                tmp.path().display().to_string(),
            ]),
        )?;
        std::fs::rename(tmp.path(), &q).map_err(io_err(&q))?;
        tmp.keep();
        Some(q)
    };
    std::fs::rename(disk.path(), &args.out).map_err(io_err(&args.out))?;
    disk.keep();
    Ok((l, qcow2))
}

/// Whether `tool` is an executable in `PATH` (reads the directories).
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Writes the GPT with sfdisk (stdin from a script file, through `sh`).
fn partition(
    runner: &dyn CommandRunner,
    l: &Layout,
    disk: &Path,
    work: &Path,
) -> Result<(), ImageError> {
    let script = work.join("sfdisk.txt");
    std::fs::write(&script, sfdisk_script(l)).map_err(io_err(&script))?;
    run_tool(
        runner,
        &argv(&[
            "sh".to_string(),
            "-c".into(),
            "exec sfdisk --quiet --no-reread --no-tell-kernel \"$1\" < \"$2\"".into(),
            "sfdisk".into(),
            disk.display().to_string(),
            script.display().to_string(),
        ]),
    )?;
    Ok(())
}

/// grub-mkimage for one platform into `out`, with the early config.
fn grub_mkimage(
    runner: &dyn CommandRunner,
    platform: &str,
    early: &Path,
    out: &Path,
    extra: &[&str],
) -> Result<(), ImageError> {
    let mut cmd = argv(&[
        "grub-mkimage".to_string(),
        "-O".into(),
        platform.into(),
        "-o".into(),
        out.display().to_string(),
        "-c".into(),
        early.display().to_string(),
        "-p".into(),
        "/grub".into(),
    ]);
    cmd.extend(argv(GRUB_MODULES));
    cmd.extend(argv(extra));
    run_tool(runner, &cmd)?;
    Ok(())
}

/// BIOS GRUB: boot.img's code into the MBR, core.img into the BIOS boot partition.
fn write_bios_grub(
    runner: &dyn CommandRunner,
    args: &DiskArgs,
    l: &Layout,
    disk: &Path,
    work: &Path,
) -> Result<(), ImageError> {
    let early = work.join("early.cfg");
    std::fs::write(&early, early_cfg(l, args.serial)).map_err(io_err(&early))?;
    let core_path = work.join("core.img");
    grub_mkimage(runner, "i386-pc", &early, &core_path, &["biosdisk"])?;
    let boot_path = args.grub_dir.join("i386-pc/boot.img");
    let mut boot = std::fs::read(&boot_path).map_err(io_err(&boot_path))?;
    let mut core = std::fs::read(&core_path).map_err(io_err(&core_path))?;
    let bios = l.part("bios");
    if core.len() as u64 > bios.bytes() {
        return Err(ImageError::Invalid(format!(
            "GRUB's core.img is {} bytes, more than the {} of the BIOS boot partition",
            core.len(),
            bios.bytes()
        )));
    }
    patch_bios_boot(&mut boot, &mut core, bios.start).map_err(ImageError::Invalid)?;
    let f = OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io_err(disk))?;
    f.write_all_at(&boot[..440], 0).map_err(io_err(disk))?;
    f.write_all_at(&core, bios.offset()).map_err(io_err(disk))?;
    Ok(())
}

/// The ESP as a file: FAT32, UEFI GRUB, grub.cfg, bosun.cfg, bosun.env. Returns its path.
fn build_esp(
    runner: &dyn CommandRunner,
    args: &DiskArgs,
    l: &Layout,
    work: &Path,
) -> Result<PathBuf, ImageError> {
    let esp = work.join("esp.img");
    let efi = work.join("BOOTX64.EFI");
    grub_mkimage(
        runner,
        "x86_64-efi",
        &work.join("early.cfg"),
        &efi,
        &["efi_gop"],
    )?;
    let files = [
        (
            "grub.cfg",
            grub_cfg(l, &args.cmdline, args.serial).into_bytes(),
        ),
        ("bosun.cfg", BOSUN_GRUB_CFG.as_bytes().to_vec()),
        ("bosun.env", initial_env()),
    ];
    for (name, content) in &files {
        let p = work.join(name);
        std::fs::write(&p, content).map_err(io_err(&p))?;
    }
    run_tool(
        runner,
        &argv(&[
            "mkfs.vfat".to_string(),
            // 4 KiB clusters: grub/bosun.env (1 KiB) is always one contiguous cluster, which
            // GRUB's save_env needs. mkfs.vfat picks FAT16 or FAT32 by size.
            "-s".into(),
            "8".into(),
            "-n".into(),
            "BOSUN-ESP".into(),
            "-i".into(),
            format!("{:08x}", l.esp_volume_id),
            "-C".into(),
            esp.display().to_string(),
            (l.part("esp").bytes() / 1024).to_string(),
        ]),
    )?;
    let image = esp.display().to_string();
    let mtools = |cmd: &[String]| {
        let mut full = argv(&["env", "MTOOLS_SKIP_CHECK=1"]);
        full.extend_from_slice(cmd);
        run_tool(runner, &full)
    };
    mtools(&argv(&[
        "mmd",
        "-i",
        &image,
        "::/EFI",
        "::/EFI/BOOT",
        "::/grub",
    ]))?;
    mtools(&argv(&[
        "mcopy".to_string(),
        "-i".into(),
        image.clone(),
        efi.display().to_string(),
        "::/EFI/BOOT/BOOTX64.EFI".into(),
    ]))?;
    for (name, _) in &files {
        mtools(&argv(&[
            "mcopy".to_string(),
            "-i".into(),
            image.clone(),
            work.join(name).display().to_string(),
            format!("::/grub/{name}"),
        ]))?;
    }
    Ok(esp)
}

/// Copies `src` (zstd-decoded when `decode` and it is zstd) into `part` of `disk`,
/// refusing more bytes than the partition holds. Writes the disk file.
fn copy_at(src: &Path, disk: &Path, part: &Part, decode: bool) -> Result<(), ImageError> {
    let file = File::open(src).map_err(io_err(src))?;
    let mut reader: Box<dyn Read> = if decode {
        super::layers::decompressed(file).map_err(io_err(src))?
    } else {
        Box::new(file)
    };
    let mut out = OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io_err(disk))?;
    out.seek(SeekFrom::Start(part.offset()))
        .map_err(io_err(disk))?;
    let mut limited = (&mut reader).take(part.bytes() + 1);
    let n = std::io::copy(&mut limited, &mut out).map_err(io_err(src))?;
    if n > part.bytes() {
        return Err(ImageError::TooBig {
            needed: n,
            size: part.bytes(),
        });
    }
    out.flush().map_err(io_err(disk))
}

/// The data partition: ext4 `bosun-data` written at its offset, optionally filled.
fn make_data(
    runner: &dyn CommandRunner,
    args: &DiskArgs,
    l: &Layout,
    disk: &Path,
    work: &Path,
) -> Result<(), ImageError> {
    let data = l.part("data");
    let conf = work.join("mke2fs.conf");
    std::fs::write(&conf, ext4::MKE2FS_CONF).map_err(io_err(&conf))?;
    let mut cmd = argv(&[
        "env".to_string(),
        "LC_ALL=C".into(),
        format!("MKE2FS_CONFIG={}", conf.display()),
        "mke2fs".into(),
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-L".into(),
        "bosun-data".into(),
        "-U".into(),
        data.uuid.clone(),
        "-E".into(),
        format!("offset={},root_owner=0:0", data.offset()),
    ]);
    if let Some(dir) = &args.data_dir {
        cmd.extend(argv(&["-d".to_string(), dir.display().to_string()]));
    }
    cmd.extend(argv(&[
        disk.display().to_string(),
        format!("{}k", data.bytes() / 1024),
    ]));
    run_tool(runner, &cmd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_ordered_and_leaves_room_for_the_backup_gpt() {
        let l = layout("seed", 64 * MIB, 100 * MIB + 1, 256 * MIB);
        let names: Vec<&str> = l.parts.iter().map(|p| p.name).collect();
        assert_eq!(names, ["bios", "esp", "root-a", "root-b", "data"]);
        assert_eq!(l.parts[0].start, 2048);
        for w in l.parts.windows(2) {
            assert_eq!(w[0].start + w[0].sectors, w[1].start);
        }
        for p in &l.parts {
            assert_eq!(p.offset() % MIB, 0, "{} not aligned", p.name);
        }
        // A slot size is rounded up to whole MiB; both slots are the same.
        assert_eq!(l.part("root-a").bytes(), 101 * MIB);
        assert_eq!(l.part("root-b").bytes(), 101 * MIB);
        let end = l.parts.last().map(|p| p.offset() + p.bytes()).unwrap();
        assert_eq!(l.total_bytes, end + MIB);
        assert_eq!(l, layout("seed", 64 * MIB, 100 * MIB + 1, 256 * MIB));
        assert_ne!(l.disk_guid, layout("other", 64 * MIB, MIB, MIB).disk_guid);
    }

    #[test]
    fn sfdisk_script_names_every_partition_with_type_and_uuid() {
        let l = layout("s", 64 * MIB, 64 * MIB, 64 * MIB);
        let s = sfdisk_script(&l);
        assert!(s.starts_with("label: gpt\n"));
        assert!(s.contains(&format!(
            "start=2048, size=2048, type={BIOS_BOOT}, uuid={}, name=\"bios\"",
            l.parts[0].uuid
        )));
        assert_eq!(s.matches("start=").count(), 5);
    }

    #[test]
    fn grub_cfg_sets_slots_by_partition_and_sources_the_fragment() {
        let l = layout("s", 64 * MIB, 64 * MIB, 64 * MIB);
        let cfg = grub_cfg(&l, "console=ttyS0 panic=1", false);
        assert!(cfg.contains("set bosun_dev_a=\"${bosun_disk},gpt3\""));
        assert!(cfg.contains("set bosun_dev_b=\"${bosun_disk},gpt4\""));
        assert!(cfg.contains(&format!(
            "set bosun_root_b=PARTUUID={}",
            l.part("root-b").uuid
        )));
        assert!(cfg.contains("set bosun_cmdline=\"console=ttyS0 panic=1\""));
        assert!(cfg.trim_end().ends_with("source ${prefix}/bosun.cfg"));
        assert!(!cfg.contains("serial"));
        assert!(grub_cfg(&l, "", true).contains("terminal_output serial"));
        let early = early_cfg(&l, false);
        assert!(early.contains(&format!("--fs-uuid --set=root {}", esp_fs_uuid(&l))));
        assert_eq!(esp_fs_uuid(&l).len(), 9);
    }

    #[test]
    fn cmdline_that_grub_script_would_mangle_is_refused() {
        assert!(check_cmdline("console=ttyS0,115200 quiet panic=10").is_ok());
        for bad in ["a\"b", "$x", "a;reboot", "x\ny", "a\\b"] {
            assert!(check_cmdline(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_initial_environment_is_slot_a_primary_and_good() {
        let env = initial_env();
        let block = GrubEnvBlock::parse(&env).unwrap();
        assert_eq!(block.get("bosun_primary"), Some("a"));
        assert_eq!(block.get("bosun_good_a"), Some("1"));
        assert_eq!(block.get("bosun_good_b"), Some("0"));
        assert_eq!(block.get("bosun_trial"), Some(""));
    }

    #[test]
    fn bios_boot_patch_points_boot_img_and_core_img_at_the_partition() {
        let mut boot = vec![0u8; 512];
        let mut core = vec![0u8; 4096];
        patch_bios_boot(&mut boot, &mut core, 2048).unwrap();
        assert_eq!(
            u64::from_le_bytes(boot[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(&boot[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(
            u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
            2049
        );
        assert!(patch_bios_boot(&mut [0; 100], &mut core, 1).is_err());
    }
}
