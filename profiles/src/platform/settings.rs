//! A component's resolved size and placement: the defaults, and the
//! Kubernetes quantities overrides are written in. The budget and the
//! manifests read these; the `[platform]` parser in the parent fills them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::catalog::Component;

/// A component's resolved size and placement (defaults merged with overrides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// Instances (PostgreSQL), workers (Trino), or volume replicas (Longhorn).
    pub replicas: u32,
    /// Memory of the main pod, MiB (request = limit).
    pub memory_mib: u32,
    /// CPU request of the main pod, millicores.
    pub cpu_m: u32,
    /// Persistent volume size, a Kubernetes quantity ("20Gi").
    pub storage: String,
    /// Required node labels.
    pub node_selector: BTreeMap<String, String>,
}

/// Defaults, sized for 8 GB Pi 5 nodes (see overlays/README.md).
pub fn default_settings(c: Component) -> Settings {
    let (replicas, memory_mib, cpu_m, storage) = match c {
        Component::Postgresql => (1, 1024, 250, "10Gi"),
        Component::Seaweedfs => (1, 512, 200, "50Gi"),
        Component::Minio => (1, 1024, 250, "50Gi"),
        // One worker of 3 GiB: -Xmx 1984M, 992MB per query per node.
        Component::Trino => (1, 3072, 1000, ""),
        // Heap is half of this (1 GiB); the rest is metaspace, native and OS buffers.
        Component::Nifi => (1, 2048, 500, "20Gi"),
        Component::Jupyter => (1, 1024, 250, "10Gi"),
        // Prometheus: 7 days of a four-node cluster.
        Component::Monitoring => (1, 1024, 250, "20Gi"),
        Component::Logs => (1, 512, 200, "10Gi"),
        Component::Metallb | Component::CertManager => (1, 0, 0, ""),
        // Volume replicas.
        Component::Longhorn => (2, 0, 0, ""),
    };
    Settings {
        replicas,
        memory_mib,
        cpu_m,
        storage: storage.to_string(),
        node_selector: BTreeMap::new(),
    }
}

/// "3Gi", "1536Mi", "1Ti" → MiB.
pub(super) fn parse_mebibytes(q: &str) -> Result<u32, String> {
    let (num, mult) = if let Some(n) = q.strip_suffix("Ti") {
        (n, 1024 * 1024)
    } else if let Some(n) = q.strip_suffix("Gi") {
        (n, 1024)
    } else if let Some(n) = q.strip_suffix("Mi") {
        (n, 1)
    } else {
        return Err(format!(
            "\"{q}\" is not a size in Mi, Gi or Ti (Kubernetes binary units)"
        ));
    };
    num.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "\"{q}\" is not a positive whole number of {}",
                &q[num.len()..]
            )
        })
}

/// "500m" or "2" → millicores.
pub(super) fn parse_millicores(q: &str) -> Result<u32, String> {
    let v = match q.strip_suffix('m') {
        Some(n) => n.parse::<u32>().ok(),
        None => q.parse::<u32>().ok().and_then(|c| c.checked_mul(1000)),
    };
    match v {
        Some(v) if (10..=4000).contains(&v) => Ok(v),
        Some(v) => Err(format!(
            "{v}m is outside 10m..4000m (a Pi 5 has four cores)"
        )),
        None => Err(format!("\"{q}\" is not a CPU quantity")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_mebibytes("3Gi"), Ok(3072));
        assert_eq!(parse_mebibytes("1536Mi"), Ok(1536));
        assert!(parse_mebibytes("3G").is_err());
        assert!(parse_mebibytes("0Gi").is_err());
        assert!(parse_mebibytes("-1Gi").is_err());
        assert_eq!(parse_millicores("500m"), Ok(500));
        assert_eq!(parse_millicores("2"), Ok(2000));
        assert!(parse_millicores("8").is_err());
        assert!(parse_millicores("half").is_err());
    }
}
