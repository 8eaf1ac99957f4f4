//! Stage 1: run once by `systemd.run=` on the boot after Raspberry Pi OS's
//! own first boot, with local filesystems only and no network. It turns the
//! stock image into this node (identity, user, keys, static address, units,
//! the agent itself) and finally removes its own kernel arguments; systemd then
//! reboots into stage 2. Until that last step cmdline.txt is untouched, so a
//! failure or power loss simply runs stage 1 again on the next boot.

use std::path::Path;

use anyhow::{Context, Result, bail};
use picluster_profiles::bundle::{NodeBundle, Phase, boot_files, node_paths};
use picluster_profiles::cmdline;

use crate::fsutil::{Perms, ensure_dir, read_optional, scrub, write_atomic};
use crate::host::Host;
use crate::journal::{Journal, Outcome, Stage, Status, Step, run_steps};
use crate::plan::{describe_files, installed_secrets, parse_bundle, parse_secrets, write_files};
use crate::status;
use crate::timefmt::utc;
use crate::user;

pub struct Stage1<'a> {
    host: &'a Host,
    bundle: NodeBundle,
    /// The bundle as found on the boot partition, installed byte for byte.
    bundle_bytes: Vec<u8>,
}

/// Units stage 1 enables: SSH, the wait for time sync, stage 2.
pub const ENABLED_UNITS: &[&str] = &[
    "ssh.service",
    "systemd-time-wait-sync.service",
    node_paths::AGENT_UNIT,
];

/// The steps, in order. Names appear in the journal and `status`.
pub fn steps<'a>() -> Vec<Step<Stage1<'a>>> {
    vec![
        Step {
            name: "bundle",
            run: install_bundle,
        },
        Step {
            name: "secrets",
            run: move_secrets,
        },
        Step {
            name: "files",
            run: write_stage1_files,
        },
        Step {
            name: "user",
            run: configure_user,
        },
        Step {
            name: "rename-wizard",
            run: retire_rename_wizard,
        },
        Step {
            name: "units",
            run: enable_units,
        },
        Step {
            name: "agent",
            run: install_agent,
        },
        Step {
            name: "cmdline",
            run: strip_kernel_args,
        },
    ]
}

/// Run stage 1. `stop_after` (tests) simulates power loss after that many steps.
pub fn run(host: &Host, stop_after: Option<usize>) -> Result<Outcome> {
    host.log.info(&format!(
        "stage 1 starting (picluster-node {}, root {}, boot partition {})",
        crate::VERSION,
        host.root.display(),
        host.boot.display()
    ));
    let result = run_inner(host, stop_after);
    match &result {
        Ok(Outcome::Completed) => host
            .log
            .info("stage 1 complete: the node now reboots and stage 2 (picluster-node.service) installs K3s"),
        Ok(Outcome::Interrupted) => {}
        Err(e) => host.log.error(&format!(
            "stage 1 FAILED: {e:#}\ncmdline.txt is unchanged, so stage 1 runs again on the next boot: \
             fix the cause (often: rebuild the image with `picluster build`) and power-cycle the node. \
             This log is {} on the boot partition.",
            boot_files::LOG
        )),
    }
    result
}

