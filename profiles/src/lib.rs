//! picluster's cluster-file schema and the contract between the workstation
//! tool and the node agent.
//!
//! Data flows one way: cluster file → [`Cluster`] (validated) → per node
//! [`NodeBundle`] + [`NodeSecrets`] (rendered) → image → node. Modules import
//! each other the same way only (`tests/module_graph.rs` names any circle):
//! the node and network model, then the cluster with its platform selection,
//! then secrets, then the renderers.

pub mod bundle;
pub mod catalog;
pub mod checks;
pub mod cluster;
pub mod cmdline;
pub mod error;
pub mod network;
pub mod node;
pub mod paths;
pub mod pki;
pub mod platform;
pub mod render;
mod sample;
mod schema;
pub mod secrets;
pub mod timefmt;

pub use bundle::{FileSpec, Mode, NodeBundle, NodeSecrets, Phase};
pub use cluster::{Cluster, Media, Node, Role};
pub use error::{Error, Problem};
pub use sample::{SAMPLE_CLUSTER, SAMPLE_SSH_KEY};
pub use secrets::Secrets;
