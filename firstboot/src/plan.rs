//! The plan the agent was handed: the node bundle and its secrets, read and
//! checked, and the files they describe written with their exact owners and modes.

use std::path::Path;

use anyhow::{Context, Result, bail};
use picluster_profiles::bundle::{BUNDLE_FORMAT, FileSpec, NodeBundle, NodeSecrets, node_paths};
use picluster_profiles::error::json_error_redacted;

use crate::accounts::Accounts;
use crate::fsutil::{Perms, read_optional, write_atomic};
use crate::host::{Host, check_node_path};

/// Parse and check a bundle; `source` names it in errors.
pub fn parse_bundle(bytes: &[u8], source: &Path) -> Result<NodeBundle> {
    // Position only: the agent's log lands on the world-readable boot partition.
    let bundle: NodeBundle = serde_json::from_slice(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a picluster node bundle this agent ({}) understands ({}); \
             rebuild the image with a matching `picluster build`",
            source.display(),
            crate::VERSION,
            json_error_redacted(&e)
        )
    })?;
    if bundle.format != BUNDLE_FORMAT {
        bail!(
            "{} has bundle format {}, this agent ({}) reads format {BUNDLE_FORMAT}; \
             rebuild the image with a matching `picluster build`",
            source.display(),
            bundle.format,
            crate::VERSION
        );
    }
    for f in &bundle.files {
        check_node_path(&f.path).with_context(|| format!("{}: files[]", source.display()))?;
    }
    Ok(bundle)
}

/// Parse and check secrets against the bundle they belong to.
pub fn parse_secrets(bytes: &[u8], source: &Path, bundle: &NodeBundle) -> Result<NodeSecrets> {
    // serde_json's own messages quote offending values (a token, a hash): show
    // the position only.
    let secrets: NodeSecrets = serde_json::from_slice(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a picluster secrets file ({})",
            source.display(),
            json_error_redacted(&e)
        )
    })?;
    if secrets.format != BUNDLE_FORMAT {
        bail!(
            "{} has format {}, this agent reads format {BUNDLE_FORMAT}",
            source.display(),
            secrets.format
        );
    }
    if secrets.node != bundle.node.name {
        bail!(
            "{} belongs to node {:?} but the bundle is for {:?}: the boot partition mixes \
             two nodes' files; rebuild this node's image with `picluster build`",
            source.display(),
            secrets.node,
            bundle.node.name
        );
    }
    for f in &secrets.files {
        check_node_path(&f.path).with_context(|| format!("{}: files[]", source.display()))?;
    }
    Ok(secrets)
}

/// The bundle stage 1 installed in `/etc/picluster/node.json`.
pub fn installed_bundle(host: &Host) -> Result<NodeBundle> {
    let path = host.path(node_paths::BUNDLE);
    let Some(bytes) = read_optional(&path)? else {
        bail!(
            "{} does not exist: stage 1 has not run on this node \
             (see picluster-node.log on the boot partition)",
            path.display()
        );
    };
    parse_bundle(&bytes, &path)
}

/// The secrets stage 1 moved to `/etc/picluster/secrets.json`.
pub fn installed_secrets(host: &Host, bundle: &NodeBundle) -> Result<NodeSecrets> {
    let path = host.path(node_paths::SECRETS);
    let Some(bytes) = read_optional(&path)? else {
        bail!(
            "{} does not exist: stage 1 did not install the node's secrets",
            path.display()
        );
    };
    parse_secrets(&bytes, &path, bundle)
}

/// Write file specs below the root with their owners and modes. Returns their paths.
pub fn write_files<'a>(
    host: &Host,
    files: impl IntoIterator<Item = &'a FileSpec>,
) -> Result<Vec<String>> {
    let accounts = Accounts::load(&host.root)?;
    let mut written = Vec::new();
    for f in files {
        check_node_path(&f.path)?;
        let (uid, gid) = accounts.owner_of(&f.path, &f.owner, &f.group)?;
        let perms = Perms {
            mode: f.mode.0,
            uid,
            gid,
        };
        write_atomic(&host.path(&f.path), f.content.as_bytes(), Some(perms))?;
        written.push(f.path.clone());
    }
    Ok(written)
}

/// "3 files: /a, /b, /c" (or "no files").
pub fn describe_files(paths: &[String]) -> String {
    match paths.len() {
        0 => "no files".to_string(),
        1 => format!("1 file: {}", paths[0]),
        n => format!("{n} files: {}", paths.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_bundle_is_reported_by_position_not_content() {
        // A token where a number belongs: serde_json alone would quote it, and
        // the agent's log is on the world-readable boot partition.
        let bytes = br#"{"format": "K10abc::server:sekrit-token"}"#;
        let raw = serde_json::from_slice::<NodeBundle>(bytes).unwrap_err();
        assert!(
            raw.to_string().contains("sekrit"),
            "serde_json quotes values"
        );
        let e = format!(
            "{:#}",
            parse_bundle(bytes, Path::new("b.json")).unwrap_err()
        );
        assert!(!e.contains("sekrit") && e.contains("line 1, column"), "{e}");
    }
}
