//! Is DEVICE a disk we may overwrite? Everything here reads /sys, the
//! mount table and the swap list; nothing writes.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::FlashError;
use crate::partition;

/// Where the system's view comes from; tests substitute the mount table and
/// the swap list.
#[derive(Debug, Clone)]
pub struct System {
    pub mountinfo: PathBuf,
    pub swaps: PathBuf,
    pub sys: PathBuf,
}

impl Default for System {
    fn default() -> Self {
        System {
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
            sys: "/sys".into(),
        }
    }
}

/// Mount points whose disk must never be a flash target.
const SYSTEM_MOUNTS: [&str; 4] = ["/", "/boot", "/boot/firmware", "/boot/efi"];

/// A checked flash target, not yet opened.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    /// Whole-disk name in /sys/block (`sdb`, `mmcblk0`), or `None` for a
    /// regular file allowed by `--allow-regular-file`.
    pub disk: Option<Disk>,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub name: String,
    pub model: String,
    pub transport: String,
    pub removable: bool,
    pub size: u64,
    pub partitions: Vec<PartInfo>,
}

#[derive(Debug, Clone)]
pub struct PartInfo {
    pub name: String,
    /// Partition number (`partition` in sysfs).
    pub number: u32,
    pub size: u64,
}

fn refuse(msg: String) -> FlashError {
    FlashError::Refused(msg)
}

/// Check that `path` is a whole disk nobody uses (or, with `allow_file`, an
/// existing regular file). Diagnostics only: [`open_target`] is what a flash
/// goes through.
pub fn check_target(path: &Path, allow_file: bool, sys: &System) -> Result<Target, FlashError> {
    let meta = stat_target(path, allow_file)?;
    if meta.file_type().is_file() {
        return Ok(Target {
            path: path.to_path_buf(),
            disk: None,
        });
    }
    check_block(path, meta.rdev(), sys)
}

/// What `path` is, refusing anything but a block device (or an allowed file).
fn stat_target(path: &Path, allow_file: bool) -> Result<fs::Metadata, FlashError> {
    let meta = fs::metadata(path).map_err(|e| {
        refuse(format!(
            "{}: {e}; give the whole-disk device of the card or drive, e.g. /dev/sdb or /dev/mmcblk0 (see `lsblk`)",
            path.display()
        ))
    })?;
    let ft = meta.file_type();
    if ft.is_block_device() || (ft.is_file() && allow_file) {
        return Ok(meta);
    }
    let what = if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a device"
    };
    Err(refuse(format!(
        "{} is {what}, not a block device; give the whole-disk device of the card or drive, e.g. /dev/sdb or /dev/mmcblk0 (see `lsblk`){}",
        path.display(),
        if ft.is_file() {
            ". To write into a regular file on purpose (tests), pass --allow-regular-file"
        } else {
            ""
        }
    )))
}

