//! The bmap parser (`flash --bmap`, `IMAGE.bmap` beside an image): whatever
//! parses must be usable (extents, byte counts) and survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picluster::bmap::Bmap;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(b) = Bmap::parse(text, Path::new("fuzz.bmap")) else {
        return;
    };
    let mut end = 0;
    for (e, _) in b.extents() {
        assert!(e.start >= end && e.end() <= b.image_size);
        end = e.end();
    }
    let _ = b.mapped_bytes();
    let again = Bmap::parse(&b.to_xml(), Path::new("fuzz.bmap")).expect("our own XML parses");
    assert_eq!(again, b);
});
