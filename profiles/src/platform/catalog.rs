//! What picluster can deploy: the components, their dependencies, and every
//! pinned chart and image. Versions live here and nowhere else; overlays/README.md
//! lists the same table for people.

use std::fmt;

/// A data-platform component a cluster file can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Postgresql,
    Seaweedfs,
    Minio,
    Trino,
    Nifi,
    Jupyter,
    Monitoring,
    Logs,
    Metallb,
    CertManager,
    Longhorn,
}

impl Component {
    /// Every component, in the order manifests and tables list them.
    pub const ALL: [Component; 11] = [
        Component::Metallb,
        Component::CertManager,
        Component::Longhorn,
        Component::Postgresql,
        Component::Seaweedfs,
        Component::Minio,
        Component::Trino,
        Component::Nifi,
        Component::Jupyter,
        Component::Monitoring,
        Component::Logs,
    ];

    /// What the sample cluster file turns on.
    pub const DEFAULTS: [Component; 7] = [
        Component::Postgresql,
        Component::Seaweedfs,
        Component::Trino,
        Component::Nifi,
        Component::Jupyter,
        Component::Monitoring,
        Component::Logs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Postgresql => "postgresql",
            Component::Seaweedfs => "seaweedfs",
            Component::Minio => "minio",
            Component::Trino => "trino",
            Component::Nifi => "nifi",
            Component::Jupyter => "jupyter",
            Component::Monitoring => "monitoring",
            Component::Logs => "logs",
            Component::Metallb => "metallb",
            Component::CertManager => "cert-manager",
            Component::Longhorn => "longhorn",
        }
    }

    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }

    /// One line for tables and docs.
    pub fn summary(self) -> &'static str {
        match self {
            Component::Postgresql => "PostgreSQL (CloudNativePG operator + one Cluster)",
            Component::Seaweedfs => "S3 object storage (SeaweedFS, single server)",
            Component::Minio => {
                "S3 object storage (MinIO, last published image; unmaintained upstream)"
            }
            Component::Trino => {
                "Trino SQL engine with an Iceberg catalog (JDBC in PostgreSQL, data in S3)"
            }
            Component::Nifi => "Apache NiFi 2 (single node, single-user login)",
            Component::Jupyter => "JupyterLab with the Trino client and S3 credentials",
            Component::Monitoring => {
                "kube-prometheus-stack: Prometheus, Alertmanager, node-exporter, Grafana"
            }
            Component::Logs => "Loki (monolithic, caches off) + Grafana Alloy",
            Component::Metallb => "MetalLB load balancer (L2) with an address pool",
            Component::CertManager => "cert-manager",
            Component::Longhorn => "Longhorn replicated block storage (NVMe nodes)",
        }
    }

    /// The S3 stores; exactly one may be selected.
    pub fn is_object_store(self) -> bool {
        matches!(self, Component::Seaweedfs | Component::Minio)
    }

    /// Namespace the component's workloads run in.
    pub fn namespace(self) -> &'static str {
        match self {
            Component::Postgresql => "postgresql",
            Component::Seaweedfs | Component::Minio => "s3",
            Component::Trino => "trino",
            Component::Nifi => "nifi",
            Component::Jupyter => "jupyter",
            Component::Monitoring => "monitoring",
            Component::Logs => "logging",
            Component::Metallb => "metallb-system",
            Component::CertManager => "cert-manager",
            Component::Longhorn => "longhorn-system",
        }
    }
}

impl Component {
    /// The pinned Helm charts the component installs, each with the prefix
    /// of its template variables in the component's overlay (`cnpg_version`,
    /// `loki_repo`; empty for `version`/`repo`). Manifests and `plan --json`
    /// both read this list, so they cannot disagree.
    pub fn charts(self) -> &'static [(&'static str, Chart)] {
        match self {
            Component::Postgresql => &[("cnpg", CNPG_OPERATOR), ("cluster", CNPG_CLUSTER)],
            Component::Trino => &[("", TRINO)],
            Component::Monitoring => &[("", KUBE_PROMETHEUS_STACK)],
            Component::Logs => &[("loki", LOKI), ("alloy", ALLOY)],
            Component::Metallb => &[("", METALLB)],
            Component::CertManager => &[("", CERT_MANAGER)],
            Component::Longhorn => &[("", LONGHORN)],
            Component::Seaweedfs | Component::Minio | Component::Nifi | Component::Jupyter => &[],
        }
    }

    /// Container images picluster's own manifests of the component name (images
    /// a chart brings are pinned by the chart's version).
    pub fn images(self) -> &'static [&'static str] {
        match self {
            Component::Seaweedfs => &[SEAWEEDFS_IMAGE, PLATFORM_CHECK_IMAGE],
            Component::Minio => &[MINIO_IMAGE],
            Component::Nifi => &[NIFI_IMAGE],
            Component::Jupyter => &[JUPYTER_IMAGE],
            _ => &[],
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a component needs; resolution adds missing ones.
pub enum Need {
    One(Component),
    /// An S3 store: the selected one, or SeaweedFS when none is.
    ObjectStore,
}

pub fn needs(c: Component) -> &'static [Need] {
    match c {
        Component::Trino => &[Need::One(Component::Postgresql), Need::ObjectStore],
        Component::Jupyter => &[Need::ObjectStore],
        // Loki has no UI of its own: Grafana comes with monitoring.
        Component::Logs => &[Need::One(Component::Monitoring)],
        _ => &[],
    }
}

/// The store added when something needs S3 and none is selected.
pub const DEFAULT_OBJECT_STORE: Component = Component::Seaweedfs;

/// A pinned Helm chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chart {
    pub repo: &'static str,
    pub name: &'static str,
    pub version: &'static str,
}

