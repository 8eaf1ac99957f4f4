//! Stage 2: `picluster-node.service`, on every boot until all its steps are
//! done. It waits (boundedly) for the network and the clock, installs K3s from
//! the boot partition, writes its configuration, starts it, waits for the node
//! to be Ready (retrying forever, one log line per attempt), drops the
//! first server's manifests, and finally disables itself.

use anyhow::{Result, bail};
use picluster_profiles::bundle::{NodeBundle, NodeSecrets, Phase, node_paths};

use crate::host::{Cmd, Host};
use crate::journal::{Journal, Outcome, Stage, Step, run_steps};
use crate::k3s;
use crate::plan::{describe_files, installed_bundle, installed_secrets, write_files};
use crate::status::{first_line, write_notice};
use crate::timefmt::{span, utc};

/// Written by systemd-timesyncd once the clock is synchronised.
pub const TIMESYNC_FLAG: &str = "/run/systemd/timesync/synchronized";
pub const CGROUP_CONTROLLERS: &str = "/sys/fs/cgroup/cgroup.controllers";

pub struct Stage2<'a> {
    host: &'a Host,
    bundle: NodeBundle,
    secrets: NodeSecrets,
}

pub fn steps<'a>() -> Vec<Step<Stage2<'a>>> {
    vec![
        Step {
            name: "network",
            run: wait_network,
        },
        Step {
            name: "clock",
            run: wait_clock,
        },
        Step {
            name: "cgroups",
            run: check_cgroups,
        },
        Step {
            name: "apt-packages",
            run: install_packages,
        },
        Step {
            name: "k3s-binary",
            run: |c| k3s::install_binary(c.host, &c.bundle),
        },
        Step {
            name: "airgap-images",
            run: |c| k3s::install_airgap(c.host, &c.bundle),
        },
        Step {
            name: "k3s-config",
            run: write_k3s_config,
        },
        Step {
            name: "start-k3s",
            run: start_k3s,
        },
        Step {
            name: "ready",
            run: wait_ready,
        },
        Step {
            name: "manifests",
            run: write_manifests,
        },
        Step {
            name: "finish",
            run: finish,
        },
    ]
}

/// Run stage 2. `stop_after` (tests) simulates power loss after that many steps.
pub fn run(host: &Host, stop_after: Option<usize>) -> Result<Outcome> {
    host.log.info(&format!(
        "stage 2 starting (picluster-node {}, root {})",
        crate::VERSION,
        host.root.display()
    ));
    let result = run_inner(host, stop_after);
    match &result {
        Ok(Outcome::Completed) => host.log.info("stage 2 complete: every step done"),
        Ok(Outcome::Interrupted) => {}
        Err(e) => host.log.error(&format!(
            "stage 2 FAILED: {e:#}\nsystemd runs it again in 15 s (Restart=on-failure); \
             `picluster-node status` shows every step"
        )),
    }
    result
}

fn run_inner(host: &Host, stop_after: Option<usize>) -> Result<Outcome> {
    let bundle = installed_bundle(host)?;
    let secrets = installed_secrets(host, &bundle)?;
    let name = bundle.node.name.clone();
    let mut journal = Journal::load(host)?;
    journal.node = Some(name.clone());
    journal.cluster = Some(bundle.cluster.clone());
    if !journal.stage_done(Stage::Stage2) {
        write_notice(
            host,
            &format!(
                "picluster: {name} - setting up K3s (watch: journalctl -fu picluster-node; \
                 picluster-node status)\n"
            ),
        )?;
    }
    let mut ctx = Stage2 {
        host,
        bundle,
        secrets,
    };
    let result = run_steps(
        host,
        &mut journal,
        Stage::Stage2,
        &steps(),
        &mut ctx,
        stop_after,
    );
    if let Err(e) = &result {
        let _ = write_notice(
            host,
            &format!(
                "picluster: {name} - setup FAILED: {}\n  details: picluster-node status; \
                 journalctl -u picluster-node (it retries every 15 s)\n",
                first_line(&format!("{e:#}"), 300)
            ),
        );
    }
    result
}

