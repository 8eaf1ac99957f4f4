//! `secrets.toml`: the cluster's shared secrets, kept beside the cluster file
//! with mode 0600 and never committed. Node-specific secrets (the K3s node
//! password) are derived from `node_secret`, so a re-flashed node gets the same
//! password and K3s accepts it under its old name.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::cluster::hex;
use crate::error::{Error, Source};
use crate::pki::ClusterPki;
use crate::platform::Platform;
use crate::platform::credentials::secret_specs;

pub const SECRETS_FILE_NAME: &str = "secrets.toml";

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// K3s server token: servers join each other with it.
    /// (Missing keys load as empty and are reported, or made by `picluster secrets`.)
    #[serde(default)]
    pub k3s_token: String,
    /// K3s agent token (what K3s keeps in `server/agent-token`): the only
    /// token an agent's image carries.
    #[serde(default)]
    pub k3s_agent_token: String,
    /// Key from which every node's stable K3s node password is derived.
    #[serde(default)]
    pub node_secret: String,
    /// Token of the existing cluster named by `[cluster] join`, for agents: its
    /// agent token (`K10…::node:…`) or a plain token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// That cluster's server token (`K10…::server:…`): only servers carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_server_token: Option<String>,
    /// Data-platform credentials, by name (generated when components are chosen).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platform: BTreeMap<String, String>,
    /// The cluster's CAs from `pki/` beside this file (not part of the TOML).
    /// `None` for clusters made before picluster kept one, and with `join`.
    #[serde(skip)]
    pub pki: Option<ClusterPki>,
}

// Secrets never reach logs through Debug.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("k3s_token", &"<redacted>")
            .field("k3s_agent_token", &"<redacted>")
            .field("node_secret", &"<redacted>")
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "join_server_token",
                &self.join_server_token.as_ref().map(|_| "<redacted>"),
            )
            .field("platform", &self.platform.keys().collect::<Vec<_>>())
            .field("pki", &self.pki)
            .finish()
    }
}

/// The secrets file that belongs to a cluster file.
pub fn secrets_path(cluster_file: &Path) -> PathBuf {
    crate::paths::beside(cluster_file, SECRETS_FILE_NAME)
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| Error::Random(e.to_string()))?;
    Ok(hex(&buf))
}

/// `[platform]` keys in today's spelling: `postgresql-password` (files
/// written before the keys were snake_case) reads as `postgresql_password`;
/// when both are present the new spelling wins.
fn normalise_platform_keys(map: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let (new, old): (Vec<_>, Vec<_>) = map.into_iter().partition(|(k, _)| !k.contains('-'));
    for (k, v) in old {
        out.insert(k.replace('-', "_"), v);
    }
    out.extend(new);
    out
}

/// Fresh values for the platform secrets missing from `existing`.
fn generate_missing(
    platform: &Platform,
    existing: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for (name, bytes) in secret_specs(platform) {
        if !existing.contains_key(name) {
            out.push((name.to_string(), random_hex(bytes)?));
        }
    }
    Ok(out)
}

impl Secrets {
    /// Fresh random secrets (256 bits each).
    pub fn generate() -> Result<Secrets, Error> {
        Ok(Secrets {
            k3s_token: random_hex(32)?,
            k3s_agent_token: random_hex(32)?,
            node_secret: random_hex(32)?,
            join_token: None,
            join_server_token: None,
            platform: BTreeMap::new(),
            pki: None,
        })
    }

    /// Load the secrets file beside `cluster_file`, refusing one others can
    /// read, with the CAs of `pki/` when that folder exists.
    pub fn load_for(cluster_file: &Path) -> Result<Secrets, Error> {
        let mut secrets = Secrets::load(&secrets_path(cluster_file), cluster_file)?;
        secrets.pki = ClusterPki::load_for(cluster_file)?;
        Ok(secrets)
    }

    pub fn load(path: &Path, cluster_file: &Path) -> Result<Secrets, Error> {
        Secrets::load_with(path, cluster_file, false).map(|(s, _)| s)
    }

    /// Load a secrets file that may lack some of the core keys, for
    /// `picluster secrets` to add them; returns their names.
    pub fn load_repairable(
        path: &Path,
        cluster_file: &Path,
    ) -> Result<(Secrets, Vec<&'static str>), Error> {
        let (mut secrets, missing) = Secrets::load_with(path, cluster_file, true)?;
        secrets.pki = ClusterPki::load_for(cluster_file)?;
        Ok((secrets, missing))
    }

