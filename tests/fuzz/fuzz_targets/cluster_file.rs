//! The cluster-file parser and validator (`picluster_profiles::Cluster`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = picluster_profiles::Cluster::parse(Path::new("/fuzz/cluster.toml"), text) {
        let _ = e.to_string();
    }
});