fn run_inner(host: &Host, stop_after: Option<usize>) -> Result<Outcome> {
    let source = host.boot_file(boot_files::BUNDLE);
    let bytes = read_optional(&source)?.with_context(|| {
        format!(
            "no node bundle at {}: this card was not prepared by `picluster build`, or the \
             file was deleted; rebuild the image and flash it again",
            source.display()
        )
    })?;
    let bundle = parse_bundle(&bytes, &source)?;
    let mut journal = Journal::load(host)?;
    let installed = read_optional(&host.path(node_paths::BUNDLE))?;
    if installed.as_ref().is_some_and(|i| *i != bytes) && !journal.steps.is_empty() {
        host.log.warn(&format!(
            "the boot partition carries a different bundle than {}: running every step again",
            node_paths::BUNDLE
        ));
        journal.reset(host.env.now());
    }
    // Secrets on the card must always be moved off it, whatever the journal says.
    if host.boot_file(boot_files::SECRETS).exists() {
        let now = host.env.now();
        for r in journal
            .steps
            .iter_mut()
            .filter(|r| r.stage == Stage::Stage1 && r.step == "secrets")
        {
            r.status = Status::Pending;
            r.updated_at = now;
        }
    }
    journal.node = Some(bundle.node.name.clone());
    journal.cluster = Some(bundle.cluster.clone());
    let mut ctx = Stage1 {
        host,
        bundle,
        bundle_bytes: bytes,
    };
    let outcome = run_steps(
        host,
        &mut journal,
        Stage::Stage1,
        &steps(),
        &mut ctx,
        stop_after,
    )?;
    if outcome == Outcome::Completed {
        status::write_notice(
            host,
            &format!(
                "picluster: {} - stage 1 done; stage 2 installs K3s after the reboot.\n",
                ctx.bundle.node.name
            ),
        )?;
    }
    Ok(outcome)
}

fn install_bundle(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    ensure_dir(&host.path(node_paths::CONFIG_DIR), Perms::root(0o755))?;
    write_atomic(
        &host.path(node_paths::BUNDLE),
        &c.bundle_bytes,
        Some(Perms::root(0o644)),
    )?;
    let b = &c.bundle;
    Ok(format!(
        "node {} ({}{}) of cluster {:?}, built {} by picluster {}; copied to {}",
        b.node.name,
        b.node.role.as_str(),
        if b.node.init_server {
            ", first server"
        } else {
            ""
        },
        b.cluster,
        utc(b.built_at),
        b.picluster_version,
        node_paths::BUNDLE
    ))
}

/// Install the secrets in the rootfs (root, 0600), then scrub them from the
/// FAT partition. The copy is complete before the scrub starts, and a partly
/// scrubbed file no longer parses, so a crash at any point loses nothing.
fn move_secrets(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    let on_card = host.boot_file(boot_files::SECRETS);
    let dest = host.path(node_paths::SECRETS);
    let card = read_optional(&on_card)?;
    let card_parsed = card.as_ref().map(|b| parse_secrets(b, &on_card, &c.bundle));
    let installed_ok =
        read_optional(&dest)?.is_some_and(|b| parse_secrets(&b, &dest, &c.bundle).is_ok());
    match (card_parsed, installed_ok) {
        (Some(Ok(_)), _) => {
            ensure_dir(&host.path(node_paths::CONFIG_DIR), Perms::root(0o755))?;
            write_atomic(
                &dest,
                card.as_deref().expect("parsed from bytes"),
                Some(Perms::root(0o600)),
            )?;
        }
        (Some(Err(e)), true) => host.log.warn(&format!(
            "{e:#}; the copy in {} is intact (an earlier run was interrupted while scrubbing)",
            node_paths::SECRETS
        )),
        (Some(Err(e)), false) => {
            return Err(e.context(format!(
                "and {} does not exist: the node's secrets are lost; rebuild the image",
                node_paths::SECRETS
            )));
        }
        (None, true) => {}
        (None, false) => bail!(
            "the node's secrets are missing: neither {} nor {} exists; rebuild the image \
             with `picluster build`",
            on_card.display(),
            node_paths::SECRETS
        ),
    }
    let scrubbed = scrub(&on_card)?;
    Ok(if scrubbed > 0 {
        format!(
            "moved to {} (root, 0600); {} on the boot partition overwritten with {scrubbed} zero bytes and deleted",
            node_paths::SECRETS,
            boot_files::SECRETS
        )
    } else {
        format!("already in {} (root, 0600)", node_paths::SECRETS)
    })
}

fn write_stage1_files(c: &mut Stage1) -> Result<String> {
    let secrets = installed_secrets(c.host, &c.bundle)?;
    let written = write_files(c.host, c.bundle.files_for(&secrets, Phase::Stage1))?;
    Ok(describe_files(&written))
}

