//! Finding the node agent binary to embed: a static aarch64 `picluster-node`.
//! Order: `--agent`, `$PICLUSTER_AGENT`, next to this executable, then the
//! cross-build output of this workspace.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest;
use crate::rootfs::elf_arch;

pub const TARGET: &str = "aarch64-unknown-linux-musl";
const MARKER: &[u8] = b"picluster-node-version:";

#[derive(Debug, Clone, Serialize)]
pub struct AgentBinary {
    pub path: PathBuf,
    pub version: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the node agent (picluster-node for {TARGET}) was not found; looked at:\n{}\nBuild it with:\n  rustup target add {TARGET}\n  cargo build --release -p picluster-node --target {TARGET}\nor pass --agent PATH",
        .0.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    NotFound(Vec<PathBuf>),
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{}: this node agent is {found}, but this picluster expects {EXPECTED_AGENT}: {why}. Rebuild it with:\n  cargo build --release -p picluster-node --target {TARGET}\nor pass --agent PATH to a matching one",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        found: String,
        why: &'static str,
    },
}

impl AgentError {
    /// The file that was found but refused (none when nothing was found).
    pub fn path(&self) -> Option<&Path> {
        match self {
            AgentError::NotFound(_) => None,
            AgentError::Invalid { path, .. } | AgentError::Mismatch { path, .. } => Some(path),
        }
    }
}

/// The agent version this picluster embeds: its own version, built from the
/// same sources (`picluster --version` shows both).
pub const EXPECTED_AGENT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+src.",
    env!("PICLUSTER_AGENT_SOURCE")
);

/// Where to look, in order.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("PICLUSTER_AGENT") {
        return vec![PathBuf::from(p)];
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        c.push(dir.join("picluster-node-aarch64"));
        // target/{debug,release}/picluster → target/<triple>/release/picluster-node
        if let Some(target) = dir.parent() {
            c.push(target.join(TARGET).join("release/picluster-node"));
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    c.push(
        workspace
            .join("target")
            .join(TARGET)
            .join("release/picluster-node"),
    );
    c.dedup();
    c
}

/// Find and check the agent binary.
pub fn locate(explicit: Option<&Path>) -> Result<AgentBinary, AgentError> {
    let cands = candidates(explicit);
    let path = cands
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| AgentError::NotFound(cands.clone()))?;
    let bytes = fs::read(&path).map_err(|e| AgentError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    check(&path, &bytes)
}

fn check(path: &Path, bytes: &[u8]) -> Result<AgentBinary, AgentError> {
    let invalid = |reason: String| AgentError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let arch = elf_arch(&bytes[..bytes.len().min(20)]);
    if arch != "arm64" {
        return Err(invalid(format!(
            "is {arch}, not an arm64 program; build it with --target {TARGET}"
        )));
    }
    let version = version_of(bytes)
        .ok_or_else(|| invalid("is not a picluster-node binary (no version marker)".into()))?;
    check_version(path, &version)?;
    Ok(AgentBinary {
        path: path.to_path_buf(),
        version,
        sha256: digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes)),
        size: bytes.len() as u64,
    })
}

/// An agent of another release, or a stale cross-build of this one, would run
/// a first boot this picluster did not plan: refuse it.
fn check_version(path: &Path, found: &str) -> Result<(), AgentError> {
    if found == EXPECTED_AGENT || EXPECTED_AGENT.ends_with("+src.unknown") {
        return Ok(());
    }
    let same_release = found.split('+').next() == EXPECTED_AGENT.split('+').next();
    Err(AgentError::Mismatch {
        path: path.to_path_buf(),
        found: found.to_string(),
        why: if same_release {
            "it was built from other sources (a stale cross-build?)"
        } else {
            "it belongs to another picluster release"
        },
    })
}

/// The version a picluster-node binary carries in its marker string.
pub fn version_of(bytes: &[u8]) -> Option<String> {
    let at = bytes.windows(MARKER.len()).position(|w| w == MARKER)?;
    let rest = &bytes[at + MARKER.len()..];
    let end = rest.iter().position(|b| *b == 0).filter(|n| *n <= 64)?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_agent_built_from_these_sources_is_accepted() {
        let p = Path::new("agent");
        assert!(check_version(p, EXPECTED_AGENT).is_ok());
        let version = env!("CARGO_PKG_VERSION");
        let stale = format!("{version}+src.0000000000000000");
        let e = check_version(p, &stale).unwrap_err().to_string();
        assert!(
            e.contains("stale cross-build")
                && e.contains("cargo build --release -p picluster-node"),
            "{e}"
        );
        let e = check_version(p, "0.0.1").unwrap_err().to_string();
        assert!(e.contains("another picluster release"), "{e}");
    }

    #[test]
    fn version_marker_is_found() {
        let mut b = b"\x7fELF junk picluster-node-version:0.3.1\0more".to_vec();
        assert_eq!(version_of(&b).as_deref(), Some("0.3.1"));
        b.truncate(20);
        assert_eq!(version_of(&b), None);
    }
}
