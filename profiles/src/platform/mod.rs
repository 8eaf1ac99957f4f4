//! The `[platform]` table: which data-platform components the first server
//! deploys, their sizes and placement, and the budget check that they fit.
//!
//! ```toml
//! [platform]
//! components = ["trino", "nifi", "monitoring", "logs"]
//! # node_memory = "8Gi"                  # every node's RAM (Pi 5: 8 GB)
//! [platform.trino]
//! replicas = 2                           # workers
//! memory = "3Gi"                         # per worker
//! node_selector = { "picluster.io/workload" = "data" }
//! ```
//!
//! Rendering of the manifests lives in [`manifests`]; the pinned charts and
//! images in [`catalog`]. This module is the selection only: it reads the
//! node and network model, never the cluster or the renderers, so it does not
//! re-export [`manifests`] (which renders from the validated cluster and its
//! secrets).

pub mod budget;
pub mod catalog;
mod chart_archive;
pub mod credentials;
pub mod manifests;
mod selftest;
mod settings;
pub mod sizing;
mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Range;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

pub use budget::Budget;
pub use catalog::Component;
pub use settings::{Settings, default_settings};

use crate::checks;
use crate::error::Source;
use crate::network::Network;
use crate::node::{Media, Node};
use settings::{parse_mebibytes, parse_millicores};

impl Serialize for Component {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Why a component is in the selection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Added {
    pub component: Component,
    pub needed_by: Component,
}

/// The `[platform]` table, validated and resolved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Platform {
    /// Selected components including dependencies, in [`Component::ALL`] order.
    pub components: Vec<Component>,
    /// Components resolution added, and which selected one needed them.
    pub added: Vec<Added>,
    pub settings: BTreeMap<Component, Settings>,
    /// MetalLB's address pool (ranges `a.b.c.d-a.b.c.e` or CIDRs).
    pub metallb_addresses: Vec<String>,
    /// Where every pod goes, and what is left on each node.
    pub budget: Budget,
}

impl Platform {
    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    pub fn has(&self, c: Component) -> bool {
        self.components.contains(&c)
    }

    /// The selected S3 store, if any.
    pub fn object_store(&self) -> Option<Component> {
        self.components
            .iter()
            .copied()
            .find(|c| c.is_object_store())
    }

    /// One line per component for `picluster plan`: what it is, and why it
    /// was added when the cluster file did not list it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for &c in &self.components {
            out.push_str(&format!("{c:<13} {}", c.summary()));
            if let Some(a) = self.added.iter().find(|a| a.component == c) {
                out.push_str(&format!(" (added: {} needs it)", a.needed_by));
            }
            out.push('\n');
        }
        out
    }

    /// The per-node budget table `picluster plan` prints (empty selection: `None`).
    pub fn budget_table(&self) -> Option<&Budget> {
        (!self.is_empty()).then_some(&self.budget)
    }

    /// Parse and check the `[platform]` table of the file in `src`; `None`
    /// after reporting problems. `nodes`/`network` are `None` when they were
    /// invalid themselves: checks that need them are then skipped.
    pub fn from_table(
        table: Option<&Spanned<toml::Table>>,
        src: &mut Source<'_>,
        nodes: Option<&[Node]>,
        network: Option<&Network>,
    ) -> Option<Platform> {
        if table.is_none() {
            return Some(Platform::default());
        }
        // Parse the table again from the text to keep a span on every field.
        let raw = match toml::from_str::<RawFile>(src.text) {
            Ok(RawFile {
                platform: Some(raw),
            }) => raw,
            Ok(RawFile { platform: None }) => return Some(Platform::default()),
            Err(e) => {
                src.toml_problem(&e);
                return None;
            }
        };
        Parser { src }.platform(raw, nodes, network)
    }
}