fn wait_network(c: &mut Stage2) -> Result<String> {
    let (host, node) = (c.host, &c.bundle.node);
    let start = host.env.now();
    let deadline = start + host.timing.network_wait.as_secs() as i64;
    loop {
        if host.env.address_assigned(node.ip) {
            return Ok(format!(
                "{}/{} is up on {} (waited {})",
                node.ip,
                node.prefix,
                node.interface,
                span((host.env.now() - start).max(0) as u64)
            ));
        }
        if host.env.now() >= deadline {
            let msg = format!(
                "{} is not assigned after {}: continuing anyway (check the cable and \
                 /etc/NetworkManager/system-connections/picluster-{}.nmconnection; \
                 K3s keeps retrying)",
                node.ip,
                span(host.timing.network_wait.as_secs()),
                node.interface
            );
            host.log.warn(&msg);
            return Ok(msg);
        }
        host.env.sleep(host.timing.poll);
    }
}

/// Wait for systemd-timesyncd; without it, never run with a clock earlier than
/// the image build (TLS certificates would look not yet valid).
fn wait_clock(c: &mut Stage2) -> Result<String> {
    let host = c.host;
    let flag = host.path(TIMESYNC_FLAG);
    let start = host.env.now();
    let deadline = start + host.timing.time_wait.as_secs() as i64;
    loop {
        if flag.exists() {
            return Ok(format!(
                "clock synchronised by systemd-timesyncd: {}",
                utc(host.env.now())
            ));
        }
        if host.env.now() >= deadline {
            break;
        }
        host.env.sleep(host.timing.poll);
    }
    let now = host.env.now();
    let built = c.bundle.built_at;
    let waited = span(host.timing.time_wait.as_secs());
    if now < built {
        host.run(Cmd::live("date").args(["-u", "-s", &format!("@{built}")]))?;
        let msg = format!(
            "time is not synchronised after {waited}: the clock said {}, earlier than the image \
             build; set it to the build time {} (timesyncd corrects it once a time server answers)",
            utc(now),
            utc(built)
        );
        host.log.warn(&msg);
        Ok(msg)
    } else {
        let msg = format!(
            "time is not synchronised after {waited}: continuing with the clock at {} \
             (not earlier than the image build time {})",
            utc(now),
            utc(built)
        );
        host.log.warn(&msg);
        Ok(msg)
    }
}

/// cgroup v2 controllers K3s's kubelet needs for pods (CPU shares and quota,
/// cpusets, memory limits).
pub const NEEDED_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory"];

fn check_cgroups(c: &mut Stage2) -> Result<String> {
    let path = c.host.path(CGROUP_CONTROLLERS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => bail!(
            "cannot read {}: {e}: K3s needs the unified cgroup v2 hierarchy that Raspberry Pi \
             OS Bookworm mounts at /sys/fs/cgroup",
            path.display()
        ),
    };
    let have: Vec<&str> = text.split_whitespace().collect();
    let missing: Vec<&str> = NEEDED_CONTROLLERS
        .iter()
        .copied()
        .filter(|n| !have.contains(n))
        .collect();
    if missing.is_empty() {
        return Ok(format!(
            "cgroup v2 controllers {} enabled ({})",
            NEEDED_CONTROLLERS.join(", "),
            text.trim()
        ));
    }
    let fix = if missing.contains(&"memory") {
        "Add `cgroup_enable=memory` to the single line of /boot/firmware/cmdline.txt (the \
         firmware prepends cgroup_disable=memory; picluster build puts it there: was the file \
         edited?) and reboot"
    } else {
        "This kernel was built without them: use the Raspberry Pi OS kernel (kernel8.img or \
         kernel_2712.img)"
    };
    bail!(
        "the cgroup v2 controller(s) {} K3s needs are not enabled ({CGROUP_CONTROLLERS} lists: \
         {}). {fix}",
        missing.join(", "),
        text.trim()
    )
}

/// `attempt` failed with `why`: log it, and sleep the backoff, or give up
/// when a test set a limit.
fn retry_pause(host: &Host, what: &str, attempt: u32, why: &str) -> Result<()> {
    let pause = host.timing.backoff(attempt);
    host.log.warn(&format!(
        "{what} failed (attempt {attempt}): {why}; retrying in {}",
        span(pause.as_secs())
    ));
    if host.timing.give_up_after.is_some_and(|n| attempt >= n) {
        bail!("{what}: giving up after {attempt} attempts: {why}");
    }
    host.env.sleep(pause);
    Ok(())
}

