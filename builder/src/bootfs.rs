//! The FAT32 boot partition, read and patched in place with fatfs.
//!
//! Files are only ever created at the root: fatfs 0.3.6 writes directories that
//! `fsck.vfat` rejects. Every timestamp comes from one fixed instant
//! (SOURCE_DATE_EPOCH), so the same inputs give byte-identical partitions.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Mutex;

use serde::Serialize;

use crate::partition::Extent;
use crate::region::{CachedRegion, PageCache};
use crate::usedblocks::Bpb;

mod chains;

#[derive(Debug, thiserror::Error)]
pub enum BootFsError {
    #[error("the boot partition is not a FAT filesystem fatfs can read: {0}")]
    NotFat(io::Error),
    #[error("the boot partition is {0}, not FAT32 (Raspberry Pi OS formats it FAT32)")]
    NotFat32(String),
    #[error(
        "the boot partition's FAT filesystem is corrupt: {0}; `fsck.vfat` can repair a copy, or use a fresh image"
    )]
    Corrupt(io::Error),
    #[error("boot partition file {name}")]
    File {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the boot partition is full: {name} needs {needed} bytes but only {free} are free; remove `airgap = true` or other large files"
    )]
    Full {
        name: String,
        needed: u64,
        free: u64,
    },
    #[error("cannot finish writing the boot partition: {0}")]
    Unmount(io::Error),
}

#[derive(Debug, Clone, Serialize)]
pub struct BootEntry {
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
}

/// fatfs's clock, stopped at one instant.
#[derive(Debug)]
struct FixedTime(fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0.time_copy()
    }
}

trait CopyDateTime {
    fn time_copy(&self) -> fatfs::DateTime;
}

impl CopyDateTime for fatfs::DateTime {
    fn time_copy(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.date,
            time: self.time,
        }
    }
}

/// fatfs wants a `&'static` provider; keep one per distinct instant.
fn time_provider(epoch: i64) -> &'static FixedTime {
    static PROVIDERS: Mutex<Vec<(i64, &'static FixedTime)>> = Mutex::new(Vec::new());
    let mut all = PROVIDERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = all.iter().find(|(e, _)| *e == epoch) {
        return p;
    }
    let p: &'static FixedTime = Box::leak(Box::new(FixedTime(dos_datetime(epoch))));
    all.push((epoch, p));
    p
}

/// UTC calendar time of a Unix instant, clamped to what FAT can store (1980–2107).
pub fn dos_datetime(epoch: i64) -> fatfs::DateTime {
    const MIN: i64 = 315_532_800; // 1980-01-01
    const MAX: i64 = 4_354_819_198; // 2107-12-31 23:59:58
    let t = epoch.clamp(MIN, MAX);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

pub struct BootFs<'f> {
    fs: fatfs::FileSystem<CachedRegion<'f>>,
    cache: std::rc::Rc<std::cell::RefCell<PageCache<'f>>>,
}

