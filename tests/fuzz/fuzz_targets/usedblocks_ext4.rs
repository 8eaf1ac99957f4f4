//! Used blocks of ext2/3/4 filesystems (bare or in a partition table):
//! `usedblocks`'s ext4 reader, as `build` (bmap) and `flash` (no bmap) call
//! it; then the rootfs reader (ext4-view behind our superblock check) as
//! `inspect` and `build` use it on a base image.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((file, size)) = picluster_fuzz::used_blocks(data) {
        let whole = picluster::partition::Extent {
            start: 0,
            len: size,
        };
        let _ = picluster::rootfs::inspect(&file, whole);
    }
});