fn configure_user(c: &mut Stage1) -> Result<String> {
    let secrets = installed_secrets(c.host, &c.bundle)?;
    user::configure(c.host, &c.bundle.user, secrets.password_hash.as_deref())
}

/// Raspberry Pi OS Lite asks for a user name on the console at first boot
/// (`userconfig.service`, with getty@tty1 disabled and an SSH banner) unless
/// `userconf.txt` names one. The account is configured now: retire the wizard
/// as Raspberry Pi's `cancel-rename` does, and scrub `userconf.txt` (it holds a hash).
fn retire_rename_wizard(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    let mut done = Vec::new();
    let installed = [
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/etc/systemd/system",
    ]
    .iter()
    .any(|d| host.path(&format!("{d}/userconfig.service")).exists());
    if installed {
        host.run(host.systemctl_files(&["disable", "userconfig.service"]))?;
    }
    host.run(host.systemctl_files(&["mask", "userconfig.service"]))?;
    done.push("userconfig.service masked".to_string());
    if !host
        .path("/etc/systemd/system/getty.target.wants/getty@tty1.service")
        .exists()
    {
        host.run(host.systemctl_files(&["enable", "getty@tty1.service"]))?;
        done.push("getty@tty1 enabled".into());
    }
    let banner = host.path("/etc/ssh/sshd_config.d/rename_user.conf");
    if banner.exists() {
        std::fs::remove_file(&banner)
            .with_context(|| format!("cannot delete {}", banner.display()))?;
        done.push("rename banner removed from sshd".into());
    }
    for name in [
        boot_files::USERCONF,
        "userconf",
        "failed_userconf.txt",
        "failed_userconf",
    ] {
        if scrub(&host.boot_file(name))? > 0 {
            done.push(format!("{name} scrubbed from the boot partition"));
        }
    }
    Ok(done.join("; "))
}

fn enable_units(c: &mut Stage1) -> Result<String> {
    let mut args = vec!["enable"];
    args.extend_from_slice(ENABLED_UNITS);
    c.host.run(c.host.systemctl_files(&args))?;
    Ok(format!("enabled {}", ENABLED_UNITS.join(", ")))
}

fn install_agent(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    let src = host.boot_file(boot_files::AGENT);
    let bytes = std::fs::read(&src).with_context(|| {
        format!(
            "cannot read the agent at {}: stage 2 needs it installed",
            src.display()
        )
    })?;
    let dest = host.path(node_paths::AGENT);
    write_atomic(&dest, &bytes, Some(Perms::root(0o755)))?;
    Ok(format!(
        "{} ({} bytes) installed as {}",
        src.display(),
        bytes.len(),
        node_paths::AGENT
    ))
}

/// The last step: with its own arguments gone the next boot is a normal one.
fn strip_kernel_args(c: &mut Stage1) -> Result<String> {
    let path = c.host.boot_file(boot_files::CMDLINE);
    let line = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let stripped = cmdline::remove(&line, &c.bundle.stage1_kernel_args);
    if cmdline::tokens(&stripped).is_empty() {
        bail!(
            "{} would be empty without the stage 1 arguments; it is damaged: \
             rebuild the image",
            path.display()
        );
    }
    if stripped == line {
        return Ok("cmdline.txt carries no stage 1 arguments".into());
    }
    write_cmdline(&path, &stripped)?;
    Ok(format!(
        "removed {} argument(s) from cmdline.txt; kept: {}",
        cmdline::tokens(&line).len() - cmdline::tokens(&stripped).len(),
        stripped.trim_end()
    ))
}

/// Replace cmdline.txt on the FAT partition: temporary file, fsync, rename.
/// FAT has no owners or modes, so none are set.
fn write_cmdline(path: &Path, content: &str) -> Result<()> {
    write_atomic(path, content.as_bytes(), None)
}
