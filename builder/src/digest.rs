//! SHA-256 helpers: hex in both directions, a hashing reader, and whole-file digests.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::copy::Span;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 from its 64 hex digits (surrounding whitespace ignored).
pub fn unhex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Digest and size of a file. Holes of sparse files (most of a node image)
/// are hashed as zeros without being read.
pub fn file_sha256(path: &Path) -> io::Result<(String, u64)> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    hash_range(&mut h, &f, 0, len)?;
    Ok((hex(&h.finalize()), len))
}

/// Zeros, for hashing holes without reading them.
pub static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// Feed `n` zero bytes to `h`.
pub fn hash_zeros(h: &mut Sha256, mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// Feed bytes `start..end` of `file` to `h`, holes as zeros without reading them.
pub fn hash_range(h: &mut Sha256, file: &File, start: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    for span in crate::copy::spans(file, start, end, buf.len() as u64)? {
        match span {
            Span::Hole(n) => hash_zeros(h, n),
            Span::Data(e) => {
                crate::interrupt::check().map_err(io::Error::other)?;
                let data = &mut buf[..e.len as usize];
                file.read_exact_at(data, e.start)?;
                h.update(data);
            }
        }
    }
    Ok(())
}

pub fn reader_sha256(r: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        crate::interrupt::check().map_err(io::Error::other)?;
        let got = r.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Parse a `sha256sum`-style line or a bare digest; return the digest for `name`
/// (or the first one when `name` is `None`).
pub fn parse_sums(text: &str, name: Option<&str>) -> Option<String> {
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(digest) = parts.next() else { continue };
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let file = parts.next().map(|f| f.trim_start_matches('*'));
        match (name, file) {
            (None, _) => return Some(digest.to_ascii_lowercase()),
            (Some(want), Some(f)) if f == want || f.rsplit('/').next() == Some(want) => {
                return Some(digest.to_ascii_lowercase());
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_files_hash_like_sha256sum() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        for (len, writes) in [
            (0u64, vec![]),
            (10 << 20, vec![]),
            (
                10 << 20,
                vec![(0u64, 5usize), (3 << 20, 100_000), ((10 << 20) - 7, 7)],
            ),
            (123_457, vec![(4096, 1)]),
        ] {
            let p = dir.path().join("f");
            let f = File::create(&p).unwrap();
            f.set_len(len).unwrap();
            for (off, n) in &writes {
                f.write_all_at(&vec![0xAB; *n], *off).unwrap();
            }
            let whole = std::fs::read(&p).unwrap();
            let want = hex(&Sha256::digest(&whole));
            assert_eq!(file_sha256(&p).unwrap(), (want, len), "{len} {writes:?}");
        }
    }

    #[test]
    fn sums_files_are_parsed_by_name() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!("{a}  k3s\n{b}  k3s-arm64\n");
        assert_eq!(parse_sums(&text, Some("k3s-arm64")), Some("b".repeat(64)));
        assert_eq!(parse_sums(&text, None), Some(a.clone()));
        assert_eq!(parse_sums(&text, Some("k3s-armhf")), None);
        assert_eq!(
            parse_sums(&format!("{a} *dir/x.img.xz"), Some("x.img.xz")),
            Some(a)
        );
        assert_eq!(parse_sums("garbage", None), None);
    }
}
