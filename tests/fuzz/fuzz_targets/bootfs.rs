//! The FAT32 boot partition through fatfs, as `inspect` and `build` use it:
//! open (with our chain check), list, read every root file, free space, then
//! replace a file and write a new one (what `build` does to a base image).
#![no_main]

use libfuzzer_sys::fuzz_target;
use picluster::bootfs::BootFs;
use picluster::partition::Extent;

fuzz_target!(|data: &[u8]| {
    let Some((file, size)) = picluster_fuzz::disk(data) else {
        return;
    };
    let Ok(fs) = BootFs::open(
        &file,
        Extent {
            start: 0,
            len: size,
        },
        0,
    ) else {
        return;
    };
    let _ = fs.label();
    let Ok(entries) = fs.list() else {
        return;
    };
    for e in entries.iter().filter(|e| !e.is_dir) {
        let _ = fs.read(&e.name);
    }
    let _ = fs.free_bytes();
    if let Some(e) = entries.iter().find(|e| !e.is_dir) {
        let _ = fs.write(
            &e.name,
            b"console=serial0,115200 root=PARTUUID=12345678-02\n",
        );
    }
    let _ = fs.write("picluster-fuzz.txt", &[7u8; 3000]);
    let _ = fs.close();
});
