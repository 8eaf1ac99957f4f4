//! The picluster node agent (work in progress: see issue "Node agent").

/// Marker the workstation tool finds in the binary to learn the agent's version.
#[used]
pub static VERSION_MARKER: &str =
    concat!("picluster-node-version:", env!("CARGO_PKG_VERSION"), "\0");
