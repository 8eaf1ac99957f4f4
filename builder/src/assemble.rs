//! Writing several node images from one base in a single pass.
//!
//! A node image is the base with its boot partition patched. Each image first
//! gets its own copy of everything before the root partition (partition table,
//! boot partition), which the caller patches. The root partition, identical in
//! every image, is then read from the base once and handed to one worker per
//! image, which writes it (unless the image is a reflink of the base) and
//! hashes the whole image as it goes, so no image is read back to be hashed.
//! Writeback starts as the data is written, so the final fsync before the
//! atomic rename has little left to wait for.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::copy::{self, Span};
use crate::digest;
use crate::interrupt;
use crate::writeback::WriteBehind;

/// Start `dst` (empty) as the base: a reflink of all of it where the
/// filesystem can (then returns true), else a sparse copy of `..split`.
pub fn start_image(base: &File, dst: &File, split: u64) -> io::Result<bool> {
    if copy::reflink(base, dst) {
        return Ok(true);
    }
    dst.set_len(base.metadata()?.len())?;
    copy::sparse_copy_range(base, dst, 0, split)?;
    Ok(false)
}

/// An image being finished.
pub struct Image<'a> {
    pub file: &'a File,
    /// Already holds the base's bytes after `split` (a reflink).
    pub reflinked: bool,
}

enum Piece {
    Data(u64, Arc<Vec<u8>>),
    Zeros(u64),
}

/// Complete every image with the base's bytes from `split` on, and return
/// each image's SHA-256 (all of it) when `hash` is set.
pub fn finish_images(
    base: &File,
    split: u64,
    images: &[Image<'_>],
    hash: bool,
    bar: &indicatif::ProgressBar,
) -> io::Result<Vec<Option<String>>> {
    let len = base.metadata()?.len();
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for img in images {
            // A few chunks in flight per worker: bounded memory, reader ahead of writers.
            let (tx, rx) = mpsc::sync_channel::<Piece>(4);
            senders.push(tx);
            workers.push(scope.spawn(move || -> io::Result<Option<String>> {
                let mut behind = WriteBehind::new(img.file);
                // The patched boot partition (tens of MiB of K3s and agent)
                // goes to disk while the rest is hashed and copied.
                behind.start(0, split)?;
                let mut h = if hash {
                    let mut h = Sha256::new();
                    digest::hash_range(&mut h, img.file, 0, split)?;
                    Some(h)
                } else {
                    None
                };
                for piece in rx {
                    match piece {
                        Piece::Data(off, chunk) => {
                            if !img.reflinked {
                                img.file.write_all_at(&chunk, off)?;
                                behind.wrote(off, chunk.len() as u64)?;
                            }
                            if let Some(h) = &mut h {
                                h.update(&chunk[..]);
                            }
                        }
                        Piece::Zeros(n) => {
                            if let Some(h) = &mut h {
                                digest::hash_zeros(h, n);
                            }
                        }
                    }
                }
                Ok(h.map(|h| digest::hex(&h.finalize())))
            }));
        }
        let send_all = |piece: &dyn Fn() -> Piece| {
            for tx in &senders {
                // A worker that stopped has an error to report below.
                let _ = tx.send(piece());
            }
        };
        let read = || -> io::Result<()> {
            for span in copy::spans(base, split, len, 4 << 20)? {
                match span {
                    Span::Hole(n) => send_all(&|| Piece::Zeros(n)),
                    Span::Data(e) => {
                        interrupt::check().map_err(io::Error::other)?;
                        let mut chunk = vec![0u8; e.len as usize];
                        base.read_exact_at(&mut chunk, e.start)?;
                        let chunk = Arc::new(chunk);
                        send_all(&|| Piece::Data(e.start, chunk.clone()));
                        bar.set_position(e.end() - split);
                    }
                }
            }
            Ok(())
        };
        let read_result = read();
        drop(senders);
        let results: Vec<io::Result<Option<String>>> = workers
            .into_iter()
            .map(|w| w.join().expect("image workers do not panic"))
            .collect();
        read_result?;
        results.into_iter().collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_get_the_base_tail_and_whole_file_digests() {
        let dir = tempfile::tempdir().unwrap();
        let base_path = dir.path().join("base");
        let base = File::create(&base_path).unwrap();
        base.set_len(40 << 20).unwrap();
        base.write_all_at(b"table", 0).unwrap();
        base.write_all_at(&vec![1u8; 3 << 20], 20 << 20).unwrap();
        base.write_all_at(b"tail", (40 << 20) - 4).unwrap();
        let base = File::open(&base_path).unwrap();
        let split = 16 << 20;
        let mut files = Vec::new();
        for i in 0..3 {
            let p = dir.path().join(format!("node{i}"));
            let f = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            let reflinked = start_image(&base, &f, split).unwrap();
            f.write_all_at(format!("node{i}").as_bytes(), 1 << 20)
                .unwrap(); // "patch"
            files.push((p, f, reflinked));
        }
        let images: Vec<Image> = files
            .iter()
            .map(|(_, f, r)| Image {
                file: f,
                reflinked: *r,
            })
            .collect();
        let bar = indicatif::ProgressBar::hidden();
        let digests = finish_images(&base, split, &images, true, &bar).unwrap();
        let whole_base = std::fs::read(&base_path).unwrap();
        for (i, (p, _, _)) in files.iter().enumerate() {
            let bytes = std::fs::read(p).unwrap();
            assert_eq!(
                bytes[split as usize..],
                whole_base[split as usize..],
                "node{i} tail"
            );
            assert_eq!(
                &bytes[1 << 20..(1 << 20) + 5],
                format!("node{i}").as_bytes()
            );
            assert_eq!(
                digests[i].as_deref(),
                Some(digest::hex(&Sha256::digest(&bytes)).as_str())
            );
        }
        let none = finish_images(&base, split, &images[..1], false, &bar).unwrap();
        assert_eq!(none, vec![None]);
    }
}
