//! A node of the cluster as the validated cluster file describes it: what
//! the cluster model, the platform budget and the renderer share.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    Sd,
    Nvme,
}

impl Media {
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Sd => "sd",
            Media::Nvme => "nvme",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub role: Role,
    pub media: Media,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    /// The first server: it initialises the cluster (`cluster-init: true`).
    pub init: bool,
}
