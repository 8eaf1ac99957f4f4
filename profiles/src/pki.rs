//! The cluster's certificate authorities, kept in `pki/` beside `secrets.toml`
//! (directory 0700, every file 0600) and carried only by the image of the node
//! that initialises the cluster.
//!
//! K3s uses the CA files it finds under `/var/lib/rancher/k3s/server/tls/` at
//! first start instead of generating them: `createSigningCertKey` in k3s
//! `pkg/daemons/control/deps/deps.go` returns early when both the `.crt` and the
//! `.key` exist, and `genServiceAccount` keeps an existing `service.key` (k3s
//! v1.33, file names from `CreateRuntimeCertFiles`). Joining servers receive the
//! same files from the cluster's bootstrap data, so no other image needs them.
//!
//! This module only lays the files out, loads and checks them, and derives the
//! CA hash of the join tokens; the keys are made on the workstation by
//! `picluster` (builder), so the node agent, which links this crate, carries no
//! cryptography.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cluster::hex;
use crate::error::{Error, Problem};

/// The folder beside `secrets.toml`.
pub const PKI_DIR: &str = "pki";

/// Where K3s looks for them on a server.
pub const NODE_TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls";

/// The CAs K3s signs with, by their path under `server/tls/` (without the
/// `.crt`/`.key` suffix), with the common name picluster gives each.
pub const CAS: &[(&str, &str)] = &[
    ("server-ca", "k3s-server-ca"),
    ("client-ca", "k3s-client-ca"),
    ("request-header-ca", "k3s-request-header-ca"),
    ("etcd/peer-ca", "etcd-peer-ca"),
    ("etcd/server-ca", "etcd-server-ca"),
];

/// The service-account signing key (a key only, no certificate).
pub const SERVICE_KEY: &str = "service.key";

/// The server CA certificate, whose hash pins the cluster in join tokens.
pub const SERVER_CA_CERT: &str = "server-ca.crt";
pub const CLIENT_CA_CERT: &str = "client-ca.crt";
pub const CLIENT_CA_KEY: &str = "client-ca.key";

/// Every file of a complete PKI, relative to `pki/` (and to `server/tls/`).
pub fn file_names() -> Vec<String> {
    let mut names: Vec<String> = CAS
        .iter()
        .flat_map(|(base, _)| [format!("{base}.crt"), format!("{base}.key")])
        .collect();
    names.push(SERVICE_KEY.to_string());
    names
}

/// The `pki/` folder that belongs to a cluster file.
pub fn pki_path(cluster_file: &Path) -> PathBuf {
    crate::paths::beside(cluster_file, PKI_DIR)
}

/// The CA files, by name relative to `pki/`. Debug shows names only.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterPki {
    pub files: BTreeMap<String, String>,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn problem(path: &Path, message: String, hint: String) -> Error {
    Error::Invalid(vec![Problem {
        file: path.to_path_buf(),
        line: None,
        field: String::new(),
        message,
        hint: Some(hint),
    }])
}

impl ClusterPki {
    /// The CA hash of K3s's secure tokens: the SHA-256 of the server CA file
    /// exactly as stored, because it holds a single certificate (k3s
    /// `pkg/clientaccess/token.go`, `hashCA`; docs.k3s.io cli/token, "Secure").
    pub fn ca_hash(&self) -> String {
        let pem = self.files.get(SERVER_CA_CERT).map(String::as_str);
        hex(&Sha256::digest(pem.unwrap_or_default().as_bytes()))
    }

    /// `K10<CA hash>::<user>:<password>`; `user` is `server` or `node`.
    pub fn secure_token(&self, user: &str, password: &str) -> String {
        format!("K10{}::{user}:{password}", self.ca_hash())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(String::as_str)
    }

