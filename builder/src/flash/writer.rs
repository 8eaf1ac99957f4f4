//! Writing: wipe the old partition table, stream the mapped ranges in
//! (a reader thread reads, decompresses and hashes; this thread writes), keep
//! the first MiB in memory, and write it only after everything else is on
//! the disk and verified.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use super::buf::{ALIGN, AlignedBuf};
use super::source::Image;
use crate::digest::hex;
use crate::partition::Extent;
use crate::writeback::WriteBehind;

/// The partition-table area written last.
pub const HEAD: u64 = 1 << 20;
/// I/O size of reads and writes.
const CHUNK: u64 = 4 << 20;
/// Largest range verified as one SHA-256 (a mismatch names at most this).
const UNIT_MAX: u64 = 64 << 20;

/// A written range and the SHA-256 of what was written there.
#[derive(Debug, Clone)]
pub struct Unit {
    pub extent: Extent,
    pub sha256: [u8; 32],
}

/// What the body pass produced.
pub struct Written {
    /// Ranges written outside the head, with their hashes.
    pub body: Vec<Unit>,
    /// The head's content, to write last, and its hashes.
    pub head: Vec<(u64, Vec<u8>)>,
    pub head_units: Vec<Unit>,
    pub bytes_written: u64,
    pub image_size: u64,
}

struct Chunk {
    offset: u64,
    data: AlignedBuf,
    /// Progress to report once this chunk is handled.
    advance: u64,
}

/// Zero the first MiB (and a backup GPT at the end, if the disk has one) so
/// that an interrupted flash leaves a disk without a partition table, and
/// make that durable before any data goes in.
pub fn wipe(dev: &File, dev_path: &Path, dev_size: u64, old_gpt: bool) -> Result<u64> {
    let zeros = vec![0u8; HEAD as usize];
    let mut n = HEAD.min(dev_size);
    dev.write_all_at(&zeros[..n as usize], 0)
        .with_context(|| format!("cannot write to {}", dev_path.display()))?;
    if old_gpt && dev_size >= 2 * HEAD {
        dev.write_all_at(&zeros, dev_size - HEAD)
            .with_context(|| format!("cannot write to {}", dev_path.display()))?;
        n += HEAD;
    }
    dev.sync_data()
        .with_context(|| format!("cannot flush {}", dev_path.display()))?;
    Ok(n)
}

/// Write everything but the head; return the hashes to verify.
///
/// `direct`, if given, is the device opened `O_DIRECT`: whole 4 KiB blocks
/// go through it straight from our buffers to the disk, without a second
/// copy into the page cache and without piling up dirty pages (so progress
/// and ETA are honest). Anything unaligned goes through `dev`.
pub fn write_body(
    image: &Image,
    dev: &File,
    direct: Option<&File>,
    dev_path: &Path,
    dev_size: u64,
    hash: bool,
    bar: &ProgressBar,
) -> Result<Written> {
    let (tx, rx) = mpsc::sync_channel::<Chunk>(4);
    // Written buffers go back to the reader for reuse.
    let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(image, dev_size, hash, tx, free_rx));
        let mut head = Vec::new();
        let mut written = 0u64;
        let mut window = WriteBehind::new(dev);
        let mut failure = None;
        for c in rx.iter() {
            if crate::interrupt::check().is_err() {
                failure = Some(FlashError::interrupted(dev_path).into());
                break;
            }
            if c.data.is_empty() {
            } else if c.offset < HEAD {
                head.push((c.offset, c.data.as_slice().to_vec()));
            } else {
                let aligned = c.offset % ALIGN as u64 == 0 && c.data.len() % ALIGN == 0;
                let r = match direct {
                    Some(d) if aligned => d.write_all_at(c.data.as_slice(), c.offset),
                    _ => dev
                        .write_all_at(c.data.as_slice(), c.offset)
                        .and_then(|()| window.wrote(c.offset, c.data.len() as u64)),
                };
                if let Err(e) = r {
                    failure = Some(anyhow!(e).context(format!(
                        "writing {} bytes at byte {} of {}",
                        c.data.len(),
                        c.offset,
                        dev_path.display()
                    )));
                    break;
                }
                written += c.data.len() as u64;
                let _ = free_tx.send(c.data);
            }
            bar.inc(c.advance);
        }
        drop(rx);
        let produced = producer
            .join()
            .map_err(|_| anyhow!("the image reader thread panicked"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let (units, image_size) = produced?;
        let (head_units, body) = units.into_iter().partition(|u| u.extent.start < HEAD);
        Ok(Written {
            body,
            head,
            head_units,
            bytes_written: written,
            image_size,
        })
    })
}

