//! SHA-256 helpers: hex, a hashing reader, and whole-file digests.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Digest and size of a file.
pub fn file_sha256(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    reader_sha256(&mut f)
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
