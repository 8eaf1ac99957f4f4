//! The partition-table reader (DOS and GPT), as `inspect`, `build` and
//! `flash` (for the target card's old table) call it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((file, size)) = picluster_fuzz::disk(data) else {
        return;
    };
    if let Ok(t) = picluster::partition::read_table(&file, Path::new("fuzz.img"), size) {
        for p in &t.partitions {
            assert!(
                p.extent.end() <= size,
                "partition {} past the disk",
                p.number
            );
            let _ = p.type_name();
        }
    }
});