// Every chart picluster installs. Checked against each repository's index.yaml
// (offline copies) where one was available; see overlays/README.md.
pub const CNPG_OPERATOR: Chart = Chart {
    repo: "https://cloudnative-pg.github.io/charts",
    name: "cloudnative-pg",
    version: "0.29.0",
};
pub const CNPG_CLUSTER: Chart = Chart {
    repo: "https://cloudnative-pg.github.io/charts",
    name: "cluster",
    version: "0.8.1",
};
pub const TRINO: Chart = Chart {
    repo: "https://trinodb.github.io/charts",
    name: "trino",
    version: "1.42.2",
};
/// Carries Grafana 12.11.1 from grafana-community as a dependency.
pub const KUBE_PROMETHEUS_STACK: Chart = Chart {
    repo: "https://prometheus-community.github.io/helm-charts",
    name: "kube-prometheus-stack",
    version: "88.5.3",
};
/// Loki moved to grafana-community (forked at 6.55.0, March 2026).
pub const LOKI: Chart = Chart {
    repo: "https://grafana-community.github.io/helm-charts",
    name: "loki",
    version: "18.11.0",
};
/// Alloy's chart is still published by Grafana Labs.
pub const ALLOY: Chart = Chart {
    repo: "https://grafana.github.io/helm-charts",
    name: "alloy",
    version: "1.11.1",
};
pub const METALLB: Chart = Chart {
    repo: "https://metallb.github.io/metallb",
    name: "metallb",
    version: "0.16.1",
};
pub const CERT_MANAGER: Chart = Chart {
    repo: "https://charts.jetstack.io",
    name: "cert-manager",
    version: "v1.21.1",
};
pub const LONGHORN: Chart = Chart {
    repo: "https://charts.longhorn.io",
    name: "longhorn",
    version: "1.12.1",
};

pub const CHARTS: [Chart; 9] = [
    CNPG_OPERATOR,
    CNPG_CLUSTER,
    TRINO,
    KUBE_PROMETHEUS_STACK,
    LOKI,
    ALLOY,
    METALLB,
    CERT_MANAGER,
    LONGHORN,
];

// Images of the workloads picluster writes itself (all multi-arch with arm64).
pub const SEAWEEDFS_IMAGE: &str = "chrislusf/seaweedfs:4.41";
/// The last MinIO community image published (2025-09-07); later releases are
/// source-only and the Docker Hub repository is gone. Unmaintained upstream.
pub const MINIO_IMAGE: &str = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z";
pub const NIFI_IMAGE: &str = "apache/nifi:2.9.0";
pub const JUPYTER_IMAGE: &str = "quay.io/jupyter/minimal-notebook:python-3.12";
/// Installed into the Jupyter user's home on first start (pip, pinned).
pub const JUPYTER_PIP_PACKAGES: &str = "trino==0.340.0 boto3==1.44.5 pandas==3.1.1";
/// Runs the platform self-test and SeaweedFS's bucket Job (standard-library
/// Python only). Pinned by tag and by the digest of its multi-arch index
/// (linux/arm64 v8 among its platforms), as docker-library/repo-info records
/// it in repos/python/remote/3.13-alpine3.23.md at commit 27b273677675
/// (Python 3.13.15 on Alpine 3.23.6).
pub const PLATFORM_CHECK_IMAGE: &str = "python:3.13-alpine3.23@sha256:6438599575cca0d1df94aeee0d2ae088d4d8846eab554b2ee7784a3a6df0d516";
/// PostgreSQL major version of the CloudNativePG cluster.
pub const POSTGRESQL_MAJOR: &str = "17";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_chart_belongs_to_exactly_one_component() {
        let mut used: Vec<Chart> = Component::ALL
            .iter()
            .flat_map(|c| c.charts().iter().map(|&(_, chart)| chart))
            .collect();
        assert_eq!(used.len(), CHARTS.len(), "{used:?}");
        used.retain(|c| !CHARTS.contains(c));
        assert!(used.is_empty(), "not in CHARTS: {used:?}");
    }
}
