//! The picluster node agent, `picluster-node`: configures a freshly flashed
//! Raspberry Pi from the bundle `picluster build` put on its boot partition,
//! and joins it to the K3s cluster. Stage 1 runs once from the kernel command
//! line (no network); stage 2 runs as a systemd service until the node is Ready.
//!
//! Every step acts through a [`host::Host`] (a root directory plus a command
//! runner), is idempotent, and is recorded in a journal, so tests run each
//! step against a temporary root and a node resumes after power loss.

pub mod accounts;
pub mod fsutil;
pub mod host;
pub mod journal;
pub mod k3s;
pub mod log;
pub mod plan;
pub mod stage1;
pub mod stage2;
pub mod status;
pub mod testing;
/// Time formatting, shared with the workstation tool.
pub use picluster_profiles::timefmt;
pub mod user;

/// The agent's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Identifier of the sources this agent was built from (see `source_id.rs`).
pub const SOURCE_ID: &str = env!("PICLUSTER_AGENT_SOURCE");

/// Marker the workstation tool finds in the binary to learn the agent's
/// version and sources: `picluster build` refuses an agent that does not
/// match itself.
#[used]
pub static VERSION_MARKER: &str = concat!(
    "picluster-node-version:",
    env!("CARGO_PKG_VERSION"),
    "+src.",
    env!("PICLUSTER_AGENT_SOURCE"),
    "\0"
);
