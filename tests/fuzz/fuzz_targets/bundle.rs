//! The node bundle and node secrets JSON (what the agent and `inspect` read
//! from a card): whatever parses must serialise and parse back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picluster_profiles::{NodeBundle, NodeSecrets};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = serde_json::from_slice::<NodeBundle>(data) {
        let again: NodeBundle = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
        assert_eq!(again, b);
    }
    if let Ok(s) = serde_json::from_slice::<NodeSecrets>(data) {
        let again: NodeSecrets = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }
});
