//! The text `picluster plan` prints.

use picluster_profiles::Phase;

use super::{AgentState, Plan};
use crate::agent;
use crate::progress;

const MASK: &str = "<secret>";

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Stage1 => "stage 1",
        Phase::BeforeK3s => "before K3s",
        Phase::AfterReady => "after Ready",
    }
}

pub fn text(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster \"{}\": {} node(s), K3s {}, API {}",
        plan.cluster,
        plan.nodes.len(),
        plan.k3s_version,
        plan.api_server
    );
    let _ = writeln!(
        s,
        "base:  {}{}",
        plan.base.location,
        if plan.base.cached {
            " (in cache)"
        } else {
            " (downloaded at build time)"
        }
    );
    if let (Some(codename), Some(fb)) = (&plan.base.codename, plan.base.first_boot) {
        let _ = writeln!(
            s,
            "       {codename}{}; first boot: {}",
            if plan.base.first_boot_known {
                ""
            } else {
                " (by its file name; checked at build time)"
            },
            fb.describe()
        );
    }
    let _ = writeln!(s, "k3s:   {}", plan.k3s_source);
    let a = &plan.agent;
    let agent = match a.state {
        AgentState::Ready => format!(
            "picluster-node {} ({})",
            a.version.as_deref().unwrap_or_default(),
            a.path.as_deref().unwrap_or_default()
        ),
        AgentState::NotBuilt => format!(
            "not built yet (cargo build --release -p picluster-node --target {})",
            agent::TARGET
        ),
        AgentState::Unusable => {
            format!("not usable: {}", a.problem.as_deref().unwrap_or_default())
        }
    };
    let _ = writeln!(s, "agent: {agent}");
    if !plan.platform_text.is_empty() {
        let _ = writeln!(s, "\ndata platform (deployed by the first server):");
        for l in plan.platform_text.lines() {
            let _ = writeln!(s, "    {l}");
        }
    }
    if let Some(b) = &plan.budget_text {
        let _ = writeln!(s, "\n{}", b.trim_end());
    }
    for n in &plan.nodes {
        let _ = writeln!(s);
        let role = if n.init_server {
            "server, initialises the cluster".to_string()
        } else {
            n.role.to_string()
        };
        let _ = writeln!(
            s,
            "== {} ({role}) {} via {}, {}",
            n.name,
            n.address,
            n.gateway,
            n.media.to_uppercase()
        );
        if !n.labels.is_empty() {
            let _ = writeln!(s, "labels: {}", n.labels.join(", "));
        }
        let _ = writeln!(
            s,
            "kernel arguments added: {}",
            n.kernel_args_added.join(" ")
        );
        if let Some(c) = &n.cmdline {
            let _ = writeln!(s, "cmdline.txt: {c}");
        }
        if !n.config_txt_added.is_empty() {
            let _ = writeln!(s, "config.txt gains:");
            for l in n.config_txt_added.lines() {
                let _ = writeln!(s, "    {l}");
            }
        }
        let _ = writeln!(s, "boot partition:");
        for f in &n.boot_files {
            let size = match (f.secret, f.size) {
                (_, Some(z)) => progress::size(z),
                (_, None) => "at build".into(),
            };
            let _ = writeln!(
                s,
                "    {:<34} {:>10}  {}{}",
                f.name,
                size,
                f.what,
                if f.secret { "  [secret]" } else { "" }
            );
        }
        let _ = writeln!(s, "root filesystem (written by the node agent):");
        for f in &n.rootfs_files {
            let _ = writeln!(
                s,
                "    {:<11} {} {:<10} {}{}",
                phase_name(f.phase),
                f.mode,
                f.owner,
                f.path,
                if f.secret {
                    format!("  {MASK}")
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            s,
            "user: {} with {} SSH key(s){}",
            n.user.name,
            n.user.ssh_keys,
            if n.user.keys_only {
                ", keys only (password login disabled)"
            } else {
                ", password set"
            }
        );
    }
    s
}