impl<'f> BootFs<'f> {
    /// Open the FAT32 filesystem in `extent` of `file`. Files written get the
    /// timestamp `epoch` (seconds since 1970, UTC).
    pub fn open(file: &'f File, extent: Extent, epoch: i64) -> Result<Self, BootFsError> {
        let options = fatfs::FsOptions::new()
            .update_accessed_date(false)
            .time_provider(time_provider(epoch));
        let cache = std::rc::Rc::new(std::cell::RefCell::new(PageCache::new(file, extent)));
        let mut disk = CachedRegion::new(cache.clone());
        let mut boot = [0u8; 512];
        io::Read::read_exact(&mut disk, &mut boot).map_err(BootFsError::NotFat)?;
        // fatfs 0.3.6 adds and multiplies BPB fields in u32 while validating
        // them (a FAT size near 2^32 overflows); our parser works in u64 and
        // checks the layout fits its sector count, hence u32, first.
        let layout = Bpb::parse(&boot).ok_or_else(|| {
            BootFsError::NotFat(io::Error::new(
                io::ErrorKind::InvalidData,
                "its boot sector describes no consistent FAT layout",
            ))
        })?;
        if layout.total_sectors * layout.bytes_per_sector > extent.len {
            return Err(BootFsError::Corrupt(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the filesystem ({} sectors) is larger than its {}-byte partition",
                    layout.total_sectors, extent.len
                ),
            )));
        }
        let fs = fatfs::FileSystem::new(CachedRegion::new(cache.clone()), options)
            .map_err(BootFsError::NotFat)?;
        if fs.fat_type() != fatfs::FatType::Fat32 {
            return Err(BootFsError::NotFat32(format!("{:?}", fs.fat_type())));
        }
        // Before any directory walk: fatfs follows loops forever.
        chains::check(&mut disk, &boot).map_err(BootFsError::Corrupt)?;
        Ok(BootFs { fs, cache })
    }

    pub fn label(&self) -> String {
        self.fs.volume_label().trim().to_string()
    }

    fn err(name: &str) -> impl FnOnce(io::Error) -> BootFsError + '_ {
        move |source| BootFsError::File {
            name: name.to_string(),
            source,
        }
    }

    /// The contents of a root-level file, or `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, BootFsError> {
        let mut f = match self.fs.root_dir().open_file(name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::err(name)(e)),
        };
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(Self::err(name))?;
        Ok(Some(buf))
    }

    pub fn read_string(&self, name: &str) -> Result<Option<String>, BootFsError> {
        Ok(self
            .read(name)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Entries of the root directory, sorted by name.
    pub fn list(&self) -> Result<Vec<BootEntry>, BootFsError> {
        let mut out = Vec::new();
        for e in self.fs.root_dir().iter() {
            let e = e.map_err(Self::err("/"))?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            out.push(BootEntry {
                size: e.len(),
                is_dir: e.is_dir(),
                name,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Bytes free on the partition.
    pub fn free_bytes(&self) -> Result<u64, BootFsError> {
        let s = self.fs.stats().map_err(Self::err("/"))?;
        Ok(s.free_clusters() as u64 * s.cluster_size() as u64)
    }

    /// Create or replace a root-level file with `len` bytes from `data`.
    pub fn write_from(&self, name: &str, len: u64, data: &mut dyn Read) -> Result<(), BootFsError> {
        debug_assert!(!name.contains('/'), "boot files live at the root");
        let existing = self.read_len(name)?;
        let free = self.free_bytes()? + existing;
        if len > free {
            return Err(BootFsError::Full {
                name: name.to_string(),
                needed: len,
                free,
            });
        }
        let root = self.fs.root_dir();
        let mut f = root.create_file(name).map_err(Self::err(name))?;
        f.truncate().map_err(Self::err(name))?;
        let copied = io::copy(&mut data.take(len), &mut f).map_err(Self::err(name))?;
        if copied != len {
            return Err(Self::err(name)(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {len} bytes, got {copied}"),
            )));
        }
        f.flush().map_err(Self::err(name))
    }

    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), BootFsError> {
        self.write_from(name, data.len() as u64, &mut &data[..])
    }

    fn read_len(&self, name: &str) -> Result<u64, BootFsError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|e| e.name.eq_ignore_ascii_case(name))
            .map_or(0, |e| e.size))
    }

    /// Flush and mark the filesystem clean.
    pub fn close(self) -> Result<(), BootFsError> {
        self.fs.unmount().map_err(BootFsError::Unmount)?;
        self.cache
            .borrow_mut()
            .flush()
            .map_err(BootFsError::Unmount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_dates_are_utc_calendar_dates() {
        let d = dos_datetime(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((d.date.year, d.date.month, d.date.day), (2023, 11, 14));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (22, 13, 20));
        let d = dos_datetime(0);
        assert_eq!((d.date.year, d.date.month, d.date.day), (1980, 1, 1));
        let d = dos_datetime(951_782_400); // 2000-02-29
        assert_eq!((d.date.year, d.date.month, d.date.day), (2000, 2, 29));
    }
}