#[derive(Deserialize)]
struct RawFile {
    platform: Option<Spanned<RawPlatform>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    components: Option<Spanned<Vec<Spanned<String>>>>,
    node_memory: Option<Spanned<String>>,
    postgresql: Option<Spanned<RawOverrides>>,
    seaweedfs: Option<Spanned<RawOverrides>>,
    minio: Option<Spanned<RawOverrides>>,
    trino: Option<Spanned<RawOverrides>>,
    nifi: Option<Spanned<RawOverrides>>,
    jupyter: Option<Spanned<RawOverrides>>,
    monitoring: Option<Spanned<RawOverrides>>,
    logs: Option<Spanned<RawOverrides>>,
    metallb: Option<Spanned<RawOverrides>>,
    #[serde(rename = "cert-manager")]
    cert_manager: Option<Spanned<RawOverrides>>,
    longhorn: Option<Spanned<RawOverrides>>,
}

impl RawPlatform {
    fn overrides(&self, c: Component) -> Option<&Spanned<RawOverrides>> {
        match c {
            Component::Postgresql => self.postgresql.as_ref(),
            Component::Seaweedfs => self.seaweedfs.as_ref(),
            Component::Minio => self.minio.as_ref(),
            Component::Trino => self.trino.as_ref(),
            Component::Nifi => self.nifi.as_ref(),
            Component::Jupyter => self.jupyter.as_ref(),
            Component::Monitoring => self.monitoring.as_ref(),
            Component::Logs => self.logs.as_ref(),
            Component::Metallb => self.metallb.as_ref(),
            Component::CertManager => self.cert_manager.as_ref(),
            Component::Longhorn => self.longhorn.as_ref(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverrides {
    replicas: Option<Spanned<i64>>,
    memory: Option<Spanned<String>>,
    cpu: Option<Spanned<String>>,
    storage: Option<Spanned<String>>,
    node_selector: Option<Spanned<BTreeMap<String, String>>>,
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Which override keys a component takes, and the bounds of `replicas` and `memory`.
struct Accepts {
    keys: &'static [&'static str],
    replicas: (u32, u32),
    min_memory_mib: u32,
    replicas_mean: &'static str,
}

fn accepts(c: Component) -> Accepts {
    const SIZED: &[&str] = &["memory", "cpu", "storage", "node_selector"];
    let a = |keys, replicas, min_memory_mib, replicas_mean| Accepts {
        keys,
        replicas,
        min_memory_mib,
        replicas_mean,
    };
    match c {
        Component::Postgresql => a(
            &["replicas", "memory", "cpu", "storage", "node_selector"],
            (1, 3),
            256,
            "PostgreSQL instances (one primary, the rest streaming replicas)",
        ),
        Component::Trino => a(
            &["replicas", "memory", "cpu", "node_selector"],
            (1, 16),
            2048,
            "Trino workers",
        ),
        Component::Seaweedfs | Component::Minio | Component::Jupyter => a(SIZED, (1, 1), 256, ""),
        Component::Nifi => a(SIZED, (1, 1), 1536, ""),
        Component::Monitoring => a(SIZED, (1, 1), 512, ""),
        Component::Logs => a(SIZED, (1, 1), 256, ""),
        Component::Metallb => a(&["addresses"], (1, 1), 0, ""),
        Component::CertManager => a(&[], (1, 1), 0, ""),
        Component::Longhorn => a(&["replicas"], (1, 3), 0, "Longhorn replicas per volume"),
    }
}

struct Parser<'s, 'a> {
    src: &'s mut Source<'a>,
}

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span())
}

impl Parser<'_, '_> {
    fn bad<T>(&mut self, at: &Spanned<T>, field: &str, msg: String, hint: Option<String>) {
        self.src.report(span(at), field, msg, hint);
    }

    fn platform(
        &mut self,
        raw: Spanned<RawPlatform>,
        nodes: Option<&[Node]>,
        network: Option<&Network>,
    ) -> Option<Platform> {
        let table_span = raw.span();
        let raw = raw.into_inner();
        let before = self.src.problems.len();

        // Selection.
        let mut requested: Vec<(Component, Range<usize>)> = Vec::new();
        let components_span = raw
            .components
            .as_ref()
            .map_or(table_span.clone(), Spanned::span);
        if let Some(list) = &raw.components {
            for (i, item) in list.get_ref().iter().enumerate() {
                let field = format!("platform.components[{i}]");
                match Component::from_name(item.get_ref()) {
                    Some(c) if requested.iter().any(|(r, _)| *r == c) => self.bad(
                        item,
                        &field,
                        format!("\"{c}\" is listed twice"),
                        Some("list every component once".into()),
                    ),
                    Some(c) => requested.push((c, item.span())),
                    None => self.bad(
                        item,
                        &field,
                        format!("\"{}\" is not a data-platform component", item.get_ref()),
                        Some(format!(
                            "use any of: {}",
                            Component::ALL.map(Component::name).join(", ")
                        )),
                    ),
                }
            }
        }

        // Conflicts: one S3 store.
        let stores: Vec<&(Component, Range<usize>)> = requested
            .iter()
            .filter(|(c, _)| c.is_object_store())
            .collect();
        if stores.len() > 1 {
            self.src.report(
                Some(stores[1].1.clone()),
                "platform.components",
                format!(
                    "\"{}\" and \"{}\" are both S3 object stores; the platform uses one",
                    stores[0].0, stores[1].0
                ),
                Some(format!(
                    "keep one of them (\"{}\" is the maintained default)",
                    catalog::DEFAULT_OBJECT_STORE
                )),
            );
        }

        // Dependencies: add what is missing, remembering why.
        let mut selected: BTreeSet<Component> = requested.iter().map(|(c, _)| *c).collect();
        let mut added = Vec::new();
        let mut queue: Vec<Component> = requested.iter().map(|(c, _)| *c).collect();
        while let Some(c) = queue.pop() {
            for need in catalog::needs(c) {
                let dep = match need {
                    catalog::Need::One(d) => *d,
                    catalog::Need::ObjectStore => {
                        match selected.iter().copied().find(|s| s.is_object_store()) {
                            Some(_) => continue,
                            None => catalog::DEFAULT_OBJECT_STORE,
                        }
                    }
                };
                if selected.insert(dep) {
                    added.push(Added {
                        component: dep,
                        needed_by: c,
                    });
                    queue.push(dep);
                }
            }
        }
        let components: Vec<Component> = Component::ALL
            .into_iter()
            .filter(|c| selected.contains(c))
            .collect();

        // Node memory.
        let node_memory_mib = match &raw.node_memory {
            None => budget::DEFAULT_NODE_MEMORY_MIB,
            Some(m) => match parse_mebibytes(m.get_ref()) {
                Ok(v) if (2048..=65536).contains(&v) => v,
                Ok(v) => {
                    self.bad(
                        m,
                        "platform.node_memory",
                        format!("{v} MiB is not the memory of a Raspberry Pi"),
                        Some("give each node's RAM, e.g. \"8Gi\" (Pi 5 8 GB) or \"16Gi\"".into()),
                    );
                    budget::DEFAULT_NODE_MEMORY_MIB
                }
                Err(e) => {
                    self.bad(m, "platform.node_memory", e, Some("e.g. \"8Gi\"".into()));
                    budget::DEFAULT_NODE_MEMORY_MIB
                }
            },
        };

        // Overrides.
        let mut settings = BTreeMap::new();
        let mut metallb_addresses = Vec::new();
        for c in Component::ALL {
            let mut s = default_settings(c);
            if let Some(o) = raw.overrides(c) {
                if !selected.contains(&c) {
                    self.bad(
                        o,
                        &format!("platform.{c}"),
                        format!("settings for \"{c}\", which is not selected"),
                        Some(format!(
                            "add \"{c}\" to platform.components or remove the [platform.{c}] table"
                        )),
                    );
                }
                self.overrides(c, o, &mut s, &mut metallb_addresses, network);
            }
            if selected.contains(&c) {
                settings.insert(c, s);
            }
        }

        // Cross-checks that need the nodes.
        if let Some(nodes) = nodes {
            if selected.contains(&Component::Longhorn)
                && !nodes.iter().any(|n| n.media == Media::Nvme)
            {
                self.src.report(
                    Some(components_span.clone()),
                    "platform.components",
                    "Longhorn needs NVMe nodes: every node boots from an SD card, which Longhorn's replica writes wear out and cannot keep up with",
                    Some("set media = \"nvme\" on the nodes that have NVMe drives, or drop \"longhorn\"".into()),
                );
            }
            if let Some(s) = settings.get(&Component::Longhorn) {
                let nvme = nodes.iter().filter(|n| n.media == Media::Nvme).count();
                if nvme > 0 && s.replicas as usize > nvme {
                    let at = raw
                        .longhorn
                        .as_ref()
                        .map_or(components_span.clone(), Spanned::span);
                    self.src.report(
                        Some(at),
                        "platform.longhorn.replicas",
                        format!(
                            "{} replicas per volume, but only {nvme} node(s) boot from NVMe",
                            s.replicas
                        ),
                        Some(format!("use replicas = {nvme} or fewer")),
                    );
                }
            }
        }
        if selected.contains(&Component::Metallb) && metallb_addresses.is_empty() {
            let at = raw
                .metallb
                .as_ref()
                .map_or(components_span.clone(), Spanned::span);
            self.src.report(
                Some(at),
                "platform.metallb.addresses",
                "MetalLB needs an address pool",
                Some("add [platform.metallb] addresses = [\"192.168.0.200-192.168.0.220\"] with free addresses of your LAN, outside the router's DHCP range".into()),
            );
        }

        if self.src.problems.len() > before {
            return None;
        }
        let pods = budget::pods(&components, &settings);
        let budget = match nodes {
            Some(nodes) if !components.is_empty() => {
                match budget::place(nodes, &pods, node_memory_mib) {
                    Ok(b) => b,
                    Err(e) => {
                        self.src.report(
                            Some(components_span),
                            "platform.components",
                            e.message,
                            Some(e.hint),
                        );
                        return None;
                    }
                }
            }
            _ => Budget::default(),
        };
        Some(Platform {
            components,
            added,
            settings,
            metallb_addresses,
            budget,
        })
    }

    fn overrides(
        &mut self,
        c: Component,
        o: &Spanned<RawOverrides>,
        s: &mut Settings,
        addresses: &mut Vec<String>,
        network: Option<&Network>,
    ) {
        let acc = accepts(c);
        let raw = o.get_ref();
        let present: [(&str, Option<Range<usize>>); 6] = [
            ("replicas", raw.replicas.as_ref().map(Spanned::span)),
            ("memory", raw.memory.as_ref().map(Spanned::span)),
            ("cpu", raw.cpu.as_ref().map(Spanned::span)),
            ("storage", raw.storage.as_ref().map(Spanned::span)),
            (
                "node_selector",
                raw.node_selector.as_ref().map(Spanned::span),
            ),
            ("addresses", raw.addresses.as_ref().map(Spanned::span)),
        ];
        for (key, at) in present {
            if let Some(at) = at
                && !acc.keys.contains(&key)
            {
                self.src.report(
                    Some(at),
                    format!("platform.{c}.{key}"),
                    format!("\"{c}\" has no `{key}` setting"),
                    Some(if acc.keys.is_empty() {
                        format!("[platform.{c}] takes no settings; remove the key")
                    } else {
                        format!("[platform.{c}] accepts: {}", acc.keys.join(", "))
                    }),
                );
            }
        }
        if let Some(r) = &raw.replicas
            && acc.keys.contains(&"replicas")
        {
            let v = *r.get_ref();
            let (lo, hi) = acc.replicas;
            if v < i64::from(lo) || v > i64::from(hi) {
                self.bad(
                    r,
                    &format!("platform.{c}.replicas"),
                    format!("{v} is out of range for {}", acc.replicas_mean),
                    Some(format!("use {lo} to {hi}")),
                );
            } else {
                s.replicas = v as u32;
            }
        }
        if let Some(m) = &raw.memory
            && acc.keys.contains(&"memory")
        {
            let field = format!("platform.{c}.memory");
            match parse_mebibytes(m.get_ref()) {
                Ok(v) if v < acc.min_memory_mib => self.bad(
                    m,
                    &field,
                    format!("{v} MiB is too little for {c}"),
                    Some(format!("give at least {}Mi", acc.min_memory_mib)),
                ),
                Ok(v) => s.memory_mib = v,
                Err(e) => self.bad(m, &field, e, Some("e.g. \"3Gi\" or \"1536Mi\"".into())),
            }
        }
        if let Some(cpu) = &raw.cpu
            && acc.keys.contains(&"cpu")
        {
            match parse_millicores(cpu.get_ref()) {
                Ok(v) => s.cpu_m = v,
                Err(e) => self.bad(
                    cpu,
                    &format!("platform.{c}.cpu"),
                    e,
                    Some("e.g. \"500m\" or \"2\" (cores)".into()),
                ),
            }
        }
        if let Some(st) = &raw.storage
            && acc.keys.contains(&"storage")
        {
            match parse_mebibytes(st.get_ref()) {
                Ok(v) if v >= 1024 => s.storage = st.get_ref().clone(),
                Ok(_) => self.bad(
                    st,
                    &format!("platform.{c}.storage"),
                    "is smaller than 1Gi".into(),
                    Some("e.g. \"20Gi\"".into()),
                ),
                Err(e) => self.bad(
                    st,
                    &format!("platform.{c}.storage"),
                    e,
                    Some("e.g. \"20Gi\"".into()),
                ),
            }
        }
        if let Some(sel) = &raw.node_selector
            && acc.keys.contains(&"node_selector")
        {
            for (k, v) in sel.get_ref() {
                let res = checks::label_key(k).and_then(|()| checks::label_value(v));
                if let Err(e) = res {
                    self.bad(sel, &format!("platform.{c}.node_selector.{k}"), e, None);
                } else {
                    s.node_selector.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(list) = &raw.addresses
            && acc.keys.contains(&"addresses")
        {
            for (i, a) in list.get_ref().iter().enumerate() {
                match check_pool(a.get_ref(), network) {
                    Ok(()) => addresses.push(a.get_ref().clone()),
                    Err(e) => self.bad(
                        a,
                        &format!("platform.{c}.addresses[{i}]"),
                        e,
                        Some("give a range \"192.168.0.200-192.168.0.220\" or a CIDR \"192.168.0.224/28\" inside the cluster network".into()),
                    ),
                }
            }
        }
    }
}

fn ip_in(network: Option<&Network>, ip: Ipv4Addr) -> Result<(), String> {
    match network {
        Some(n) if !n.contains(ip) => Err(format!(
            "{ip} is outside the cluster network {}/{}",
            n.network_address(),
            n.prefix
        )),
        _ => Ok(()),
    }
}

/// A MetalLB pool entry: `a-b` range or CIDR, inside the cluster network.
fn check_pool(entry: &str, network: Option<&Network>) -> Result<(), String> {
    if let Some((a, b)) = entry.split_once('-') {
        let (Ok(a), Ok(b)) = (a.trim().parse::<Ipv4Addr>(), b.trim().parse::<Ipv4Addr>()) else {
            return Err(format!("\"{entry}\" is not an address range"));
        };
        if u32::from(a) > u32::from(b) {
            return Err(format!("\"{entry}\" ends before it starts"));
        }
        ip_in(network, a)?;
        ip_in(network, b)
    } else if let Some((ip, prefix)) = entry.split_once('/') {
        let (Ok(ip), Ok(prefix)) = (ip.parse::<Ipv4Addr>(), prefix.parse::<u8>()) else {
            return Err(format!("\"{entry}\" is not a CIDR"));
        };
        if prefix > 32 {
            return Err(format!("\"{entry}\" has a prefix longer than 32"));
        }
        ip_in(network, ip)
    } else {
        Err(format!("\"{entry}\" is neither a range nor a CIDR"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools() {
        assert!(check_pool("192.168.0.200-192.168.0.220", None).is_ok());
        assert!(check_pool("192.168.0.220-192.168.0.200", None).is_err());
        assert!(check_pool("192.168.0.224/28", None).is_ok());
        assert!(check_pool("192.168.0.1", None).is_err());
    }
}
