//! picluster's cluster-file schema and the contract between the workstation
//! tool and the node agent.
//!
//! Data flows one way: cluster file → [`Cluster`] (validated) → per node
//! [`NodeBundle`] + [`NodeSecrets`] (rendered) → image → node.

pub mod bundle;
pub mod catalog;
pub mod checks;
pub mod cluster;
pub mod cmdline;
pub mod error;
pub mod pki;
pub mod platform;
pub mod render;
mod schema;
pub mod secrets;

pub use bundle::{FileSpec, Mode, NodeBundle, NodeSecrets, Phase};
pub use cluster::{Cluster, Media, Node, Role};
pub use error::{Error, Problem};
pub use secrets::Secrets;

/// The commented sample cluster file `picluster init` writes.
pub const SAMPLE_CLUSTER: &str = include_str!("../examples/cluster.toml");

/// The example key in [`SAMPLE_CLUSTER`], replaced by `picluster init` with the user's own.
pub const SAMPLE_SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAY6kRfOp9z+7vh4YP9lIZNJ7Ul58UKL/YKalSULXWUA example@picluster";
