//! A byte range of an image file (one partition) seen as its own device.
//! Positioned I/O (`pread`/`pwrite`) leaves the file's cursor alone, so several
//! regions of one image can be open at once.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::partition::Extent;

/// An owned read-only view of a partition, for ext4-view (which wants `'static`).
pub struct RegionReader {
    file: File,
    extent: Extent,
}

impl RegionReader {
    pub fn new(file: &File, extent: Extent) -> io::Result<Self> {
        Ok(RegionReader {
            file: file.try_clone()?,
            extent,
        })
    }
}

impl ext4_view::Ext4Read for RegionReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte.checked_add(dst.len() as u64);
        if end.is_none_or(|e| e > self.extent.len) {
            return Err(format!(
                "read of {} bytes at {start_byte} is past the end of the {}-byte partition",
                dst.len(),
                self.extent.len
            )
            .into());
        }
        self.file
            .read_exact_at(dst, self.extent.start + start_byte)
            .map_err(Box::new)?;
        Ok(())
    }
}

/// A write-back page cache over a partition, for fatfs: it writes a file one
/// cluster at a time and updates FAT sectors in between, which as direct
/// syscalls costs more than the data itself. Pages are written back in order
/// by [`PageCache::flush`], or when too much is dirty.
pub struct PageCache<'f> {
    file: &'f File,
    extent: Extent,
    pages: std::collections::HashMap<u64, Page>,
    dirty: usize,
}

struct Page {
    data: Box<[u8]>,
    dirty: bool,
}

const PAGE: u64 = 64 << 10;
/// Write back once this much is dirty, to bound memory.
const MAX_DIRTY: usize = 1024;

impl<'f> PageCache<'f> {
    pub fn new(file: &'f File, extent: Extent) -> Self {
        PageCache {
            file,
            extent,
            pages: std::collections::HashMap::new(),
            dirty: 0,
        }
    }

    fn page_len(&self, index: u64) -> usize {
        (self.extent.len - index * PAGE).min(PAGE) as usize
    }

    /// The page, read from the file unless `overwrite` says every byte will be replaced.
    fn page(&mut self, index: u64, overwrite: bool) -> io::Result<&mut Page> {
        if !self.pages.contains_key(&index) {
            let mut data = vec![0u8; self.page_len(index)].into_boxed_slice();
            if !overwrite {
                self.file
                    .read_exact_at(&mut data, self.extent.start + index * PAGE)?;
            }
            self.pages.insert(index, Page { data, dirty: false });
        }
        Ok(self.pages.get_mut(&index).expect("inserted above"))
    }

    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.extent.len.saturating_sub(pos)) as usize;
        let mut done = 0;
        while done < n {
            let at = pos + done as u64;
            let (index, off) = (at / PAGE, (at % PAGE) as usize);
            let page = self.page(index, false)?;
            let k = (page.data.len() - off).min(n - done);
            buf[done..done + k].copy_from_slice(&page.data[off..off + k]);
            done += k;
        }
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.extent.len.saturating_sub(pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let mut done = 0;
        while done < n {
            let at = pos + done as u64;
            let (index, off) = (at / PAGE, (at % PAGE) as usize);
            let whole = off == 0 && n - done >= self.page_len(index);
            let page = self.page(index, whole)?;
            let k = (page.data.len() - off).min(n - done);
            page.data[off..off + k].copy_from_slice(&buf[done..done + k]);
            if !page.dirty {
                page.dirty = true;
                self.dirty += 1;
            }
            done += k;
        }
        if self.dirty >= MAX_DIRTY {
            self.flush()?;
            self.pages.clear();
        }
        Ok(n)
    }

    /// Write every dirty page back, in order, coalescing neighbours.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut dirty: Vec<u64> = self
            .pages
            .iter()
            .filter(|(_, p)| p.dirty)
            .map(|(i, _)| *i)
            .collect();
        dirty.sort_unstable();
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0;
        for (k, index) in dirty.iter().enumerate() {
            if run.is_empty() {
                run_start = *index;
            }
            run.extend_from_slice(&self.pages[index].data);
            let next_adjacent = dirty.get(k + 1) == Some(&(index + 1));
            if !next_adjacent || run.len() >= 16 << 20 {
                self.file
                    .write_all_at(&run, self.extent.start + run_start * PAGE)?;
                run.clear();
            }
        }
        for p in self.pages.values_mut() {
            p.dirty = false;
        }
        self.dirty = 0;
        Ok(())
    }
}

/// Read/Write/Seek over a shared [`PageCache`].
pub struct CachedRegion<'f> {
    cache: std::rc::Rc<std::cell::RefCell<PageCache<'f>>>,
    len: u64,
    pos: u64,
}

impl<'f> CachedRegion<'f> {
    pub fn new(cache: std::rc::Rc<std::cell::RefCell<PageCache<'f>>>) -> Self {
        let len = cache.borrow().extent.len;
        CachedRegion { cache, len, pos: 0 }
    }
}

impl Read for CachedRegion<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.cache.borrow_mut().read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for CachedRegion<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.cache.borrow_mut().write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for CachedRegion<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) if t <= self.len => {
                self.pos = t;
                Ok(t)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_writes_reach_the_file_on_flush_and_reads_see_them_before() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("img"))
            .unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(&[9u8; 10], 4096 + 70_000).unwrap();
        let extent = Extent {
            start: 4096,
            len: 300_000,
        };
        let cache = std::rc::Rc::new(std::cell::RefCell::new(PageCache::new(&f, extent)));
        let mut r = CachedRegion::new(cache.clone());
        r.seek(SeekFrom::Start(65_530)).unwrap();
        r.write_all(b"across-a-page-boundary").unwrap();
        r.seek(SeekFrom::Start(70_000)).unwrap();
        let mut b = [0u8; 4];
        r.read_exact(&mut b).unwrap();
        assert_eq!(
            b, [9; 4],
            "unwritten bytes of a touched page come from the file"
        );
        r.seek(SeekFrom::Start(65_530)).unwrap();
        let mut b = [0u8; 22];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"across-a-page-boundary");
        let mut on_disk = [0u8; 22];
        f.read_exact_at(&mut on_disk, 4096 + 65_530).unwrap();
        assert_eq!(on_disk, [0; 22], "nothing written before flush");
        cache.borrow_mut().flush().unwrap();
        f.read_exact_at(&mut on_disk, 4096 + 65_530).unwrap();
        assert_eq!(&on_disk, b"across-a-page-boundary");
        let mut after = [0u8; 10];
        f.read_exact_at(&mut after, 4096 + 70_000).unwrap();
        assert_eq!(after, [9; 10], "read-modify-write kept neighbouring bytes");
        // Past the end of the region: refused.
        r.seek(SeekFrom::Start(300_000)).unwrap();
        assert!(r.write(b"x").is_err());
    }
}