fn install_packages(c: &mut Stage2) -> Result<String> {
    let host = c.host;
    let pkgs = &c.bundle.apt_packages;
    if pkgs.is_empty() {
        return Ok("no extra packages".into());
    }
    let apt = |args: &[&str]| {
        Cmd::live("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args.iter().copied())
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = host.run(apt(&["update"])).and_then(|_| {
            let mut args = vec!["install", "-y", "--no-install-recommends"];
            args.extend(pkgs.iter().map(String::as_str));
            host.run(apt(&args))
        });
        match result {
            Ok(_) => {
                return Ok(format!("installed {} (attempt {attempt})", pkgs.join(", ")));
            }
            Err(e) => retry_pause(
                host,
                "installing Debian packages",
                attempt,
                &format!("{e:#}"),
            )?,
        }
    }
}

fn write_k3s_config(c: &mut Stage2) -> Result<String> {
    let (files, how) = k3s::before_start_files(c.host, &c.bundle, &c.secrets);
    let written = write_files(c.host, &files)?;
    Ok(format!("{how}; {}", describe_files(&written)))
}

fn start_k3s(c: &mut Stage2) -> Result<String> {
    let host = c.host;
    let unit = format!("{}.service", c.bundle.k3s.service);
    host.run(host.systemctl_live(&["daemon-reload"]))?;
    host.run(host.systemctl_files(&["enable", &unit]))?;
    // Type=notify: a joining node would block `start` until it joins. Restart
    // (not start) so a resumed run picks up a rewritten config.yaml.
    host.run(host.systemctl_live(&["restart", "--no-block", &unit]))?;
    Ok(format!("{unit} enabled and started"))
}

/// Wait for Ready: each check is bounded, the checks go on forever with a
/// backoff and one log line each, and known K3s failures get instructions.
fn wait_ready(c: &mut Stage2) -> Result<String> {
    let host = c.host;
    let name = &c.bundle.node.name;
    let start = host.env.now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match k3s::check_ready(host, &c.bundle) {
            Ok(how) => {
                k3s::publish_step(host, &c.bundle, "ready");
                return Ok(format!(
                    "{name} is Ready ({how}) after {} and {attempt} check(s)",
                    span((host.env.now() - start).max(0) as u64)
                ));
            }
            Err(why) => {
                let hint = k3s::diagnose(&k3s::recent_log(host, &c.bundle), &c.bundle);
                if let Some(h) = &hint {
                    host.log.error(&format!("ACTION NEEDED: {h}"));
                }
                let _ = write_notice(
                    host,
                    &format!(
                        "picluster: {name} - waiting for K3s to be Ready (check {attempt}, {}): {}\n{}",
                        span((host.env.now() - start).max(0) as u64),
                        first_line(&why, 200),
                        hint.map(|h| format!("  ACTION NEEDED: {h}\n"))
                            .unwrap_or_default()
                    ),
                );
                Journal::note_waiting(
                    host,
                    Stage::Stage2,
                    "ready",
                    &format!(
                        "waiting (check {attempt}, {}): {}",
                        span((host.env.now() - start).max(0) as u64),
                        first_line(&why, 200)
                    ),
                )?;
                retry_pause(
                    host,
                    &format!("waiting for {name} to be Ready"),
                    attempt,
                    &why,
                )?;
            }
        }
    }
}

fn write_manifests(c: &mut Stage2) -> Result<String> {
    let written = match write_files(c.host, c.bundle.files_for(&c.secrets, Phase::AfterReady)) {
        Ok(w) => w,
        Err(e) => {
            let why = first_line(&format!("{e:#}"), 200);
            k3s::publish_step(c.host, &c.bundle, &format!("manifests failed: {why}"));
            return Err(e);
        }
    };
    if written.is_empty() {
        return Ok("no manifests for this node".into());
    }
    Ok(format!(
        "{} (K3s applies them from {})",
        describe_files(&written),
        node_paths::MANIFESTS_DIR
    ))
}

fn finish(c: &mut Stage2) -> Result<String> {
    let host = c.host;
    let b = &c.bundle;
    write_notice(
        host,
        &format!(
            "picluster: {} - K3s {} {} of cluster {:?}, set up {} (picluster-node status)\n",
            b.node.name,
            b.k3s.version,
            b.node.role.as_str(),
            b.cluster,
            utc(host.env.now())
        ),
    )?;
    k3s::publish_step(host, b, "done");
    host.run(host.systemctl_files(&["disable", node_paths::AGENT_UNIT]))?;
    Ok(format!(
        "node set up; {} disabled (it has nothing left to do)",
        node_paths::AGENT_UNIT
    ))
}