/// The checks of a block device, by device number: a whole disk, not a loop
/// device over another disk, not the system's, nothing mounted, swapped or held.
fn check_block(path: &Path, rdev: u64, sys: &System) -> Result<Target, FlashError> {
    let dev = devno(rdev);
    let dir = sysfs_dir(sys, &dev).ok_or_else(|| {
        refuse(format!(
            "{} (device {dev}) is not listed in {}/dev/block; is /sys mounted?",
            path.display(),
            sys.sys.display()
        ))
    })?;
    let name = file_name(&dir);
    if dir.join("partition").exists() {
        let disk = dir.parent().map(file_name).unwrap_or_default();
        return Err(refuse(format!(
            "{} is a partition ({name}) of /dev/{disk}; flash the whole disk: /dev/{disk}",
            path.display()
        )));
    }
    // A loop device over a block device hides that disk from every check
    // below (its mounts, its swap, being the system disk).
    if let Some(backing) = read_trim(&dir.join("loop/backing_file")) {
        let backing = backing.trim_end_matches(" (deleted)");
        if fs::metadata(backing).is_ok_and(|m| m.file_type().is_block_device()) {
            return Err(refuse(format!(
                "/dev/{name} is a loop device over the block device {backing}: the checks cannot see what {backing} holds; flash {backing} itself"
            )));
        }
    }

    // The disk and its partitions, by device number and name.
    let mut partitions = Vec::new();
    let mut ours: Vec<(String, String)> = vec![(dev.clone(), name.clone())];
    if let Ok(entries) = fs::read_dir(&dir) {
        let mut v: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        v.sort();
        for p in v {
            if p.join("partition").exists() {
                let pname = file_name(&p);
                if let Some(d) = read_trim(&p.join("dev")) {
                    ours.push((d, pname.clone()));
                }
                partitions.push(PartInfo {
                    number: read_u64(&p.join("partition")).unwrap_or(0) as u32,
                    size: read_u64(&p.join("size")).unwrap_or(0) * 512,
                    name: pname,
                });
            }
        }
    }
    let is_ours = |d: &str| {
        ours.iter()
            .find(|(n, _)| n == d)
            .map(|(_, name)| name.clone())
    };

    // The system disk: / and /boot, and swap, wherever they live (through
    // device-mapper/RAID layers too).
    let mounts = read_mounts(&sys.mountinfo)?;
    let swaps = read_swaps(&sys.swaps)?;
    for m in &mounts {
        if SYSTEM_MOUNTS.contains(&m.point.as_str()) {
            for d in backing(m) {
                if disks_under(sys, &d).contains(&name) {
                    return Err(refuse(format!(
                        "/dev/{name} holds {} (mounted from {}): it is this computer's system disk",
                        m.point, m.source
                    )));
                }
            }
        }
    }
    for s in &swaps {
        if let Some(d) = swap_devno(s)
            && disks_under(sys, &d).contains(&name)
        {
            return Err(refuse(format!(
                "/dev/{name} holds swap ({s}); it is in use by this computer (swapoff it first if you really mean this disk)"
            )));
        }
    }
    for m in &mounts {
        for d in backing(m) {
            if let Some(part) = is_ours(&d) {
                return Err(refuse(format!(
                    "/dev/{part} is mounted at {}; unmount it first (`umount {}`)",
                    m.point, m.point
                )));
            }
            // Mounted through a layer (LUKS, LVM) on one of our partitions.
            if disks_under(sys, &d).contains(&name) {
                return Err(refuse(format!(
                    "{} mounted at {} lives on /dev/{name}; unmount it first",
                    m.source, m.point
                )));
            }
        }
    }
    for (_, n) in &ours {
        let holders_dir = if *n == name {
            dir.join("holders")
        } else {
            dir.join(n).join("holders")
        };
        let holders: Vec<String> = fs::read_dir(&holders_dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into())
                    .collect()
            })
            .unwrap_or_default();
        if !holders.is_empty() {
            return Err(refuse(format!(
                "/dev/{n} is held by {} (device-mapper, LVM, RAID or similar); release it first (e.g. `dmsetup remove`, `cryptsetup close`, `mdadm --stop`)",
                holders
                    .iter()
                    .map(|h| format!("/dev/{h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }

    let model = [
        read_trim(&dir.join("device/vendor")),
        read_trim(&dir.join("device/model")),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    Ok(Target {
        path: path.to_path_buf(),
        disk: Some(Disk {
            model: if model.is_empty() {
                "unknown model".into()
            } else {
                model
            },
            transport: transport(&dir, &name),
            removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
            size: read_u64(&dir.join("size")).unwrap_or(0) * 512,
            name,
            partitions,
        }),
    })
}

/// The flash target, open for writing and checked.
#[derive(Debug)]
pub struct Opened {
    pub target: Target,
    pub file: File,
    pub size: u64,
    id: Identity,
}

/// What a file descriptor refers to: the same values mean the same device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    rdev: u64,
}

impl Identity {
    fn of(m: &fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            rdev: m.rdev(),
        }
    }
}

/// Open the target `O_EXCL` first (the kernel then refuses if anything has
/// mounted or claimed it, and keeps others from doing so while we write),
/// make sure the open file is the device that was looked at, and only then
/// check it by device number. Every later open goes through this descriptor
/// ([`reopen`]): the path is never resolved again.
pub fn open_target(path: &Path, allow_file: bool, sys: &System) -> Result<Opened, FlashError> {
    let looked_at = stat_target(path, allow_file)?;
    let block = looked_at.file_type().is_block_device();
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o.custom_flags(nix::libc::O_CLOEXEC | if block { nix::libc::O_EXCL } else { 0 });
    let mut file = o.open(path).map_err(|e| {
        // Say why, where the checks can tell (a mounted disk gives EBUSY, or
        // EPERM on kernels that forbid writing to mounted block devices).
        if block && let Err(why) = check_block(path, looked_at.rdev(), sys) {
            return why;
        }
        match e.raw_os_error() {
        Some(nix::libc::EBUSY) => refuse(format!(
            "{} is busy: something has it open exclusively (a mount, swap, RAID/LVM, or a program such as a file manager or another flash); close it and retry",
            path.display()
        )),
        Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => refuse(format!(
            "cannot open {} for writing: {e}; run as root (sudo) or join the `disk` group",
            path.display()
        )),
        _ => refuse(format!("cannot open {}: {e}", path.display())),
        }
    })?;
    let opened = file
        .metadata()
        .map_err(|e| refuse(format!("cannot stat {}: {e}", path.display())))?;
    let id = Identity::of(&opened);
    let same = if block {
        opened.file_type().is_block_device() && opened.rdev() == looked_at.rdev()
    } else {
        id == Identity::of(&looked_at)
    };
    if !same {
        return Err(refuse(format!(
            "{} changed between being checked and being opened (another device took its name); look again with `lsblk` and retry",
            path.display()
        )));
    }
    let target = if block {
        check_block(path, opened.rdev(), sys)?
    } else {
        Target {
            path: path.to_path_buf(),
            disk: None,
        }
    };
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| refuse(format!("cannot size {}: {e}", path.display())))?;
    Ok(Opened {
        target,
        file,
        size,
        id,
    })
}

/// Open the target again with other flags (O_DIRECT for writing or reading
/// back), through the descriptor already open, and check it is still the
/// same device.
pub fn reopen(o: &Opened, write: bool, flags: i32) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(flags | nix::libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", o.file.as_raw_fd()))?;
    if Identity::of(&f.metadata()?) != o.id {
        return Err(io::Error::other(format!(
            "{} is no longer the device that was checked",
            o.target.path.display()
        )));
    }
    Ok(f)
}

/// Describe the target's current partitions for the confirmation screen.
pub fn describe_partitions(file: &File, target: &Target, size: u64) -> Vec<String> {
    let Some(disk) = &target.disk else {
        return vec![];
    };
    let table = partition::read_table(file, &target.path, size).ok();
    disk.partitions
        .iter()
        .map(|p| {
            let kind = table
                .as_ref()
                .and_then(|t| t.partitions.iter().find(|tp| tp.number == p.number))
                .map(|tp| tp.type_name())
                .unwrap_or_default();
            format!("/dev/{}  {}  {kind}", p.name, crate::progress::size(p.size))
        })
        .collect()
}

/// `MAJ:MIN` of a device number.
fn devno(rdev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}

fn sysfs_dir(sys: &System, dev: &str) -> Option<PathBuf> {
    fs::canonicalize(sys.sys.join("dev/block").join(dev)).ok()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn read_u64(p: &Path) -> Option<u64> {
    read_trim(p)?.parse().ok()
}

/// Whole disks (and intermediate layers) under device `dev`: itself, its
/// parent disk if it is a partition, and recursively what it is built on
/// (`slaves/`), by /sys/block name.
fn disks_under(sys: &System, dev: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<PathBuf> = sysfs_dir(sys, dev).into_iter().collect();
    while let Some(dir) = todo.pop() {
        let name = file_name(&dir);
        if !out.insert(name) {
            continue;
        }
        if dir.join("partition").exists()
            && let Some(parent) = dir.parent()
        {
            todo.push(parent.to_path_buf());
        }
        if let Ok(entries) = fs::read_dir(dir.join("slaves")) {
            for e in entries.flatten() {
                if let Ok(p) = fs::canonicalize(e.path()) {
                    todo.push(p);
                }
            }
        }
    }
    out
}

#[derive(Debug)]
struct Mount {
    dev: String,
    point: String,
    source: String,
}

/// Device numbers behind a mount: its `MAJ:MIN`, and its source if that is a
/// device node (btrfs reports an anonymous `0:N` device).
fn backing(m: &Mount) -> Vec<String> {
    let mut v = vec![m.dev.clone()];
    if m.source.starts_with('/')
        && let Ok(meta) = fs::metadata(&m.source)
        && meta.file_type().is_block_device()
    {
        v.push(devno(meta.rdev()));
    }
    v
}

fn unescape(s: &str) -> String {
    // The kernel writes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_mounts(path: &Path) -> Result<Vec<Mount>, FlashError> {
    let text = fs::read_to_string(path).map_err(|e| {
        refuse(format!(
            "cannot read the mount table {}: {e}; without it no disk can be proven unused",
            path.display()
        ))
    })?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(Mount {
                dev: f.get(2)?.to_string(),
                point: unescape(f.get(4)?),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
}

fn read_swaps(path: &Path) -> Result<Vec<String>, FlashError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(t
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(unescape))
            .collect()),
        // No swap support compiled in: nothing can be swap.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(refuse(format!(
            "cannot read the swap list {}: {e}",
            path.display()
        ))),
    }
}

