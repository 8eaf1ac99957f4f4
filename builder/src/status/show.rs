//! The report as an aligned table (colour only on a terminal) or as JSON.

use super::Report;

fn cell(v: Option<bool>, yes: &str, no: &str) -> String {
    match v {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "-".to_string(),
    }
}

fn aligned(rows: &[Vec<String>], colour: bool) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            let painted = match (colour, c.as_str()) {
                (true, "up" | "yes" | "succeeded") => format!("\x1b[32m{c}\x1b[0m"),
                (true, "down" | "no" | "failed" | "not registered") => {
                    format!("\x1b[31m{c}\x1b[0m")
                }
                _ => c.clone(),
            };
            line.push_str(&painted);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human table.
pub fn table(r: &Report, colour: bool) -> String {
    let mut rows = vec![
        [
            "NODE",
            "ROLE",
            "IP",
            "SSH",
            "API",
            "REGISTERED",
            "READY",
            "ROLES",
            "K3S",
            "STEP",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in &r.nodes {
        let asked = r.api_error.is_none();
        rows.push(vec![
            n.name.clone(),
            n.role.clone(),
            n.ip.clone(),
            cell(Some(n.ssh), "up", "down"),
            cell(n.api_port, "up", "down"),
            if !asked {
                "?".into()
            } else if n.registered {
                "yes".into()
            } else {
                "not registered".into()
            },
            cell(n.ready, "yes", "no"),
            if n.roles.is_empty() {
                "-".into()
            } else {
                n.roles.join(",")
            },
            n.k3s_version.clone().unwrap_or_else(|| "-".into()),
            match (&n.step, &n.agent_version) {
                (Some(s), Some(v)) => format!("{s} (agent {v})"),
                (Some(s), None) => s.clone(),
                _ => "-".into(),
            },
        ]);
    }
    let mut out = format!("cluster \"{}\"", r.cluster);
    if let Some(api) = &r.api {
        out.push_str(&format!(", API {api}"));
    }
    out.push('\n');
    out.push_str(&aligned(&rows, colour));
    if let Some(e) = &r.api_error {
        out.push_str(&format!(
            "API: no answer ({e}); nodes show TCP reachability only\n"
        ));
    }
    if !r.components.is_empty() {
        let mut rows = vec![
            ["COMPONENT", "NAMESPACE", "JOB", "STATE"]
                .map(String::from)
                .to_vec(),
        ];
        for c in &r.components {
            rows.push(vec![
                c.name.clone(),
                c.namespace.clone(),
                c.job.clone().unwrap_or_else(|| "-".into()),
                c.state.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&aligned(&rows, colour));
    }
    let total = r.nodes.len();
    let ready = r.nodes.iter().filter(|n| n.ready == Some(true)).count();
    out.push_str(&if r.ready {
        format!("\nall {total} nodes Ready, every component installed\n")
    } else {
        format!("\n{ready} of {total} nodes Ready\n")
    });
    out
}

/// The JSON form (schema [`super::SCHEMA`]).
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).expect("the report serialises")
}