    fn load_with(
        path: &Path,
        cluster_file: &Path,
        allow_missing: bool,
    ) -> Result<(Secrets, Vec<&'static str>), Error> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut src = Source::new(path, "");
                src.report(
                    None,
                    "",
                    "the secrets file is missing",
                    Some(format!(
                        "create it with `picluster secrets -c {}` (it writes fresh random tokens, mode 0600)",
                        cluster_file.display()
                    )),
                );
                return Err(src.finish().expect_err("a problem was reported"));
            }
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut src = Source::new(path, &text);
        if mode & 0o077 != 0 {
            src.report(
                None,
                "",
                format!("the secrets file has mode {mode:04o}: other users can read the cluster's tokens"),
                Some(format!("run `chmod 600 {}`", path.display())),
            );
        }
        let mut secrets = match toml::from_str::<Secrets>(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                src.toml_problem_redacted(&e);
                None
            }
        };
        if let Some(s) = &mut secrets {
            s.platform = normalise_platform_keys(std::mem::take(&mut s.platform));
        }
        let mut missing = Vec::new();
        if let Some(s) = &secrets {
            for (field, value) in [
                ("k3s_token", &s.k3s_token),
                ("k3s_agent_token", &s.k3s_agent_token),
                ("node_secret", &s.node_secret),
            ] {
                let span = text.find(&format!("{field} ")).map(|i| i..i + field.len());
                if value.is_empty() && span.is_none() {
                    missing.push(field);
                    if !allow_missing {
                        src.report(
                            None,
                            field,
                            "is missing",
                            Some(format!(
                                "run `picluster secrets -c {}` to add it (existing values are kept)",
                                cluster_file.display()
                            )),
                        );
                    }
                } else if value.len() < 16 {
                    src.report(
                        span,
                        field,
                        "is shorter than 16 characters",
                        Some("use a long random value, e.g. `openssl rand -hex 32`".into()),
                    );
                } else if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    src.report(
                        span,
                        field,
                        "may only hold letters, digits, '-', '_' and '.'",
                        Some("use a random hex value, e.g. `openssl rand -hex 32`".into()),
                    );
                }
            }
        }
        if let Some(s) = &secrets {
            for (field, value) in [
                ("join_token", &s.join_token),
                ("join_server_token", &s.join_server_token),
            ] {
                let Some(v) = value else { continue };
                let span = text.find(&format!("{field} ")).map(|i| i..i + field.len());
                let kind = JoinToken::parse(v);
                let wrong = match (&kind, field) {
                    (Err(e), _) => Some(e.clone()),
                    (Ok(JoinToken::Server), "join_token") => {
                        Some("holds a server token (::server:); agents must never carry it".into())
                    }
                    (Ok(JoinToken::Agent), "join_server_token") => {
                        Some("holds an agent token (::node:); servers need the server token".into())
                    }
                    _ => None,
                };
                if let Some(msg) = wrong {
                    src.report(
                        span,
                        field,
                        msg,
                        Some("store the token with `picluster secrets --join-token FILE` (or `-` for stdin)".into()),
                    );
                }
            }
        }
        src.finish()?;
        Ok((
            secrets.expect("parsed when no problem was reported"),
            missing,
        ))
    }

    /// Give the core keys named in `missing` fresh random values.
    pub fn fill_core(&mut self, missing: &[&str]) -> Result<(), Error> {
        for field in missing {
            let slot = match *field {
                "k3s_token" => &mut self.k3s_token,
                "k3s_agent_token" => &mut self.k3s_agent_token,
                "node_secret" => &mut self.node_secret,
                _ => continue,
            };
            *slot = random_hex(32)?;
        }
        Ok(())
    }

    /// Write to `path` with mode 0600; never overwrites an existing file.
    pub fn write_new(&self, path: &Path, cluster_name: &str) -> Result<(), Error> {
        let text = self.to_toml(cluster_name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => Error::Exists(path.to_path_buf()),
                _ => Error::Write {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|source| Error::Write {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Add the data-platform secrets the selection needs and `secrets.toml`
    /// lacks, with fresh random values. Existing values are never changed, so
    /// re-running keeps the cluster's credentials. Returns the names added.
    pub fn fill_platform(&mut self, platform: &Platform) -> Result<Vec<String>, Error> {
        let fresh = generate_missing(platform, &self.platform)?;
        let names = fresh.iter().map(|(k, _)| k.clone()).collect();
        self.platform.extend(fresh);
        Ok(names)
    }

    /// Replace an existing secrets file: written to a temporary file (0600) in
    /// the same directory, synced, then renamed over the old one, so a crash
    /// never leaves a half-written file.
    pub fn rewrite(&self, path: &Path, cluster_name: &str) -> Result<(), Error> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(".{SECRETS_FILE_NAME}.{}.tmp", std::process::id()));
        let write_err = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.to_toml(cluster_name).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }

    pub fn to_toml(&self, cluster_name: &str) -> String {
        let body = toml::to_string(self).expect("secrets serialise");
        format!(
            "# picluster secrets for cluster \"{cluster_name}\".\n\
             # Keep this file private (mode 0600) and out of git. Losing it means\n\
             # re-flashed nodes can no longer rejoin the cluster.\n\n{body}"
        )
    }

    /// Store the token of the cluster `[cluster] join` names, by its kind:
    /// a server token in `join_server_token`, anything else in `join_token`.
    /// Returns the field it went to.
    pub fn set_join_token(&mut self, token: &str) -> Result<&'static str, String> {
        let token = token.trim();
        match JoinToken::parse(token)? {
            JoinToken::Server => {
                self.join_server_token = Some(token.to_string());
                Ok("join_server_token")
            }
            JoinToken::Agent | JoinToken::Plain => {
                self.join_token = Some(token.to_string());
                Ok("join_token")
            }
        }
    }

    /// The K3s node password of `node`: stable across re-flashes, different per node.
    pub fn node_password(&self, node: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.node_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"picluster k3s node password\0");
        mac.update(node.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// The kinds of K3s join token (k3s `pkg/clientaccess/token.go`, `parseToken`:
/// `K10` + an empty or 64-hex CA hash + `::` + `user:password` or a bootstrap
/// token `[a-z0-9]{6}.[a-z0-9]{16}`; anything without the `K10` prefix is a
/// bare password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinToken {
    /// `K10…::server:…`: joins servers (and agents).
    Server,
    /// `K10…::node:…` or a bootstrap token: joins agents only.
    Agent,
    /// A bare token: whatever the cluster was started with.
    Plain,
}

impl JoinToken {
    pub fn parse(token: &str) -> Result<JoinToken, String> {
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "the token holds {c:?}; copy it exactly from the server (sudo cat /var/lib/rancher/k3s/server/token)"
            ));
        }
        let Some(rest) = token.strip_prefix("K10") else {
            return Ok(JoinToken::Plain);
        };
        let Some((hash, creds)) = rest.split_once("::") else {
            return Err("a K10 token must read K10<CA hash>::<user>:<password>".into());
        };
        if !(hash.is_empty() || (hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))) {
            return Err(format!(
                "the CA hash of a K10 token is 64 hexadecimal characters, this one has {}",
                hash.len()
            ));
        }
        let bootstrap = creds.split_once('.').is_some_and(|(id, secret)| {
            let ok = |s: &str, n| {
                s.len() == n
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            };
            ok(id, 6) && ok(secret, 16)
        });
        if bootstrap {
            return Ok(JoinToken::Agent);
        }
        match creds.split_once(':') {
            Some(("server", pw)) if !pw.is_empty() => Ok(JoinToken::Server),
            Some(("node", pw)) if !pw.is_empty() => Ok(JoinToken::Agent),
            Some((user, pw)) if !pw.is_empty() && !user.is_empty() => Err(format!(
                "a K10 token names user \"server\" or \"node\", this one \"{user}\""
            )),
            _ => Err("a K10 token ends in ::server:<password> or ::node:<password>".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster.toml");
        let path = secrets_path(&cluster);
        let s = Secrets::generate().unwrap();
        s.write_new(&path, "homelab").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Secrets::load_for(&cluster).unwrap(), s);
        assert!(matches!(
            s.write_new(&path, "homelab"),
            Err(Error::Exists(_))
        ));
    }

    #[test]
    fn missing_file_says_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Secrets::load_for(&dir.path().join("cluster.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("secrets.toml: the secrets file is missing"),
            "{msg}"
        );
        assert!(msg.contains("picluster secrets -c"), "{msg}");
    }

    #[test]
    fn world_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster.toml");
        let path = secrets_path(&cluster);
        Secrets::generate().unwrap().write_new(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let msg = Secrets::load_for(&cluster).unwrap_err().to_string();
        assert!(
            msg.contains("mode 0644") && msg.contains("chmod 600"),
            "{msg}"
        );
    }

    #[test]
    fn platform_secrets_are_filled_once_and_rewritten_privately() {
        let cluster =
            crate::Cluster::parse(Path::new("cluster.toml"), crate::SAMPLE_CLUSTER).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRETS_FILE_NAME);
        let mut s = Secrets::generate().unwrap();
        s.write_new(&path, "homelab").unwrap();
        let added = s.fill_platform(&cluster.platform).unwrap();
        assert!(added.contains(&"nifi_password".to_string()), "{added:?}");
        assert!(
            added.contains(&"postgresql_password".to_string()),
            "{added:?}"
        );
        let before = s.platform.clone();
        assert!(s.fill_platform(&cluster.platform).unwrap().is_empty());
        assert_eq!(s.platform, before, "existing values are kept");
        s.rewrite(&path, "homelab").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Secrets::load(&path, &dir.path().join("cluster.toml")).unwrap();
        assert_eq!(loaded.platform, before);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(!format!("{s:?}").contains(&before["nifi_password"]));
    }

    #[test]
    fn join_tokens_are_told_apart_and_validated() {
        let hash = "a".repeat(64);
        assert_eq!(
            JoinToken::parse(&format!("K10{hash}::server:s3cret")),
            Ok(JoinToken::Server)
        );
        assert_eq!(
            JoinToken::parse(&format!("K10{hash}::node:s3cret")),
            Ok(JoinToken::Agent)
        );
        assert_eq!(
            JoinToken::parse("K10::abcdef.0123456789abcdef"),
            Ok(JoinToken::Agent)
        );
        assert_eq!(JoinToken::parse("mytoken"), Ok(JoinToken::Plain));
        assert!(JoinToken::parse("K10abc::server:x").is_err());
        assert!(JoinToken::parse(&format!("K10{hash}::server:")).is_err());
        assert!(JoinToken::parse(&format!("K10{hash}::admin:x")).is_err());
        assert!(JoinToken::parse("two words").is_err());
        assert!(JoinToken::parse("").is_err());

        let mut s = Secrets::generate().unwrap();
        assert_eq!(s.set_join_token("plain-token\n"), Ok("join_token"));
        assert_eq!(s.join_token.as_deref(), Some("plain-token"));
        let server = format!("K10{hash}::server:s3cret");
        assert_eq!(s.set_join_token(&server), Ok("join_server_token"));
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn a_server_token_stored_as_the_agent_join_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster.toml");
        let path = secrets_path(&cluster);
        let mut s = Secrets::generate().unwrap();
        s.join_token = Some(format!("K10{}::server:s3cret", "b".repeat(64)));
        s.write_new(&path, "x").unwrap();
        let msg = Secrets::load_for(&cluster).unwrap_err().to_string();
        let line = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .position(|l| l.starts_with("join_token"))
            .unwrap()
            + 1;
        assert!(
            msg.contains(&format!("secrets.toml:{line}:"))
                && msg.contains("join_token: holds a server token")
                && msg.contains("fix: store the token with `picluster secrets --join-token"),
            "{msg}"
        );
    }

    #[test]
    fn node_passwords_are_stable_and_distinct() {
        let s = Secrets::generate().unwrap();
        assert_eq!(s.node_password("pi-1"), s.node_password("pi-1"));
        assert_ne!(s.node_password("pi-1"), s.node_password("pi-2"));
        assert_eq!(s.node_password("pi-1").len(), 64);
        assert!(!format!("{s:?}").contains(&s.k3s_token));
    }

    #[test]
    fn old_dashed_platform_keys_are_read_and_missing_core_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster.toml");
        let path = secrets_path(&cluster);
        let text = format!(
            "k3s_token = \"{a}\"\nnode_secret = \"{a}\"\n\n[platform]\npostgresql-password = \"old\"\njupyter_token = \"new\"\n",
            a = "a".repeat(32)
        );
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let msg = Secrets::load_for(&cluster).unwrap_err().to_string();
        assert!(
            msg.contains("k3s_agent_token")
                && msg.contains("is missing")
                && msg.contains("picluster secrets -c"),
            "{msg}"
        );
        assert!(!msg.contains("missing field"), "{msg}");
        let (mut s, missing) = Secrets::load_repairable(&path, &cluster).unwrap();
        assert_eq!(missing, ["k3s_agent_token"]);
        assert_eq!(s.platform["postgresql_password"], "old");
        assert_eq!(s.platform["jupyter_token"], "new");
        s.fill_core(&missing).unwrap();
        assert_eq!(s.k3s_agent_token.len(), 64);
        assert_eq!(s.k3s_token, "a".repeat(32), "existing values kept");
        s.rewrite(&path, "x").unwrap();
        let again = std::fs::read_to_string(&path).unwrap();
        assert!(again.contains("postgresql_password") && !again.contains("postgresql-password"));
        assert!(Secrets::load_for(&cluster).is_ok());
    }
}