/// Write the head last (after the body is synced and verified) and flush.
pub fn write_head(dev: &File, dev_path: &Path, head: &[(u64, Vec<u8>)]) -> Result<u64> {
    let mut n = 0;
    for (off, data) in head {
        dev.write_all_at(data, *off).with_context(|| {
            format!("writing the partition table area of {}", dev_path.display())
        })?;
        n += data.len() as u64;
    }
    dev.sync_data()
        .with_context(|| format!("cannot flush {}", dev_path.display()))?;
    Ok(n)
}

nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Ask the kernel to re-read the partition table (BLKRRPART), retrying while
/// udev or a desktop automounter still has the disk open.
pub fn reread_partitions(dev: &File) -> std::result::Result<(), String> {
    let mut last = String::new();
    for attempt in 0..20 {
        // SAFETY: BLKRRPART takes no argument; the fd is an open block device.
        match unsafe { blkrrpart(dev.as_raw_fd()) } {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                last = "device busy".into();
                std::thread::sleep(std::time::Duration::from_millis(100 * (attempt + 1).min(5)));
            }
            Err(nix::errno::Errno::EINVAL) => {
                return Err(
                    "this device does not take partitions (a loop device without -P?)".into(),
                );
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last)
}

/// Groups written bytes into verify units: contiguous, at most `UNIT_MAX`,
/// never straddling the head boundary.
#[derive(Default)]
struct Units {
    /// Without a read-back nothing needs hashing.
    skip: bool,
    done: Vec<Unit>,
    cur: Option<(u64, u64, Sha256)>,
}

impl Units {
    fn add(&mut self, off: u64, data: &[u8]) {
        if self.skip {
            return;
        }
        let len = data.len() as u64;
        let extend = matches!(&self.cur, Some((s, l, _))
            if s + l == off && l + len <= UNIT_MAX && (*s >= HEAD || off + len <= HEAD));
        if !extend {
            self.finish();
            self.cur = Some((off, 0, Sha256::new()));
        }
        let (_, l, h) = self.cur.as_mut().unwrap();
        h.update(data);
        *l += len;
    }

    fn finish(&mut self) {
        if let Some((start, len, h)) = self.cur.take() {
            self.done.push(Unit {
                extent: Extent { start, len },
                sha256: h.finalize().into(),
            });
        }
    }
}

/// Split `[off, off+len)` at the head boundary.
fn split_at_head(off: u64, len: u64) -> Vec<(u64, u64)> {
    if off < HEAD && off + len > HEAD {
        vec![(off, HEAD - off), (HEAD, off + len - HEAD)]
    } else {
        vec![(off, len)]
    }
}

type Produced = Result<(Vec<Unit>, u64)>;

/// The reader side: read (or decompress) the image, check bmap checksums,
/// hash what is to be written, and hand it over in order.
fn produce(
    image: &Image,
    dev_size: u64,
    hash: bool,
    tx: mpsc::SyncSender<Chunk>,
    free: mpsc::Receiver<AlignedBuf>,
) -> Produced {
    let stopped = || anyhow!("the writer stopped");
    let mut units = Units {
        skip: !hash,
        ..Default::default()
    };
    let buffer = |len: u64| {
        let mut b = free
            .try_recv()
            .unwrap_or_else(|_| AlignedBuf::new(CHUNK as usize));
        b.set_len(len as usize);
        b
    };
    let bad_range = |e: &Extent, got: &[u8; 32], want: &[u8; 32]| {
        anyhow!(
            "{}: bytes {}..{} do not match the bmap's SHA-256 (got {}, want {}): the image is corrupt or the bmap belongs to another image; nothing bootable was written",
            image.path.display(),
            e.start,
            e.end(),
            hex(got),
            hex(want)
        )
    };
    if image.format == crate::decompress::Compression::None {
        let ranges = image.ranges.as_deref().unwrap_or_default();
        for (ext, want) in ranges {
            let mut rh = want.map(|_| Sha256::new());
            let mut pos = ext.start;
            while pos < ext.end() {
                let n = (ext.end() - pos).min(CHUNK);
                for (o, l) in split_at_head(pos, n) {
                    let mut buf = buffer(l);
                    image
                        .read_exact_at(buf.as_mut_slice(), o)
                        .with_context(|| {
                            format!("reading bytes {o}..{} of {}", o + l, image.path.display())
                        })?;
                    if let Some(h) = rh.as_mut() {
                        h.update(buf.as_slice());
                    }
                    units.add(o, buf.as_slice());
                    tx.send(Chunk {
                        offset: o,
                        data: buf,
                        advance: l,
                    })
                    .map_err(|_| stopped())?;
                }
                pos += n;
            }
            if let (Some(h), Some(want)) = (rh, want) {
                let got: [u8; 32] = h.finalize().into();
                if &got != want {
                    return Err(bad_range(ext, &got, want));
                }
            }
        }
        units.finish();
        return Ok((units.done, image.size.unwrap_or(0)));
    }

    // A compressed stream: read it all in order, send the mapped parts.
    let mut stream = image.stream()?;
    let ranges = image.ranges.as_deref();
    let mut idx = 0usize;
    let mut rh: Option<Sha256> = None;
    let mut pos = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let n = crate::decompress::read_full(&mut stream, &mut buf)
            .with_context(|| format!("decompressing {}", image.path.display()))?;
        if n == 0 {
            break;
        }
        let end = pos + n as u64;
        if end > dev_size {
            bail!(
                "{} decompresses to more than the device's {} bytes; use a larger card (nothing bootable was written)",
                image.path.display(),
                dev_size
            );
        }
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        match ranges {
            None => pieces.extend(split_at_head(pos, n as u64)),
            Some(ranges) => {
                while let Some((ext, want)) = ranges.get(idx) {
                    if ext.start >= end {
                        break;
                    }
                    let lo = ext.start.max(pos);
                    let hi = ext.end().min(end);
                    if hi > lo {
                        if want.is_some() && rh.is_none() {
                            rh = Some(Sha256::new());
                        }
                        if let Some(h) = rh.as_mut() {
                            h.update(&buf[(lo - pos) as usize..(hi - pos) as usize]);
                        }
                        pieces.extend(split_at_head(lo, hi - lo));
                    }
                    if ext.end() > end {
                        break;
                    }
                    if let (Some(h), Some(want)) = (rh.take(), want) {
                        let got: [u8; 32] = h.finalize().into();
                        if &got != want {
                            return Err(bad_range(ext, &got, want));
                        }
                    }
                    idx += 1;
                }
            }
        }
        let mut advance = n as u64;
        for (o, l) in &pieces {
            let mut data = buffer(*l);
            data.as_mut_slice()
                .copy_from_slice(&buf[(o - pos) as usize..(o + l - pos) as usize]);
            units.add(*o, data.as_slice());
            tx.send(Chunk {
                offset: *o,
                data,
                advance: std::mem::take(&mut advance),
            })
            .map_err(|_| stopped())?;
        }
        if advance > 0 {
            tx.send(Chunk {
                offset: end,
                data: buffer(0),
                advance,
            })
            .map_err(|_| stopped())?;
        }
        pos = end;
    }
    if let Some(size) = image.size
        && pos != size
    {
        bail!(
            "{} decompresses to {pos} bytes, but {} bytes were expected{}; nothing bootable was written",
            image.path.display(),
            size,
            match &image.plan {
                super::source::PlanSource::Bmap(b) => format!(" (from {})", b.display()),
                _ => " (from its index)".into(),
            }
        );
    }
    if let Some(r) = ranges
        && idx < r.len()
    {
        bail!(
            "{} ends at byte {pos}, before the bmap's range at byte {}",
            image.path.display(),
            r[idx].0.start
        );
    }
    units.finish();
    Ok((units.done, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_split_at_the_head_and_at_gaps() {
        let mut u = Units::default();
        u.add(0, &[1; 4096]);
        u.add(4096, &vec![1; (HEAD - 4096) as usize]);
        u.add(HEAD, &[2; 4096]);
        u.add(HEAD + 8192, &[3; 4096]);
        u.finish();
        let e: Vec<_> = u
            .done
            .iter()
            .map(|u| (u.extent.start, u.extent.len))
            .collect();
        assert_eq!(e, vec![(0, HEAD), (HEAD, 4096), (HEAD + 8192, 4096)]);
        assert_eq!(
            split_at_head(HEAD - 10, 20),
            vec![(HEAD - 10, 10), (HEAD, 10)]
        );
    }
}
