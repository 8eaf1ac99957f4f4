//! A byte range of an image file (one partition) seen as its own device.
//! Positioned I/O (`pread`/`pwrite`) leaves the file's cursor alone, so several
//! regions of one image can be open at once.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::partition::Extent;

/// Read/Write/Seek over `extent` of `file`; what fatfs needs.
pub struct Region<'f> {
    file: &'f File,
    extent: Extent,
    pos: u64,
}

impl<'f> Region<'f> {
    pub fn new(file: &'f File, extent: Extent) -> Self {
        Region {
            file,
            extent,
            pos: 0,
        }
    }

    fn remaining(&self) -> u64 {
        self.extent.len.saturating_sub(self.pos)
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining()) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self
            .file
            .read_at(&mut buf[..n], self.extent.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining()) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self
            .file
            .write_at(&buf[..n], self.extent.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.extent.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) if t <= self.extent.len => {
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
