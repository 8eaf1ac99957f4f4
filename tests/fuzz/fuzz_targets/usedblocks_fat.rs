//! Used blocks of FAT volumes (bare or in a partition table): `usedblocks`'s
//! own FAT reader, as `build` (bmap) and `flash` (no bmap) call it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    picluster_fuzz::used_blocks(data);
});
