//! What the node tells people: `picluster-node status` (the journal as a
//! table or JSON) and a notice shown at login (`/etc/motd.d/`) and on the
//! console login screen (`/etc/issue.d/`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::fsutil::{Perms, write_atomic};
use crate::host::Host;
use crate::journal::{Journal, Stage};
use crate::timefmt::utc;

/// Read by pam_motd (its default directories include /etc/motd.d).
pub const MOTD_NOTICE: &str = "/etc/motd.d/picluster";
/// Read by agetty before the console login prompt.
pub const ISSUE_NOTICE: &str = "/etc/issue.d/picluster.issue";

/// Show `text` at SSH login and on the console login screen.
pub fn write_notice(host: &Host, text: &str) -> Result<()> {
    write_atomic(
        &host.path(MOTD_NOTICE),
        text.as_bytes(),
        Some(Perms::root(0o644)),
    )?;
    // agetty expands backslash escapes in issue files: keep the text literal.
    let issue = text.replace('\\', "/");
    write_atomic(
        &host.path(ISSUE_NOTICE),
        issue.as_bytes(),
        Some(Perms::root(0o644)),
    )
}

/// The first line of a message, shortened for a notice.
pub fn first_line(msg: &str, max: usize) -> String {
    let line = msg.lines().next().unwrap_or("");
    if line.chars().count() > max {
        let cut: String = line.chars().take(max).collect();
        format!("{cut}...")
    } else {
        line.to_string()
    }
}

/// The journal as a table.
pub fn table(journal: &Journal) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} (cluster {}), journal written by picluster-node {}",
        journal.node.as_deref().unwrap_or("?"),
        journal.cluster.as_deref().unwrap_or("?"),
        journal.agent_version
    );
    let state = if journal.stage_done(Stage::Stage2) {
        "set up: every step done"
    } else if journal.stage_done(Stage::Stage1) {
        "stage 1 done, stage 2 in progress"
    } else {
        "stage 1 in progress"
    };
    let _ = writeln!(out, "state: {state}\n");
    let rows: Vec<[String; 6]> = journal
        .steps
        .iter()
        .map(|r| {
            let note = match (&r.status, &r.last_error, &r.detail) {
                (crate::journal::Status::Failed, Some(e), _) => format!("error: {e}"),
                (_, _, Some(d)) => d.clone(),
                (_, Some(e), None) => format!("last error: {e}"),
                _ => String::new(),
            };
            [
                r.stage.to_string(),
                r.step.clone(),
                r.status.to_string(),
                r.attempts.to_string(),
                utc(r.updated_at),
                note,
            ]
        })
        .collect();
    let header = [
        "STAGE",
        "STEP",
        "STATUS",
        "TRIES",
        "UPDATED (UTC)",
        "DETAIL",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()).take(5) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 5 {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            } else {
                l.push_str(c);
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    for row in &rows {
        let cells = [
            row[0].as_str(),
            row[1].as_str(),
            row[2].as_str(),
            row[3].as_str(),
            row[4].as_str(),
            row[5].as_str(),
        ];
        let _ = writeln!(out, "{}", line(cells));
    }
    out
}

/// `picluster-node status`: the table, or the journal as JSON.
pub fn show(root_journal: &Path, json: bool) -> Result<String> {
    let Some(journal) = Journal::read(root_journal)? else {
        anyhow::bail!(
            "no journal at {}: the agent has not run on this root yet \
             (stage 1 writes it on the first boot after flashing)",
            root_journal.display()
        );
    };
    Ok(if json {
        let mut s = serde_json::to_string_pretty(&journal).expect("journal serialises");
        s.push('\n');
        s
    } else {
        table(&journal)
    })
}
