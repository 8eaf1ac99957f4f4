//! Hostile bmap XML.

use std::path::Path;

use picluster::bmap::{Bmap, BmapError};
use sha2::{Digest, Sha256};

use crate::*;

/// A bmap file with the given header numbers and ranges, its file checksum
/// filled in as bmaptool does (SHA-256 of the text with the value zeroed).
fn bmap_text(size: u64, bs: u64, blocks: u64, mapped: u64, ranges: &[&str]) -> String {
    let zeros = "0".repeat(64);
    let mut x = format!(
        "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n<ImageSize> {size} </ImageSize>\n\
         <BlockSize> {bs} </BlockSize>\n<BlocksCount> {blocks} </BlocksCount>\n\
         <MappedBlocksCount> {mapped} </MappedBlocksCount>\n<ChecksumType> sha256 </ChecksumType>\n\
         <BmapFileChecksum> {zeros} </BmapFileChecksum>\n<BlockMap>\n"
    );
    for r in ranges {
        x.push_str(&format!("<Range{r}</Range>\n"));
    }
    x.push_str("</BlockMap>\n</bmap>\n");
    let sum: String = Sha256::digest(x.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    x.replacen(&zeros, &sum, 1)
}

#[test]
fn hostile_bmaps_are_errors_not_panics() {
    let sha = format!(" chksum=\"{}\">", "ab".repeat(32));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "image of 2^64-1 bytes",
            bmap_text(
                u64::MAX,
                4096,
                1 << 52,
                1,
                &[&format!("{sha} 4503599627370495 ")],
            ),
            "blocks of",
        ),
        (
            "range past the image",
            bmap_text(8192, 4096, 2, 3, &[&format!("{sha} 0-2 ")]),
            "outside",
        ),
        (
            "overlapping ranges",
            bmap_text(
                16384,
                4096,
                4,
                4,
                &[&format!("{sha} 0-2 "), &format!("{sha} 2-2 ")],
            ),
            "overlaps",
        ),
        (
            "short checksum",
            bmap_text(8192, 4096, 2, 1, &[" chksum=\"abcd\"> 0 "]),
            "SHA-256",
        ),
        (
            "huge mapped count",
            bmap_text(8192, 4096, 2, u64::MAX, &[&format!("{sha} 0 ")]),
            "MappedBlocksCount",
        ),
        (
            "range end past u64",
            bmap_text(
                8192,
                4096,
                2,
                1,
                &[&format!("{sha} 0-99999999999999999999999 ")],
            ),
            "FIRST-LAST",
        ),
    ];
    for (what, xml, words) in cases {
        let r = std::panic::catch_unwind(|| {
            Bmap::parse(&xml, Path::new("x.bmap")).map(|b| {
                // Whatever parses must be usable without overflow.
                (b.mapped_bytes(), b.extents().count(), b.to_xml().len())
            })
        });
        match r {
            Ok(Err(e @ BmapError::Format { .. })) => {
                assert!(e.to_string().contains(words), "{what}: {e}")
            }
            Ok(other) => panic!("{what}: {other:?}"),
            Err(_) => panic!("{what}: the parser panicked"),
        }
    }

    // A bmap file far larger than any bmap is refused before it is read.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bmap");
    sparse(&big, 300 * MIB);
    let err = within(30, "Bmap::read", move || Bmap::read(&big).unwrap_err());
    assert!(err.to_string().contains("larger than"), "{err}");
}