/// The device a swap area lives on: the device itself, or the filesystem
/// holding a swap file. `(deleted)` files and vanished paths give `None`.
fn swap_devno(swap: &str) -> Option<String> {
    let meta = fs::metadata(swap).ok()?;
    Some(if meta.file_type().is_block_device() {
        devno(meta.rdev())
    } else {
        devno(meta.dev())
    })
}

/// USB, SD/MMC, NVMe, … from where the disk sits in /sys/devices.
fn transport(dir: &Path, name: &str) -> String {
    let p = dir.to_string_lossy();
    if p.contains("/usb") {
        "USB"
    } else if name.starts_with("mmcblk") || p.contains("/mmc") {
        "SD/MMC"
    } else if name.starts_with("nvme") || p.contains("/nvme") {
        "NVMe"
    } else if name.starts_with("loop") {
        "loop"
    } else if p.contains("/virtio") {
        "virtio"
    } else if p.contains("/ata") {
        "SATA"
    } else {
        "unknown"
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_with_optional_fields_and_escapes() {
        let m = parse_mountinfo(
            "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
             40 27 259:1 / /media/my\\040card rw shared:5 master:1 - vfat /dev/sdb1 rw\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, "254:0");
        assert_eq!(m[0].point, "/");
        assert_eq!(m[1].point, "/media/my card");
        assert_eq!(m[1].source, "/dev/sdb1");
    }

    #[test]
    fn transports_from_sysfs_paths() {
        let t = |p: &str, n: &str| transport(Path::new(p), n);
        assert_eq!(
            t(
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda",
                "sda"
            ),
            "USB"
        );
        assert_eq!(
            t(
                "/sys/devices/platform/mmc0/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
                "mmcblk0"
            ),
            "SD/MMC"
        );
        assert_eq!(
            t("/sys/devices/pci0000:00/nvme/nvme0/nvme0n1", "nvme0n1"),
            "NVMe"
        );
        assert_eq!(t("/sys/devices/virtual/block/loop0", "loop0"), "loop");
    }
}
