//! One .xz stream made of blocks compressed separately.
//!
//! The .xz format (tukaani.org, "The .xz File Format" 1.2.1, sections 2 and 4)
//! lets a stream hold any number of blocks, each independent, followed by an
//! index listing every block's unpadded and uncompressed size. So a node's
//! artefact can be one stream whose first blocks are the node's own and whose
//! last blocks are copied byte for byte from the cached base: one index, valid
//! for `xz -t`, `xz -l` and for liblzma's threaded decoder, which stops after
//! the first stream of a multi-stream file but decodes the blocks of one
//! stream in parallel when their headers carry their sizes (as the threaded
//! encoder writes them).

use std::io;

/// Stream flags: check type CRC64 (0x04), as `xz` uses by default.
const FLAGS: [u8; 2] = [0x00, 0x04];
const MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
const FOOTER_MAGIC: [u8; 2] = *b"YZ";

/// One block of an .xz stream: its bytes (padded to a multiple of four) and
/// the two sizes the index records for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub bytes: Vec<u8>,
    pub unpadded: u64,
    pub uncompressed: u64,
}

/// The index record of a block, as kept in the tail cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub unpadded: u64,
    pub uncompressed: u64,
}

impl Block {
    pub fn record(&self) -> Record {
        Record {
            unpadded: self.unpadded,
            uncompressed: self.uncompressed,
        }
    }
}

/// Compress `data` into one block, with its sizes in the block header.
pub fn encode_block(data: &[u8], preset: u32) -> io::Result<Block> {
    // The threaded encoder, with one thread and a block as large as the data:
    // it writes exactly one block and, unlike the single-threaded one, stores
    // both sizes in the block header (what parallel decoders need).
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(1)
        .preset(preset)
        .block_size(data.len().max(1) as u64)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .map_err(io::Error::other)?;
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    io::Write::write_all(&mut enc, data)?;
    let whole = enc.finish()?;
    single_block(&whole)
}

fn bad(what: &str) -> io::Error {
    io::Error::other(format!("liblzma wrote an unexpected stream: {what}"))
}

/// The one block of a one-block stream.
fn single_block(stream: &[u8]) -> io::Result<Block> {
    if stream.len() < 32 || stream[..6] != MAGIC || stream[6..8] != FLAGS {
        return Err(bad("header"));
    }
    let footer = &stream[stream.len() - 12..];
    if footer[10..] != FOOTER_MAGIC || footer[8..10] != FLAGS {
        return Err(bad("footer"));
    }
    let index_size = (u64::from(u32::from_le_bytes(footer[4..8].try_into().unwrap())) + 1) * 4;
    let index_start = (stream.len() - 12)
        .checked_sub(index_size as usize)
        .ok_or_else(|| bad("index size"))?;
    let index = &stream[index_start..stream.len() - 12];
    let mut pos = 1;
    let mut next = || varint(index, &mut pos).ok_or_else(|| bad("index"));
    if index[0] != 0 || next()? != 1 {
        return Err(bad("not one block"));
    }
    let (unpadded, uncompressed) = (next()?, next()?);
    let padded = unpadded.div_ceil(4) * 4;
    if 12 + padded as usize != index_start {
        return Err(bad("block size"));
    }
    Ok(Block {
        bytes: stream[12..index_start].to_vec(),
        unpadded,
        uncompressed,
    })
}

/// A multibyte integer of the .xz format (section 1.2) at `buf[*pos..]`.
pub(crate) fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..63).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The stream header that starts the artefact.
pub fn stream_header() -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..6].copy_from_slice(&MAGIC);
    h[6..8].copy_from_slice(&FLAGS);
    h[8..].copy_from_slice(&crc32fast::hash(&FLAGS).to_le_bytes());
    h
}

/// The index and stream footer that end a stream of these blocks.
pub fn stream_end(records: &[Record]) -> Vec<u8> {
    let mut index = vec![0u8];
    put_varint(&mut index, records.len() as u64);
    for r in records {
        put_varint(&mut index, r.unpadded);
        put_varint(&mut index, r.uncompressed);
    }
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let crc = crc32fast::hash(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    let backward = (index.len() / 4 - 1) as u32;
    let mut tail = Vec::with_capacity(12);
    tail.extend_from_slice(&backward.to_le_bytes());
    tail.extend_from_slice(&FLAGS);
    let mut footer = crc32fast::hash(&tail).to_le_bytes().to_vec();
    footer.extend_from_slice(&tail);
    footer.extend_from_slice(&FOOTER_MAGIC);
    index.extend_from_slice(&footer);
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 9) as u8)
            .collect()
    }

    #[test]
    fn blocks_joined_under_one_index_decode_as_one_stream() {
        let parts = [sample(300_000, 7), vec![0; 100_000], sample(5, 3)];
        let mut file = stream_header().to_vec();
        let mut records = Vec::new();
        for p in &parts {
            let b = encode_block(p, 6).unwrap();
            assert_eq!(b.uncompressed, p.len() as u64);
            assert_eq!(b.bytes.len() % 4, 0);
            file.extend_from_slice(&b.bytes);
            records.push(b.record());
        }
        file.extend_from_slice(&stream_end(&records));
        // liblzma's single-stream decoder rejects anything after the first
        // stream or any index mismatch, so this checks the container too.
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(&file[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, parts.concat());
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, 1 << 62] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(varint(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
    }
}
