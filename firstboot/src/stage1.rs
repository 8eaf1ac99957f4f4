//! Stage 1: run once by `systemd.run=` on the boot after Raspberry Pi OS's
//! own first boot, with local filesystems only and no network. It turns the
//! stock image into this node (identity, user, keys, static address, units,
//! the agent itself) and finally removes its own kernel arguments; systemd then
//! reboots into stage 2. Until that last step cmdline.txt is untouched, so a
//! failure or power loss simply runs stage 1 again on the next boot.

use std::path::Path;

use anyhow::{Context, Result, bail};
use picluster_profiles::bundle::{BOOT_MOUNT, NodeBundle, Phase, boot_files, node_paths};
use picluster_profiles::cmdline;

use crate::fsutil::{Perms, ensure_dir, read_optional, scrub, write_atomic};
use crate::host::{Cmd, Host};
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
            name: "cloud-init",
            run: disable_cloud_init,
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
            name: "first-boot",
            run: finish_first_boot,
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
            "stage 1 FAILED: {e:#}\nThis log is {} on the boot partition.",
            boot_files::LOG
        )),
    }
    if matches!(result, Ok(Outcome::Completed)) {
        let _ = std::fs::remove_file(host.boot_file(boot_files::STAGE1_TRIES));
    }
    result
}

/// Stage 1 runs at most this many times before the node falls back to a
/// normal boot.
pub const MAX_TRIES: u32 = 3;

/// What [`recover`] did about a failed stage 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// cmdline.txt is unchanged: the reboot runs stage 1 again.
    Retry { attempt: u32 },
    /// The stage-1 arguments are gone: the reboot is a normal multi-user boot
    /// with sshd, and the reason is on the console, the FAT log and the login notice.
    FellBack { attempts: u32 },
}

/// After a failed stage 1: never leave the node in the rescue-like
/// `kernel-command-line.target` (no sshd, no getty). Below [`MAX_TRIES`] the
/// node reboots to try again; then it falls back to a normal boot. The
/// caller exits successfully so `systemd.run_success_action=reboot` reboots.
pub fn recover(host: &Host, err: &anyhow::Error) -> Recovery {
    let tries_file = host.boot_file(boot_files::STAGE1_TRIES);
    let attempt = std::fs::read_to_string(&tries_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    let reason = crate::status::first_line(&format!("{err:#}"), 300);
    if attempt < MAX_TRIES
        && write_atomic(&tries_file, format!("{attempt}\n").as_bytes(), None).is_ok()
    {
        host.log.error(&format!(
            "stage 1 failed (attempt {attempt} of {MAX_TRIES}): {reason}; rebooting to try again"
        ));
        return Recovery::Retry { attempt };
    }
    let _ = std::fs::remove_file(&tries_file);
    let mut did = Vec::new();
    let mut failed = Vec::new();
    // SSH on, whatever step stopped: with the keys if the user step ran.
    match host.run(host.systemctl_files(&["enable", "ssh.service"])) {
        Ok(_) => did.push("sshd enabled".to_string()),
        Err(e) => failed.push(format!("enabling sshd: {e:#}")),
    }
    // Stage 2 must not set up K3s on a half-configured node.
    if host
        .path(&format!("/etc/systemd/system/{}", node_paths::AGENT_UNIT))
        .exists()
    {
        match host.run(host.systemctl_files(&["disable", node_paths::AGENT_UNIT])) {
            Ok(_) => did.push(format!("{} disabled", node_paths::AGENT_UNIT)),
            Err(e) => failed.push(format!("disabling {}: {e:#}", node_paths::AGENT_UNIT)),
        }
    }
    let args = read_optional(&host.boot_file(boot_files::BUNDLE))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<NodeBundle>(&b).ok())
        .map(|b| b.stage1_kernel_args)
        .unwrap_or_else(picluster_profiles::render::stage1_kernel_args);
    let cmdline = host.boot_file(boot_files::CMDLINE);
    match std::fs::read_to_string(&cmdline) {
        Ok(line) => {
            let stripped = cmdline::remove(&line, &args);
            if cmdline::tokens(&stripped).is_empty() {
                failed.push("cmdline.txt would be empty without the stage 1 arguments".into());
            } else if let Err(e) = write_cmdline(&cmdline, &stripped) {
                failed.push(format!("rewriting cmdline.txt: {e:#}"));
            } else {
                did.push("stage 1 arguments removed from cmdline.txt".into());
            }
        }
        Err(e) => failed.push(format!("reading cmdline.txt: {e}")),
    }
    let node = read_optional(&host.boot_file(boot_files::BUNDLE))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<NodeBundle>(&b).ok())
        .map(|b| b.node.name)
        .unwrap_or_else(|| "this node".into());
    let notice = format!(
        "picluster: {node} - stage 1 FAILED {attempt} times: {reason}\n  The node booted \
         normally with SSH on so you can look: picluster-node status; {BOOT_MOUNT}/{}.\n  \
         Fix the cause (often: rebuild the image with `picluster build`) and flash the card again.\n",
        boot_files::LOG
    );
    if let Err(e) = crate::status::write_notice(host, &notice) {
        failed.push(format!("writing the login notice: {e:#}"));
    } else {
        did.push("login notice written".into());
    }
    host.log.error(&format!(
        "stage 1 failed {attempt} times, the last time: {reason}. Falling back to a normal boot \
         ({}){}; fix the cause and flash the card again",
        did.join(", "),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; could not: {}", failed.join("; "))
        }
    ));
    Recovery::FellBack { attempts: attempt }
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

