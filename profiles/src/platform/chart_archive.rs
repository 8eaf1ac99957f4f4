//! A tiny Helm chart packed as `.tgz` for a HelmChart's `chartContent`.
//!
//! Custom resources (e.g. MetalLB's address pool) must not race the operator
//! that defines and validates them. K3s applies manifest files in no order,
//! but helm-controller retries a failing install job (backoff limit 1000), so a
//! chart holding only the custom resources installs once the CRDs and the
//! webhook are up. The archive is written byte-for-byte reproducibly: ustar
//! entries with fixed metadata, gzip with stored (uncompressed) deflate blocks.

/// Pack `files` (path inside the chart directory, content) under `<name>/`.
pub fn chart_tgz(name: &str, files: &[(&str, String)]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (path, content) in files {
        let full = format!("{name}/{path}");
        tar.extend_from_slice(&ustar_header(&full, content.len()));
        tar.extend_from_slice(content.as_bytes());
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0); // two zero blocks end the archive
    gzip_stored(&tar)
}

fn ustar_header(path: &str, size: usize) -> [u8; 512] {
    assert!(path.len() <= 100, "chart paths are short by construction");
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{:0width$o}\0", v, width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], 0o644); // mode
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size as u64);
    octal(&mut h[136..148], 0); // mtime: the epoch, for reproducible output
    h[156] = b'0'; // regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(crc & 1));
        }
    }
    !crc
}

fn gzip_stored(data: &[u8]) -> Vec<u8> {
    // RFC 1952 header: no name, mtime 0, unknown OS.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = chunk.len() as u16;
        out.push(last); // BFINAL, BTYPE=00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn archive_unpacks_with_system_tar() {
        let big = "x".repeat(70_000); // spans two stored blocks
        let tgz = chart_tgz(
            "pool",
            &[
                (
                    "Chart.yaml",
                    "apiVersion: v2\nname: pool\nversion: 1.0.0\n".into(),
                ),
                ("templates/big.yaml", big.clone()),
            ],
        );
        assert_eq!(
            tgz,
            chart_tgz(
                "pool",
                &[
                    (
                        "Chart.yaml",
                        "apiVersion: v2\nname: pool\nversion: 1.0.0\n".into()
                    ),
                    ("templates/big.yaml", big.clone())
                ]
            )
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool.tgz");
        std::fs::write(&file, &tgz).unwrap();
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(dir.path())
            .status()
            .expect("tar runs");
        assert!(status.success());
        let chart = std::fs::read_to_string(dir.path().join("pool/Chart.yaml")).unwrap();
        assert!(chart.contains("name: pool"));
        let got = std::fs::read_to_string(dir.path().join("pool/templates/big.yaml")).unwrap();
        assert_eq!(got, big);
        let gz = Command::new("gzip")
            .arg("-t")
            .arg(&file)
            .status()
            .expect("gzip runs");
        assert!(gz.success(), "gzip -t accepts the stream (CRC and length)");
    }
}
