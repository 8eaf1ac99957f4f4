//! Compressing a byte range of a file as a sequence of pieces, on every core,
//! handed over in order. Pieces with the same bytes (the zeros of free space,
//! the same K3s binary in every node's boot partition at the same place) are
//! compressed once per build.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use sha2::{Digest, Sha256};

use super::{Compress, PIECE, xz};
use crate::interrupt;

/// One compressed piece.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// Its xz index record (xz only).
    pub record: Option<xz::Record>,
}

/// Pieces already compressed in this build, by the digest of their bytes,
/// and how many were compressed or reused.
#[derive(Default)]
pub struct Stats {
    memo: Mutex<HashMap<[u8; 32], Arc<Encoded>>>,
    /// Pieces run through the encoder.
    pub encoded: AtomicU64,
    /// Pieces taken from earlier in this build.
    pub reused: AtomicU64,
}

impl Stats {
    pub fn encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    fn piece(&self, how: Compress, data: &[u8]) -> io::Result<Arc<Encoded>> {
        let key: [u8; 32] = Sha256::digest(data).into();
        if let Some(e) = self.memo.lock().expect("not poisoned").get(&key) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(e.clone());
        }
        let e = Arc::new(how.encode(data)?);
        self.encoded.fetch_add(1, Ordering::Relaxed);
        self.memo
            .lock()
            .expect("not poisoned")
            .insert(key, e.clone());
        Ok(e)
    }
}

/// How pieces are made: the format, the threads, the build's memo and a
/// progress bar advanced by the uncompressed bytes done.
pub struct Encoder<'a> {
    pub how: Compress,
    pub threads: usize,
    pub stats: &'a Stats,
    pub bar: &'a indicatif::ProgressBar,
}

/// Compress `src[start..end]` in pieces of [`PIECE`] bytes counted from
/// `start`, and give each to `emit` in order.
pub fn encode_range(
    enc: &Encoder<'_>,
    src: &File,
    start: u64,
    end: u64,
    emit: &mut dyn FnMut(&Encoded) -> io::Result<()>,
) -> io::Result<()> {
    let Encoder {
        how,
        threads,
        stats,
        bar,
    } = *enc;
    let count = end.saturating_sub(start).div_ceil(PIECE) as usize;
    let work = |i: usize| -> io::Result<Arc<Encoded>> {
        interrupt::check().map_err(io::Error::other)?;
        let off = start + i as u64 * PIECE;
        let mut data = vec![0u8; (end - off).min(PIECE) as usize];
        src.read_exact_at(&mut data, off)?;
        stats.piece(how, &data)
    };
    let threads = threads.clamp(1, count.max(1));
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, io::Result<Arc<Encoded>>)>();
    let (job_rx, work) = (&job_rx, &work);
    // `move`: returning early drops both channel ends the workers wait on.
    std::thread::scope(move |scope| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                loop {
                    // The lock is released before the work starts.
                    let next = job_rx.lock().expect("not poisoned").recv();
                    let Ok(i) = next else { break };
                    if done_tx.send((i, work(i))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // At most two pieces per thread are in flight or waiting for their
        // turn: memory stays bounded however slow one piece is.
        let mut queued = 0;
        while queued < count.min(2 * threads) {
            let _ = job_tx.send(queued);
            queued += 1;
        }
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        while next < count {
            let (i, result) = done_rx.recv().expect("a worker holds each queued piece");
            waiting.insert(i, result);
            while let Some(result) = waiting.remove(&next) {
                // Returning drops `job_tx`: the workers finish their piece and stop.
                let piece = result?;
                emit(&piece)?;
                bar.inc((end - start - next as u64 * PIECE).min(PIECE));
                next += 1;
                if queued < count {
                    let _ = job_tx.send(queued);
                    queued += 1;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    fn gz_of(how: Compress, f: &File, len: u64, threads: usize, stats: &Stats) -> Vec<u8> {
        let mut out = how.start();
        let bar = indicatif::ProgressBar::hidden();
        let enc = Encoder {
            how,
            threads,
            stats,
            bar: &bar,
        };
        encode_range(&enc, f, 0, len, &mut |e| {
            out.extend_from_slice(&e.bytes);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn same_bytes_whatever_the_thread_count_and_repeats_compressed_once() {
        // Three pieces of zeros, one of data, and a short last piece.
        let mut data = vec![0u8; (4 * PIECE + 1000) as usize];
        for (i, b) in data[(3 * PIECE) as usize..].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        let (_t, f) = file_with(&data);
        let one = Stats::default();
        let a = gz_of(Compress::Gz, &f, data.len() as u64, 1, &one);
        let four = Stats::default();
        let b = gz_of(Compress::Gz, &f, data.len() as u64, 4, &four);
        assert_eq!(a, b);
        assert_eq!((one.encoded(), one.reused()), (3, 2));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "members decode to the input");
    }

    #[test]
    fn a_read_error_stops_the_workers_and_is_returned() {
        let (_t, f) = file_with(&[1u8; 100]);
        // Asking for more than the file holds fails in a worker.
        let (stats, bar) = (Stats::default(), indicatif::ProgressBar::hidden());
        let enc = Encoder {
            how: Compress::Gz,
            threads: 2,
            stats: &stats,
            bar: &bar,
        };
        let err = encode_range(&enc, &f, 0, 3 * PIECE, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