/// The first line of an error and its causes, for a "continuing" note in a
/// step's detail and the log.
fn cause(e: &anyhow::Error) -> String {
    crate::status::first_line(&format!("{e:#}"), 160)
}

/// A unit file the distribution installed (not one an administrator or a
/// tool put in /etc).
fn unit_shipped(host: &Host, unit: &str) -> bool {
    ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .any(|d| host.path(&format!("{d}/{unit}")).exists())
}

/// Raspberry Pi OS Lite asks for a user name on the console at first boot
/// (`userconfig.service`, with getty@tty1 disabled and an SSH banner) unless
/// `userconf.txt` names one. The account is configured now: retire the wizard
/// as Raspberry Pi's `cancel-rename` does, and scrub `userconf.txt` (it holds a hash).
///
/// Not fatal: images differ (the unit in `/usr/lib` or moved to `/etc` by a
/// customisation tool, already masked or removed, no getty unit), and none of
/// this decides whether the node is safe or reachable. What could not be done
/// is logged and the step carries on.
fn retire_rename_wizard(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    let mut done = Vec::new();
    let mut found = Vec::new();
    let unit = "userconfig.service";
    let in_etc = host.path(&format!("/etc/systemd/system/{unit}"));
    let masked = std::fs::read_link(&in_etc).is_ok_and(|t| t == Path::new("/dev/null"));
    let shipped = unit_shipped(host, unit);
    let copied = !masked && in_etc.is_file();
    if masked {
        found.push(format!("{unit} already masked"));
    } else if !shipped && !copied {
        found.push(format!("{unit} not installed"));
    } else {
        let mut tolerate = |what: &str, r: Result<crate::host::CmdOutput>| match r {
            Ok(_) => done.push(what.to_string()),
            Err(e) => found.push(format!("{what} failed ({})", cause(&e))),
        };
        tolerate(
            &format!("{unit} disabled"),
            host.run(host.systemctl_files(&["disable", unit])),
        );
        if copied {
            // `systemctl mask` refuses to replace a unit file in /etc: disabled is enough.
            found.push(format!("{unit} is a file in /etc/systemd/system (moved there by a customisation tool): left disabled, not masked"));
        } else {
            tolerate(
                &format!("{unit} masked"),
                host.run(host.systemctl_files(&["mask", unit])),
            );
        }
    }
    if !host
        .path("/etc/systemd/system/getty.target.wants/getty@tty1.service")
        .exists()
    {
        match host.run(host.systemctl_files(&["enable", "getty@tty1.service"])) {
            Ok(_) => done.push("getty@tty1 enabled".into()),
            Err(e) => found.push(format!("enabling getty@tty1 failed ({})", cause(&e))),
        }
    }
    let banner = host.path("/etc/ssh/sshd_config.d/rename_user.conf");
    if banner.exists() {
        match std::fs::remove_file(&banner) {
            Ok(()) => done.push("rename banner removed from sshd".into()),
            Err(e) => found.push(format!("cannot delete {}: {e}", banner.display())),
        }
    }
    for name in [
        boot_files::USERCONF,
        "userconf",
        "failed_userconf.txt",
        "failed_userconf",
    ] {
        // userconf.txt holds a password hash: failing to scrub it is fatal.
        if scrub(&host.boot_file(name))? > 0 {
            done.push(format!("{name} scrubbed from the boot partition"));
        }
    }
    if !found.is_empty() {
        host.log.warn(&format!(
            "rename-wizard: continuing; found: {}",
            found.join("; ")
        ));
    }
    let mut detail = done.join("; ");
    if !found.is_empty() {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(&format!("found: {}", found.join("; ")));
    }
    Ok(detail)
}

