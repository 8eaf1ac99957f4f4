//! The administrator account. Raspberry Pi OS Bookworm ships uid 1000 named
//! `pi` with a rename wizard pending; like Raspberry Pi's own `userconf`, the
//! agent renames that account (login, home, primary group, subuid/subgid,
//! sudoers) instead of adding a second one. Every action checks the current
//! state first, so a run interrupted half-way finishes on the next one.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use picluster_profiles::bundle::UserPlan;

use crate::accounts::{Accounts, User};
use crate::fsutil::{Perms, ensure_dir, write_atomic};
use crate::host::{Cmd, Host};

/// Files Raspberry Pi OS's `userconf` edits when it renames the first user:
/// (path, separator after the name).
const NAME_FILES: &[(&str, char)] = &[
    ("/etc/subuid", ':'),
    ("/etc/subgid", ':'),
    ("/etc/sudoers.d/010_pi-nopasswd", ' '),
    ("/etc/sudoers.d/90-cloud-init-users", ' '),
];

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 32
}

/// Rename or create the account, set its groups, password and SSH keys.
pub fn configure(host: &Host, plan: &UserPlan, password_hash: Option<&str>) -> Result<String> {
    let name = plan.name.as_str();
    if !valid_name(name) || name == "root" {
        bail!(
            "user name {name:?} is not usable: lower-case letters, digits, '-' and '_', \
             starting with a letter, at most 32 characters, not root (fix [access] user)"
        );
    }
    let before = Accounts::load(&host.root)?;
    let mut done = Vec::new();

    let account = match (before.user(name), before.user_by_uid(plan.uid)) {
        // Someone else's account (a service's, say `www-data` or `proxy`):
        // taking it over would give the administrator's keys and sudo to it,
        // keep its nologin shell and move its home. Never.
        (Some(u), _) if u.uid != plan.uid => bail!(
            "the image already has an account {name:?} with uid {} (home {}), not uid {}: it \
             belongs to the system, and picluster will not turn it into the administrator. \
             Choose another [access] user in the cluster file and rebuild the image",
            u.uid,
            u.home,
            plan.uid
        ),
        (Some(u), _) => u.clone(),
        (None, Some(first)) => {
            host.run(host.shadow_tool("usermod").args(["-l", name, &first.name]))?;
            done.push(format!(
                "renamed {} (uid {}) to {name}",
                first.name, first.uid
            ));
            User {
                name: name.to_string(),
                ..first.clone()
            }
        }
        (None, None) => {
            create(host, plan)?;
            done.push(format!("created {name}"));
            Accounts::load(&host.root)?
                .user(name)
                .cloned()
                .with_context(|| format!("useradd did not create user {name} in /etc/passwd"))?
        }
    };

    // Earlier names of the account (the `pi` of the image), for the files that
    // mention it. Derived from what is left of it, so a resumed run finds them.
    let mut old_names: Vec<String> = Vec::new();
    let mut remember = |n: &str| {
        if n != name && !n.is_empty() && !old_names.iter().any(|o| o == n) {
            old_names.push(n.to_string());
        }
    };
    if let Some(first) = before.user_by_uid(plan.uid) {
        remember(&first.name);
    }
    if let Some(g) = before.group_by_gid(account.gid) {
        remember(&g.name);
    }
    if let Some(base) = Path::new(&account.home).file_name() {
        remember(&base.to_string_lossy());
    }

    // Raspberry Pi OS Trixie images since 2026-04-13 give the first user a
    // nologin shell when no password was set at build time (pi-gen commit
    // 4b9cd15c, stage1/01-sys-tweaks/00-run.sh): the administrator logs in.
    if !login_shell(&account.shell) {
        host.run(host.shadow_tool("usermod").args(["-s", LOGIN_SHELL, name]))?;
        done.push(format!("shell {} -> {LOGIN_SHELL}", account.shell));
    }

    let home = format!("/home/{name}");
    if account.home != home {
        host.run(host.shadow_tool("usermod").args(["-m", "-d", &home, name]))?;
        done.push(format!("moved home {} to {home}", account.home));
    }

    let primary = before
        .group_by_gid(account.gid)
        .filter(|g| g.name != name && before.group(name).is_none());
    if let Some(g) = primary {
        host.run(host.shadow_tool("groupmod").args(["-n", name, &g.name]))?;
        done.push(format!("renamed group {} to {name}", g.name));
    }

    for old in &old_names {
        for (path, sep) in NAME_FILES {
            if rename_in_file(host, path, old, name, *sep)? {
                done.push(format!("{old} -> {name} in {path}"));
            }
        }
    }

    let (wanted, missing): (Vec<&str>, Vec<&str>) = plan
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| *g != name)
        .partition(|g| before.group(g).is_some());
    // `-a` only adds: repeating it is harmless.
    if !wanted.is_empty() {
        host.run(
            host.shadow_tool("usermod")
                .args(["-a", "-G", &wanted.join(","), name]),
        )?;
    }
    done.push(format!("groups {}", wanted.join(",")));
    if !missing.is_empty() {
        host.log.info(&format!(
            "groups not on this system, skipped: {}",
            missing.join(",")
        ));
    }

    match password_hash {
        Some(hash) => {
            if hash.contains(['\n', ':']) {
                bail!(
                    "the password hash in the secrets holds ':' or a line break; regenerate it with `openssl passwd -6`"
                );
            }
            let mut c = Cmd::new("chpasswd");
            if !host.live_root() {
                c = c.arg("--root").arg(host.root.display().to_string());
            }
            host.run(c.arg("-e").secret_stdin(format!("{name}:{hash}\n")))?;
            done.push("password set from the secrets".into());
        }
        None => {
            host.run(host.shadow_tool("usermod").args(["-L", name]))?;
            done.push("password locked (SSH keys only)".into());
        }
    }

    let owner = Perms {
        mode: 0o700,
        uid: account.uid,
        gid: account.gid,
    };
    let home_dir = host.path(&home);
    if !home_dir.exists() {
        ensure_dir(&home_dir, owner)?;
    }
    ensure_dir(&home_dir.join(".ssh"), owner)?;
    let mut keys = plan.authorized_keys.join("\n");
    keys.push('\n');
    write_atomic(
        &home_dir.join(".ssh/authorized_keys"),
        keys.as_bytes(),
        Some(Perms {
            mode: 0o600,
            ..owner
        }),
    )?;
    done.push(format!(
        "{} SSH key(s) in {home}/.ssh/authorized_keys",
        plan.authorized_keys.len()
    ));
    Ok(done.join("; "))
}