    /// Load `pki/` beside `cluster_file`: `Ok(None)` when it does not exist;
    /// an error naming the fix when it is readable by others or incomplete.
    pub fn load_for(cluster_file: &Path) -> Result<Option<ClusterPki>, Error> {
        let dir = pki_path(cluster_file);
        let meta = match std::fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Read { path: dir, source }),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(problem(
                &dir,
                format!(
                    "the CA folder has mode {mode:04o}: other users can read the cluster's CA keys"
                ),
                format!("run `chmod 700 {}`", dir.display()),
            ));
        }
        let mut files = BTreeMap::new();
        let mut missing = Vec::new();
        for name in file_names() {
            let path = dir.join(&name);
            match std::fs::metadata(&path) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    return Err(problem(
                        &path,
                        format!(
                            "has mode {:04o}: other users can read it",
                            m.permissions().mode() & 0o777
                        ),
                        format!("run `chmod 600 {}`", path.display()),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    missing.push(name);
                    continue;
                }
                Err(source) => return Err(Error::Read { path, source }),
            }
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            files.insert(name, text);
        }
        if !missing.is_empty() {
            return Err(problem(
                &dir,
                format!("the CA folder lacks {}", missing.join(", ")),
                format!(
                    "restore it from your backup; picluster never replaces a cluster's CAs \
                     (a new CA means a new cluster: move {} away and run `picluster secrets -c {}`)",
                    dir.display(),
                    cluster_file.display()
                ),
            ));
        }
        Ok(Some(ClusterPki { files }))
    }

    /// Write a new `pki/` (0700, files 0600); never touches an existing one.
    /// A failure removes what was written, so no half PKI is left behind.
    pub fn write_new(&self, dir: &Path) -> Result<(), Error> {
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::Exists(dir.to_path_buf()),
                _ => Error::Write {
                    path: dir.to_path_buf(),
                    source: e,
                },
            })?;
        let result = (|| {
            for (name, content) in &self.files {
                let path = dir.join(name);
                if let Some(parent) = path.parent().filter(|p| !p.exists()) {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(parent)
                        .map_err(werr(parent))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(werr(&path))?;
                f.write_all(content.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(werr(&path))?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterPki {
        ClusterPki {
            files: file_names()
                .into_iter()
                .map(|n| (n.clone(), format!("contents of {n}\n")))
                .collect(),
        }
    }

    #[test]
    fn the_layout_is_k3s_own() {
        // k3s pkg/daemons/control/deps/deps.go, CreateRuntimeCertFiles.
        let names = file_names();
        for n in [
            "server-ca.crt",
            "server-ca.key",
            "client-ca.crt",
            "client-ca.key",
            "request-header-ca.crt",
            "request-header-ca.key",
            "etcd/peer-ca.crt",
            "etcd/peer-ca.key",
            "etcd/server-ca.crt",
            "etcd/server-ca.key",
            "service.key",
        ] {
            assert!(names.contains(&n.to_string()), "{n}");
        }
        assert_eq!(names.len(), 11);
    }

    #[test]
    fn written_once_private_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster.toml");
        assert_eq!(ClusterPki::load_for(&cluster).unwrap(), None);
        let pki = sample();
        let path = pki_path(&cluster);
        pki.write_new(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let key = path.join("etcd/peer-ca.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(ClusterPki::load_for(&cluster).unwrap(), Some(pki.clone()));
        assert!(matches!(pki.write_new(&path), Err(Error::Exists(_))));
        assert!(!format!("{pki:?}").contains("contents of"));
    }

    #[test]
    fn readable_or_incomplete_folders_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster.toml");
        let path = pki_path(&cluster);
        sample().write_new(&path).unwrap();
        let key = path.join("client-ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let msg = ClusterPki::load_for(&cluster).unwrap_err().to_string();
        assert!(
            msg.contains("client-ca.key") && msg.contains("chmod 600"),
            "{msg}"
        );
        std::fs::remove_file(&key).unwrap();
        let msg = ClusterPki::load_for(&cluster).unwrap_err().to_string();
        assert!(msg.contains("lacks client-ca.key"), "{msg}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let msg = ClusterPki::load_for(&cluster).unwrap_err().to_string();
        assert!(
            msg.contains("mode 0755") && msg.contains("chmod 700"),
            "{msg}"
        );
    }

    #[test]
    fn tokens_carry_the_hash_of_the_server_ca_file() {
        let pki = sample();
        let want = hex(&Sha256::digest(b"contents of server-ca.crt\n"));
        assert_eq!(pki.ca_hash(), want);
        assert_eq!(
            pki.secure_token("node", "pw"),
            format!("K10{want}::node:pw")
        );
    }
}
