//! `[network]` and `[[nodes]]`: the LAN and every node's name, address, role,
//! boot medium, labels and taints.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use toml::Spanned;

use super::convert::Builder;
use crate::checks;
use crate::network::Network;
use crate::node::{Media, Node, Role};
use crate::schema::{RawNetwork, RawNode};

impl Builder<'_, '_> {
    pub(super) fn network(&mut self, n: &RawNetwork) -> Option<Network> {
        let prefix = *n.prefix.get_ref();
        let prefix_ok = self.check(
            &n.prefix,
            "network.prefix",
            if (8..=30).contains(&prefix) {
                Ok(())
            } else {
                Err(format!("{prefix} is not a usable IPv4 prefix length"))
            },
            Some("use the length of your LAN's netmask, e.g. 24 for 255.255.255.0 (8 to 30)"),
        );
        let gateway = self.ipv4(&n.gateway, "network.gateway");
        let mut dns = Vec::new();
        let mut dns_ok = true;
        for (i, d) in n.dns.iter().enumerate() {
            match self.ipv4(d, &format!("network.dns[{i}]")) {
                Some(ip) => dns.push(ip),
                None => dns_ok = false,
            }
        }
        let interface = match &n.interface {
            None => Some("eth0".to_string()),
            Some(i) => {
                let v = i.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= 15
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                self.check(
                    i,
                    "network.interface",
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("\"{v}\" is not a network interface name"))
                    },
                    Some("the Pi's wired interface is eth0"),
                )
                .then(|| v.clone())
            }
        };
        let gateway = gateway?;
        if dns.is_empty() && dns_ok {
            dns.push(gateway);
        }
        let net = Network {
            prefix: u8::try_from(prefix).ok().filter(|_| prefix_ok)?,
            gateway,
            dns,
            interface: interface?,
        };
        if gateway == net.network_address() || gateway == net.broadcast() {
            self.bad(
                &n.gateway,
                "network.gateway",
                format!(
                    "{gateway} is the network or broadcast address of {}/{}",
                    net.network_address(),
                    net.prefix
                ),
                Some("give your router's address on the LAN"),
            );
            return None;
        }
        dns_ok.then_some(net)
    }

    pub(super) fn nodes(
        &mut self,
        raw: &[Spanned<RawNode>],
        net: Option<&Network>,
        join: bool,
    ) -> Option<Vec<Node>> {
        if raw.is_empty() {
            self.src.report(
                None,
                "nodes",
                "the cluster has no nodes",
                Some("add at least one [[nodes]] table with name, ip and role = \"server\"".into()),
            );
            return None;
        }
        let mut ok = true;
        let mut nodes = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ips: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut first_server: Option<usize> = None;
        for (i, sn) in raw.iter().enumerate() {
            let n = sn.get_ref();
            let field = |f: &str| format!("nodes[{i}].{f}");
            let name = n.name.get_ref();
            let mut node_ok = self.check(
                &n.name,
                &field("name"),
                checks::hostname(name),
                Some("use a lower-case RFC 1123 name such as pi-worker-1"),
            );
            if node_ok && let Some(prev) = names.insert(name.clone(), i) {
                self.bad(
                    &n.name,
                    &field("name"),
                    format!("\"{name}\" is already the name of nodes[{prev}]"),
                    Some("node names must be unique"),
                );
                node_ok = false;
            }
            let ip = self.ipv4(&n.ip, &field("ip"));
            if let (Some(ip), Some(net)) = (ip, net) {
                if !net.contains(ip) {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!(
                            "{ip} is outside the cluster network {}/{}",
                            net.network_address(),
                            net.prefix
                        ),
                        Some(&format!(
                            "use an address in {}/{} (network.gateway {} and network.prefix {})",
                            net.network_address(),
                            net.prefix,
                            net.gateway,
                            net.prefix
                        )),
                    );
                    node_ok = false;
                } else if ip == net.gateway {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!("{ip} is the gateway's address"),
                        Some("give the node an address of its own"),
                    );
                    node_ok = false;
                } else if ip == net.network_address() || ip == net.broadcast() {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!("{ip} is the network or broadcast address"),
                        Some("give the node a host address"),
                    );
                    node_ok = false;
                }
            }
            if let Some(ip) = ip {
                if let Some(prev) = ips.insert(ip, i) {
                    self.bad(
                        &n.ip,
                        &field("ip"),
                        format!("{ip} is already the address of nodes[{prev}]"),
                        Some("every node needs its own IP"),
                    );
                    node_ok = false;
                }
            } else {
                node_ok = false;
            }
            let role = match n.role.get_ref().as_str() {
                "server" => Some(Role::Server),
                "agent" => Some(Role::Agent),
                other => {
                    self.bad(
                        &n.role,
                        &field("role"),
                        format!("\"{other}\" is not a role"),
                        Some("use \"server\" (control plane + etcd) or \"agent\" (worker)"),
                    );
                    None
                }
            };
            if role == Some(Role::Server) && first_server.is_none() {
                first_server = Some(i);
            }
            let media = match n.media.as_ref().map(|m| m.get_ref().as_str()) {
                None | Some("sd") => Some(Media::Sd),
                Some("nvme") => Some(Media::Nvme),
                Some(other) => {
                    let m = n.media.as_ref().expect("matched Some");
                    self.bad(
                        m,
                        &field("media"),
                        format!("\"{other}\" is not a boot medium"),
                        Some("use \"sd\" or \"nvme\""),
                    );
                    None
                }
            };
            let mut labels = BTreeMap::new();
            if let Some(l) = &n.labels {
                for (k, v) in l.get_ref() {
                    let res = checks::node_label_key(k).and_then(|()| checks::label_value(v));
                    let hint = (checks::label_key(k).is_ok() && checks::node_label_key(k).is_err())
                        .then(|| {
                            format!(
                                "apply it once the node has joined: kubectl label node {} {k}={v}",
                                name
                            )
                        });
                    if self.check(l, &format!("nodes[{i}].labels.{k}"), res, hint.as_deref()) {
                        labels.insert(k.clone(), v.clone());
                    } else {
                        node_ok = false;
                    }
                }
            }
            let mut taints = Vec::new();
            for (j, t) in n.taints.iter().enumerate() {
                if self.check(
                    t,
                    &format!("nodes[{i}].taints[{j}]"),
                    checks::taint(t.get_ref()),
                    None,
                ) {
                    taints.push(t.get_ref().clone());
                } else {
                    node_ok = false;
                }
            }
            match (node_ok, ip, role, media) {
                (true, Some(ip), Some(role), Some(media)) => nodes.push(Node {
                    name: name.clone(),
                    ip,
                    role,
                    media,
                    labels,
                    taints,
                    // Joining a cluster described elsewhere: nobody initialises one.
                    init: !join && Some(i) == first_server,
                }),
                _ => ok = false,
            }
        }
        let servers = raw
            .iter()
            .filter(|n| n.get_ref().role.get_ref() == "server")
            .count();
        if servers == 0 && join {
            // Agents joining an existing control plane (the seed layout).
        } else if servers == 0 {
            self.src.report(
                Some(raw[0].span()),
                "nodes",
                "no node has role = \"server\"",
                Some("make the first node a server (it initialises the cluster), or set `join` to join an existing cluster".into()),
            );
            ok = false;
        } else if servers % 2 == 0 && !join {
            let last = raw
                .iter()
                .rev()
                .find(|n| n.get_ref().role.get_ref() == "server")
                .expect("servers > 0");
            self.src.report(
                Some(last.span()),
                "nodes",
                format!(
                    "{servers} servers: embedded etcd needs an odd number of servers to keep quorum"
                ),
                Some(format!(
                    "use {} or {} servers (turn one into an agent, or add one)",
                    servers - 1,
                    servers + 1
                )),
            );
            ok = false;
        }
        ok.then_some(nodes)
    }
}