const LOGIN_SHELL: &str = "/bin/bash";

/// Shells that refuse a login (`nologin`, `false`) or none at all.
fn login_shell(shell: &str) -> bool {
    let base = shell.rsplit('/').next().unwrap_or("");
    !shell.is_empty() && base != "nologin" && base != "false"
}

fn create(host: &Host, plan: &UserPlan) -> Result<()> {
    let accounts = Accounts::load(&host.root)?;
    let mut c = host
        .shadow_tool("useradd")
        .args(["-m", "-U", "-s", LOGIN_SHELL]);
    if accounts.user_by_uid(plan.uid).is_none() {
        c = c.args(["-u".to_string(), plan.uid.to_string()]);
    }
    host.run(c.arg(&plan.name))?;
    Ok(())
}

/// Replace `old` by `new` at the start of lines (`old` followed by `sep`),
/// keeping the file's owner and mode. Returns whether anything changed.
fn rename_in_file(host: &Host, path: &str, old: &str, new: &str, sep: char) -> Result<bool> {
    let full = host.path(path);
    let Ok(meta) = std::fs::metadata(&full) else {
        return Ok(false);
    };
    let text = std::fs::read_to_string(&full)
        .with_context(|| format!("cannot read {}", full.display()))?;
    let prefix = format!("{old}{sep}");
    let mut changed = false;
    let out: String = text
        .split_inclusive('\n')
        .map(|line| match line.strip_prefix(&prefix) {
            Some(rest) => {
                changed = true;
                format!("{new}{sep}{rest}")
            }
            None => line.to_string(),
        })
        .collect();
    if changed {
        let perms = Perms {
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        write_atomic(&full, out.as_bytes(), Some(perms))?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn user_names() {
        assert!(valid_name("pi"));
        assert!(valid_name("ops-admin_2"));
        assert!(!valid_name("Pi"));
        assert!(!valid_name("1pi"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name(""));
    }
}
