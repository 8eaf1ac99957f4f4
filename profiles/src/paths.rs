//! Where a cluster's companion files live: beside its cluster file
//! (`secrets.toml`, `pki/`, `kubeconfig`), wherever it is run from.

use std::path::{Path, PathBuf};

/// `name` in the directory of `cluster_file` (`.` for a bare file name).
pub fn beside(cluster_file: &Path, name: &str) -> PathBuf {
    let dir = match cluster_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    dir.join(name)
}