/// Raspberry Pi OS Trixie ships cloud-init, seeded from the boot partition
/// (pi-gen stage2/04-cloud-init). The build put `cloud-init=disabled` on the
/// command line, which holds for this boot; the marker file keeps cloud-init
/// off on every later boot whatever cmdline.txt says: ds-identify checks it
/// before any datasource, and every cloud-init unit has
/// `ConditionPathExists=!/etc/cloud/cloud-init.disabled` (cloud-init 25.1.4,
/// tools/ds-identify, systemd/*.tmpl). Otherwise its per-boot modules would
/// rewrite /etc/hosts and its network config compete with the static address.
fn disable_cloud_init(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    if !host.path("/etc/cloud").is_dir() {
        return Ok("no cloud-init on this system".into());
    }
    let marker = host.path(CLOUD_INIT_DISABLED);
    if marker.exists() {
        return Ok(format!("cloud-init already off ({CLOUD_INIT_DISABLED})"));
    }
    write_atomic(&marker, b"", Some(Perms::root(0o644)))?;
    Ok(format!(
        "cloud-init turned off for good ({CLOUD_INIT_DISABLED})"
    ))
}

const CLOUD_INIT_DISABLED: &str = "/etc/cloud/cloud-init.disabled";

/// sshd and stage 2 are fatal (without them the node is unreachable or never
/// joins); the wait for time sync is not (stage 2 bounds its own wait).
fn enable_units(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    let keys = ensure_host_keys(host)?;
    host.run(host.systemctl_files(&["enable", "ssh.service", node_paths::AGENT_UNIT]))?;
    let mut detail = format!("enabled ssh.service, {}", node_paths::AGENT_UNIT);
    if let Some(k) = keys {
        detail = format!("{k}; {detail}");
    }
    match host.run(host.systemctl_files(&["enable", "systemd-time-wait-sync.service"])) {
        Ok(_) => detail.push_str(", systemd-time-wait-sync.service"),
        Err(e) => {
            let msg = format!(
                "systemd-time-wait-sync.service not enabled ({}): continuing, stage 2 waits for the clock itself",
                cause(&e)
            );
            host.log.warn(&msg);
            detail.push_str(&format!("; {msg}"));
        }
    }
    Ok(detail)
}

/// sshd will not start without host keys. Bookworm's `firstboot` makes them
/// before stage 1 runs. Trixie images ship none (pi-gen deletes them) and
/// leave them to Debian's `sshd-keygen.service` (`ConditionFirstBoot=yes`,
/// `WantedBy=ssh.service`: openssh 1:10.0p1 packaging; pi-gen commit
/// e2893c11 stopped enabling raspberrypi-sys-mods' regenerate_ssh_host_keys),
/// which does not run in this boot (it ends at kernel-command-line.target)
/// and, the machine id being committed now, not in the next either.
/// `ssh-keygen -A` creates only the key types that are missing.
fn ensure_host_keys(host: &Host) -> Result<Option<String>> {
    let has_key = std::fs::read_dir(host.path("/etc/ssh")).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("ssh_host_") && n.ends_with("_key")
        })
    });
    if has_key {
        return Ok(None);
    }
    let mut keygen = Cmd::new("ssh-keygen").arg("-A");
    if !host.live_root() {
        keygen = keygen.arg("-f").arg(host.root.display().to_string());
    }
    host.run(keygen)?;
    Ok(Some("SSH host keys generated (ssh-keygen -A)".into()))
}

/// Raspberry Pi OS Trixie finishes its first boot from units, not from an
/// `init=` script: `rpi-resize.service` (raspberrypi-sys-mods,
/// `WantedBy=sysinit.target`, `ConditionFirstBoot=yes`) pulls in
/// `systemd-growfs-root.service`, which runs beside stage 1 and would be cut
/// short by its reboot; and `systemd-machine-id-commit.service` (in
/// sysinit.target.wants, systemd units/meson.build v256) races it too, so
/// whether the next boot counts as a first one would be luck. Stage 1 waits
/// for the grow and commits the machine id itself. Not fatal: a root not yet
/// grown still boots, and the log says what happened.
fn finish_first_boot(c: &mut Stage1) -> Result<String> {
    let host = c.host;
    let unit = "rpi-resize.service";
    if !unit_shipped(host, unit) {
        return Ok(format!(
            "no {unit}: the base's own first boot finished before stage 1"
        ));
    }
    let mut done = Vec::new();
    let mut found = Vec::new();
    for (what, cmd) in [
        (
            "root filesystem grown (systemd-growfs-root.service)",
            host.systemctl_live(&["start", "systemd-growfs-root.service"]),
        ),
        (
            "machine id committed",
            Cmd::live("systemd-machine-id-setup").arg("--commit"),
        ),
    ] {
        match host.run(cmd) {
            Ok(_) => done.push(what.to_string()),
            Err(e) => found.push(format!("{what}: failed ({})", cause(&e))),
        }
    }
    if !found.is_empty() {
        host.log
            .warn(&format!("first-boot: continuing; {}", found.join("; ")));
    }
    Ok(done.into_iter().chain(found).collect::<Vec<_>>().join("; "))
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
