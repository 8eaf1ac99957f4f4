//! What every rendered platform manifest is made of: the [`Manifest`] file,
//! `@@name@@` templates filled with JSON values, and the snippets (resources,
//! YAML streams) the component manifests and the self-test share.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::catalog::Component;
use crate::bundle::node_paths::MANIFESTS_DIR;

/// One file for `/var/lib/rancher/k3s/server/manifests/`.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `None` for the platform self-test, which belongs to no one component.
    pub component: Option<Component>,
    /// `picluster-<component>.yaml` or `picluster-<component>-secrets.yaml`.
    pub file_name: String,
    pub content: String,
    /// Holds Kubernetes Secrets: node secrets only, never the public bundle.
    pub secret: bool,
}

impl std::fmt::Debug for Manifest {
    // Secret manifests hold credentials: show their size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("file_name", &self.file_name)
            .field("secret", &self.secret)
            .field("bytes", &self.content.len())
            .finish()
    }
}

impl Manifest {
    /// Absolute path on the first server.
    pub fn path(&self) -> String {
        format!("{MANIFESTS_DIR}/{}", self.file_name)
    }
}

/// Replace `@@name@@` placeholders.
pub(super) fn fill(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("@@") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("@@") {
            Some(end) if vars.contains_key(&after[..end]) => {
                out.push_str(&vars[&after[..end]]);
                rest = &after[end + 2..];
            }
            // Unknown placeholders stay visible; tests refuse any left over.
            _ => {
                out.push_str("@@");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn resources(mem_mib: u32, cpu_m: u32) -> String {
    let limit = (cpu_m * 4).clamp(500, 4000);
    json!({
        "requests": {"memory": format!("{mem_mib}Mi"), "cpu": format!("{cpu_m}m")},
        "limits": {"memory": format!("{mem_mib}Mi"), "cpu": format!("{limit}m")},
    })
    .to_string()
}

pub(super) fn jstr(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

pub(super) fn yaml_stream(header: &str, docs: &[Value]) -> String {
    let mut out = String::from(header);
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(d).expect("JSON values serialise"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_known_and_keeps_unknown() {
        let mut v = BTreeMap::new();
        v.insert("a".to_string(), "1".to_string());
        assert_eq!(fill("x @@a@@ y @@b@@ ${ENV:Z}", &v), "x 1 y @@b@@ ${ENV:Z}");
    }
}
