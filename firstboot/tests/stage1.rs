//! Stage 1 against a temporary Raspberry Pi OS root.

mod common;

use std::sync::Arc;

use common::{FINAL_CMDLINE, Fixture, PASSWORD_HASH, alice_cluster, files_containing};
use picluster_node::host::{Cmd, CmdOutput, Recorder, Runner, SystemRunner};
use picluster_node::journal::{Journal, Outcome, Stage, Status};
use picluster_node::stage1;
use picluster_profiles::SAMPLE_CLUSTER;
use picluster_profiles::bundle::{Phase, boot_files, node_paths};

const GROUPS: &str = "adm,dialout,cdrom,sudo,audio,video,plugdev,users,input,netdev,gpio,i2c,spi";

/// The journal line of a stage-1 step.
fn stage1_detail(f: &Fixture, step: &str) -> String {
    Journal::read(&f.path(node_paths::JOURNAL))
        .unwrap()
        .unwrap()
        .get(Stage::Stage1, step)
        .unwrap()
        .detail
        .clone()
        .unwrap_or_default()
}

fn run(f: &Fixture) -> Outcome {
    stage1::run(&f.host(), None).unwrap()
}

#[test]
fn stage1_writes_every_file_with_exact_content_mode_and_owner() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    assert_eq!(run(&f), Outcome::Completed);

    // Every Stage1 file of the bundle, byte for byte, with its mode and owner.
    let specs: Vec<_> = f
        .bundle
        .files_for(&f.node_secrets, Phase::Stage1)
        .cloned()
        .collect();
    assert!(specs.len() >= 7, "{specs:?}");
    for s in &specs {
        assert_eq!(f.read(&s.path), s.content, "{}", s.path);
        assert_eq!(f.meta(&s.path), (s.mode.0, 0, 0), "{}", s.path);
    }
    assert_eq!(f.read("/etc/hostname"), "pi-worker-1\n");
    assert!(
        f.read("/etc/hosts")
            .contains("192.168.0.121\tpi-worker-1\n")
    );
    let nm = "/etc/NetworkManager/system-connections/picluster-eth0.nmconnection";
    assert_eq!(f.meta(nm), (0o600, 0, 0));
    let keyfile = f.read(nm);
    assert!(keyfile.contains("interface-name=eth0\n"), "{keyfile}");
    assert!(
        keyfile.contains(
            "method=manual\naddress1=192.168.0.121/24,192.168.0.1\ndns=192.168.0.1;1.1.1.1;\n"
        ),
        "{keyfile}"
    );
    let unit = f.read("/etc/systemd/system/picluster-node.service");
    assert!(
        unit.contains("ExecStart=/usr/local/sbin/picluster-node stage2\n"),
        "{unit}"
    );
    assert!(
        unit.contains("After=network-online.target time-sync.target\n"),
        "{unit}"
    );
    assert_eq!(
        f.read("/etc/sudoers.d/010_picluster-nopasswd")
            .lines()
            .last(),
        Some("pi ALL=(ALL) NOPASSWD: ALL")
    );
    assert_eq!(
        f.meta("/etc/sudoers.d/010_picluster-nopasswd"),
        (0o440, 0, 0)
    );
    assert!(
        f.read("/etc/ssh/sshd_config.d/10-picluster.conf")
            .contains("PasswordAuthentication no\n")
    );

    // The bundle, the secrets, the agent.
    assert_eq!(
        std::fs::read(f.path(node_paths::BUNDLE)).unwrap(),
        std::fs::read(f.boot.join(boot_files::BUNDLE)).unwrap()
    );
    assert_eq!(f.meta(node_paths::BUNDLE), (0o644, 0, 0));
    assert_eq!(f.meta(node_paths::SECRETS), (0o600, 0, 0));
    assert_eq!(f.meta(node_paths::AGENT), (0o755, 0, 0));
    assert_eq!(
        std::fs::read(f.path(node_paths::AGENT)).unwrap(),
        std::fs::read(f.boot.join(boot_files::AGENT)).unwrap()
    );

    // K3s files wait for stage 2.
    assert!(!f.path(node_paths::K3S_CONFIG).exists());
    assert!(!f.path(node_paths::NODE_PASSWORD).exists());

    // SSH keys: 0700/0600, owned by the user.
    assert_eq!(f.meta("/home/pi/.ssh"), (0o700, 1000, 1000));
    assert_eq!(f.meta("/home/pi/.ssh/authorized_keys"), (0o600, 1000, 1000));
    assert_eq!(
        f.read("/home/pi/.ssh/authorized_keys"),
        format!("{}\n", picluster_profiles::SAMPLE_SSH_KEY)
    );

    // The rename wizard's SSH banner is gone; the notice says what happens next.
    assert!(!f.path("/etc/ssh/sshd_config.d/rename_user.conf").exists());
    assert!(f.read("/etc/motd.d/picluster").contains("stage 1 done"));

    // The journal: every step done once.
    let j = Journal::read(&f.path(node_paths::JOURNAL))
        .unwrap()
        .unwrap();
    let names: Vec<&str> = j.steps.iter().map(|r| r.step.as_str()).collect();
    assert_eq!(
        names,
        [
            "bundle",
            "secrets",
            "files",
            "user",
            "rename-wizard",
            "cloud-init",
            "units",
            "agent",
            "first-boot",
            "cmdline"
        ]
    );
    assert!(
        j.steps
            .iter()
            .all(|r| r.status == Status::Done && r.attempts == 1)
    );
    assert_eq!(j.node.as_deref(), Some("pi-worker-1"));
    assert!(j.stage_done(Stage::Stage1));
}

#[test]
fn cmdline_loses_only_the_stage1_arguments() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    let cmdline = f.boot.join(boot_files::CMDLINE);
    let before = std::fs::read_to_string(&cmdline).unwrap();
    assert_eq!(
        before,
        format!(
            "{} systemd.run=\"/boot/firmware/picluster-node stage1\" systemd.run_success_action=reboot systemd.run_failure_action=none systemd.unit=kernel-command-line.target\n",
            FINAL_CMDLINE.trim_end()
        )
    );
    run(&f);
    assert_eq!(std::fs::read_to_string(&cmdline).unwrap(), FINAL_CMDLINE);
    // Idempotent: a second run finds nothing left to remove.
    run(&f);
    assert_eq!(std::fs::read_to_string(&cmdline).unwrap(), FINAL_CMDLINE);
    // Nothing placed on the command line names `firstboot` (the initramfs
    // would resize the root again).
    assert!(
        !FINAL_CMDLINE
            .replace("/raspberrypi-sys-mods/firstboot", "")
            .contains("firstboot")
    );
    for a in &f.bundle.stage1_kernel_args {
        assert!(!a.contains("firstboot"), "{a}");
    }
}

#[test]
fn secrets_move_into_the_root_and_are_scrubbed_from_the_boot_partition() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    let on_card = f.boot.join(boot_files::SECRETS);
    // A second name for the card's file shows what its bytes became.
    let witness = f.root.join("witness");
    std::fs::hard_link(&on_card, &witness).unwrap();
    run(&f);

    assert!(!on_card.exists());
    let left = std::fs::read(&witness).unwrap();
    assert_eq!(left.len(), f.secrets_json.len());
    assert!(
        left.iter().all(|&b| b == 0),
        "the file was not overwritten with zeros before being deleted"
    );
    std::fs::remove_file(&witness).unwrap();
    assert_eq!(
        std::fs::read(f.path(node_paths::SECRETS)).unwrap(),
        f.secrets_json
    );
    assert_eq!(f.meta(node_paths::SECRETS), (0o600, 0, 0));
    assert_eq!(f.meta("/etc/picluster"), (0o755, 0, 0));

    // No token or node password anywhere on the boot partition, in the log,
    // the journal or the recorded commands.
    let node_password = f.secrets.node_password("pi-master");
    for secret in [
        &f.secrets.k3s_token,
        &f.secrets.k3s_agent_token,
        &node_password,
    ] {
        assert!(
            files_containing(&f.boot, secret).is_empty(),
            "secret left on the card"
        );
        assert!(!f.read(node_paths::JOURNAL).contains(secret.as_str()));
        assert!(!f.recorder.lines().concat().contains(secret.as_str()));
    }
    let log = std::fs::read_to_string(f.boot.join(boot_files::LOG)).unwrap();
    assert!(
        log.contains("stage1 secrets: done: moved to /etc/picluster/secrets.json"),
        "{log}"
    );
    assert!(log.contains("stage 1 complete"), "{log}");
}

#[test]
fn secrets_survive_a_crash_while_scrubbing() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    // Run up to the secrets step, then pretend power went mid-scrub: the copy
    // is installed and the card's file is half zeros.
    assert_eq!(
        stage1::run(&f.host(), Some(1)).unwrap(),
        Outcome::Interrupted
    );
    let on_card = f.boot.join(boot_files::SECRETS);
    std::fs::write(f.path(node_paths::SECRETS), &f.secrets_json).unwrap();
    let mut half = f.secrets_json.clone();
    half[..40].fill(0);
    std::fs::write(&on_card, &half).unwrap();

    run(&f);
    assert!(!on_card.exists());
    assert_eq!(
        std::fs::read(f.path(node_paths::SECRETS)).unwrap(),
        f.secrets_json
    );
    let j = Journal::read(&f.path(node_paths::JOURNAL))
        .unwrap()
        .unwrap();
    assert!(j.stage_done(Stage::Stage1));
}

#[test]
fn missing_secrets_fail_clearly_and_leave_cmdline_alone() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    std::fs::remove_file(f.boot.join(boot_files::SECRETS)).unwrap();
    let cmdline = f.boot.join(boot_files::CMDLINE);
    let before = std::fs::read_to_string(&cmdline).unwrap();
    let err = format!("{:#}", stage1::run(&f.host(), None).unwrap_err());
    assert!(err.contains("the node's secrets are missing"), "{err}");
    assert!(err.contains("picluster-secrets.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&cmdline).unwrap(), before);
    let log = std::fs::read_to_string(f.boot.join(boot_files::LOG)).unwrap();
    assert!(log.contains("error: stage 1 FAILED"), "{log}");
    // Handled: the node reboots to try again, cmdline.txt untouched.
    let err = stage1::run(&f.host(), None).unwrap_err();
    assert_eq!(
        stage1::recover(&f.host(), &err),
        stage1::Recovery::Retry { attempt: 1 }
    );
    assert_eq!(std::fs::read_to_string(&cmdline).unwrap(), before);
    let log = std::fs::read_to_string(f.boot.join(boot_files::LOG)).unwrap();
    assert!(log.contains("stage 1 failed (attempt 1 of 3)"), "{log}");
    let j = Journal::read(&f.path(node_paths::JOURNAL))
        .unwrap()
        .unwrap();
    let rec = j.get(Stage::Stage1, "secrets").unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert!(
        rec.last_error
            .as_deref()
            .unwrap()
            .contains("secrets are missing")
    );
}

#[test]
fn a_malformed_secrets_file_never_reaches_the_log() {
    // The K3s token where the format number belongs: serde_json's own message
    // would quote it into the journal and the world-readable FAT log.
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    let token = f.secrets.k3s_token.clone();
    let text = String::from_utf8(f.secrets_json.clone()).unwrap();
    let bad = text.replacen("\"format\": 1", &format!("\"format\": \"{token}\""), 1);
    assert_ne!(bad, text, "the fixture has a format field to corrupt");
    std::fs::write(f.boot.join(boot_files::SECRETS), bad).unwrap();
    let err = format!("{:#}", stage1::run(&f.host(), None).unwrap_err());
    assert!(
        err.contains("is not a picluster secrets file (line"),
        "{err}"
    );
    assert!(!err.contains(&token), "{err}");
    let log = std::fs::read_to_string(f.boot.join(boot_files::LOG)).unwrap();
    assert!(
        log.contains("stage 1 FAILED") && !log.contains(&token),
        "{log}"
    );
    let journal = std::fs::read_to_string(f.path(node_paths::JOURNAL)).unwrap();
    assert!(!journal.contains(&token));
}

#[test]
fn secrets_of_another_node_are_refused() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    let other = Fixture::new(SAMPLE_CLUSTER, "pi-worker-2");
    std::fs::write(f.boot.join(boot_files::SECRETS), &other.secrets_json).unwrap();
    let err = format!("{:#}", stage1::run(&f.host(), None).unwrap_err());
    assert!(
        err.contains("belongs to node \"pi-worker-2\" but the bundle is for \"pi-master\""),
        "{err}"
    );
}

#[test]
fn default_user_keeps_its_account_and_is_locked_when_keys_only() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    run(&f);
    let r = f.root.display().to_string();
    assert_eq!(
        f.recorder.lines(),
        vec![
            format!("usermod --prefix {r} -a -G {GROUPS} pi"),
            format!("usermod --prefix {r} -L pi"),
            format!("systemctl --root={r} disable userconfig.service"),
            format!("systemctl --root={r} mask userconfig.service"),
            format!("systemctl --root={r} enable getty@tty1.service"),
            format!("ssh-keygen -A -f {r}"),
            format!("systemctl --root={r} enable ssh.service picluster-node.service"),
            format!("systemctl --root={r} enable systemd-time-wait-sync.service"),
        ]
    );
    assert!(f.recorder.calls().iter().all(|c| !c.live));
    // Host keys already there (Bookworm's firstboot made them): none made.
    let g = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    picluster_node::testing::write(&g.path("/etc/ssh/ssh_host_ed25519_key"), b"k", 0o600);
    run(&g);
    assert!(
        !g.recorder
            .lines()
            .iter()
            .any(|l| l.starts_with("ssh-keygen"))
    );
}

#[test]
fn renamed_user_with_password_gets_it_through_stdin_only() {
    let f = Fixture::new(&alice_cluster(), "pi-master");
    std::fs::write(f.boot.join(boot_files::USERCONF), "pi:$6$old$hash\n").unwrap();
    run(&f);
    let r = f.root.display().to_string();
    let lines = f.recorder.lines();
    assert_eq!(
        lines[..5],
        [
            format!("usermod --prefix {r} -l alice pi"),
            format!("usermod --prefix {r} -m -d /home/alice alice"),
            format!("groupmod --prefix {r} -n alice pi"),
            format!("usermod --prefix {r} -a -G {GROUPS} alice"),
            format!(
                "chpasswd --root {r} -e <({} secret bytes on stdin)",
                "alice:\n".len() + PASSWORD_HASH.len()
            ),
        ]
    );
    let chpasswd = &f.recorder.calls()[4];
    assert_eq!(
        chpasswd.stdin(),
        Some(format!("alice:{PASSWORD_HASH}\n").as_bytes())
    );
    assert!(
        f.recorder
            .calls()
            .iter()
            .all(|c| !c.args.iter().any(|a| a.contains("$6$")))
    );
    // Raspberry Pi OS's own files that name the first user follow the rename.
    assert_eq!(f.read("/etc/subuid"), "alice:100000:65536\n");
    assert_eq!(f.read("/etc/subgid"), "alice:100000:65536\n");
    assert_eq!(
        f.read("/etc/sudoers.d/010_pi-nopasswd"),
        "alice ALL=(ALL) NOPASSWD: ALL\n"
    );
    assert_eq!(f.meta("/etc/sudoers.d/010_pi-nopasswd"), (0o440, 0, 0));
    // Keys go to the new home, owned by uid/gid 1000.
    assert_eq!(
        f.meta("/home/alice/.ssh/authorized_keys"),
        (0o600, 1000, 1000)
    );
    // With a password, sshd keeps password login; no passwordless sudo file.
    assert!(
        !f.read("/etc/ssh/sshd_config.d/10-picluster.conf")
            .contains("PasswordAuthentication")
    );
    assert!(!f.path("/etc/sudoers.d/010_picluster-nopasswd").exists());
    assert!(!f.boot.join(boot_files::USERCONF).exists());
    let detail = stage1_detail(&f, "rename-wizard");
    assert!(detail.contains("userconf.txt scrubbed"), "{detail}");
}

#[test]
fn on_trixie_cloud_init_is_turned_off_and_the_first_user_gets_a_login_shell() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    picluster_node::testing::trixie_root(&f.root);
    run(&f);
    let r = f.root.display().to_string();
    let lines = f.recorder.lines();
    assert_eq!(
        lines[..2],
        [
            format!("usermod --prefix {r} -s /bin/bash pi"),
            format!("usermod --prefix {r} -a -G {GROUPS} pi"),
        ],
        "{lines:#?}"
    );
    // Kept off on every later boot: the file cloud-init's ds-identify and
    // units check (cloud-init 25.1.4 tools/ds-identify, systemd/*.tmpl).
    assert_eq!(f.meta("/etc/cloud/cloud-init.disabled"), (0o644, 0, 0));
    let detail = stage1_detail(&f, "cloud-init");
    assert!(detail.contains("turned off for good"), "{detail}");
    // Trixie has no 010_pi-nopasswd: picluster's own rule lets a keys-only
    // administrator use sudo, as on Bookworm.
    assert!(!f.path("/etc/sudoers.d/010_pi-nopasswd").exists());
    assert!(
        f.read("/etc/sudoers.d/010_picluster-nopasswd")
            .contains("pi ALL=(ALL) NOPASSWD: ALL")
    );
    // The grow and the machine id, finished on the running system before
    // the reboot (live commands: recorded here, refused outside `/`).
    let live: Vec<String> = f
        .recorder
        .calls()
        .iter()
        .filter(|c| c.live)
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        live,
        [
            "systemctl start systemd-growfs-root.service",
            "systemd-machine-id-setup --commit"
        ]
    );
    assert!(lines.iter().any(|l| l == &format!("ssh-keygen -A -f {r}")));
    // Bookworm has no cloud-init: nothing is written there.
    let g = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    run(&g);
    assert!(!g.path("/etc/cloud").exists());
    assert!(stage1_detail(&g, "cloud-init").contains("no cloud-init on this system"));
    assert!(stage1_detail(&g, "first-boot").contains("no rpi-resize.service"));
    assert!(!g.recorder.lines().iter().any(|l| l.contains(" -s ")));
}

/// Real shadow tools for accounts, a recorder for systemctl.
struct AccountsForReal {
    real: SystemRunner,
    rec: Recorder,
}

impl Runner for AccountsForReal {
    fn run(&self, cmd: &Cmd) -> std::io::Result<CmdOutput> {
        if ["usermod", "groupmod", "useradd", "chpasswd"].contains(&cmd.program.as_str()) {
            self.rec.run(cmd)?;
            self.real.run(cmd)
        } else {
            self.rec.run(cmd)
        }
    }
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--help")
        .output()
        .is_ok()
}

#[test]
fn rename_with_the_real_shadow_tools() {
    if !["usermod", "groupmod", "chpasswd"].iter().all(|t| have(t)) {
        eprintln!("SKIPPED: shadow tools (usermod, groupmod, chpasswd) are not installed");
        return;
    }
    let f = Fixture::new(&alice_cluster(), "pi-worker-1");
    let runner = Arc::new(AccountsForReal {
        real: SystemRunner::new(&f.root),
        rec: Recorder::new(),
    });
    stage1::run(&f.host_with(runner), None).unwrap();
    let passwd = f.read("/etc/passwd");
    assert!(
        passwd.contains("\nalice:x:1000:1000:,,,:/home/alice:/bin/bash\n"),
        "{passwd}"
    );
    assert!(!passwd.contains("\npi:"), "{passwd}");
    let group = f.read("/etc/group");
    assert!(
        group.contains("\nalice:x:1000:\n") && group.contains("\nsudo:x:27:alice\n"),
        "{group}"
    );
    let shadow = f.read("/etc/shadow");
    assert!(
        shadow.contains(&format!("\nalice:{PASSWORD_HASH}:")),
        "{shadow}"
    );
    // The home moved with its content; the keys are the user's.
    assert_eq!(f.read("/home/alice/.bashrc"), "# bash\n");
    assert!(!f.path("/home/pi").exists());
    assert_eq!(
        f.meta("/home/alice/.ssh/authorized_keys"),
        (0o600, 1000, 1000)
    );

    // Resuming after everything is done changes nothing.
    let before = f.snapshot();
    stage1::run(&f.host(), None).unwrap();
    assert_eq!(f.snapshot(), before);
}

/// Power lost after any number of steps: the next boot finishes the job,
/// runs each step exactly once overall, and leaves the same tree.
#[test]
fn resume_after_power_loss_between_any_two_steps() {
    let reference = Fixture::new(&alice_cluster(), "pi-worker-1");
    let bundle_json = std::fs::read(reference.boot.join(boot_files::BUNDLE)).unwrap();
    run(&reference);
    let want_cmds = reference.recorder.lines();
    let steps = stage1::steps().len();
    for k in 0..steps {
        let f = Fixture::new(&alice_cluster(), "pi-worker-1");
        // Same secrets and bundle as the reference, so trees compare equal.
        std::fs::write(f.boot.join(boot_files::BUNDLE), &bundle_json).unwrap();
        std::fs::write(f.boot.join(boot_files::SECRETS), &reference.secrets_json).unwrap();
        let first = Arc::new(Recorder::new());
        assert_eq!(
            stage1::run(&f.host_with(first.clone()), Some(k)).unwrap(),
            Outcome::Interrupted,
            "k={k}"
        );
        if k < steps - 1 {
            assert_ne!(
                std::fs::read_to_string(f.boot.join(boot_files::CMDLINE)).unwrap(),
                FINAL_CMDLINE,
                "cmdline.txt changed before the last step (k={k})"
            );
        }
        let second = Arc::new(Recorder::new());
        assert_eq!(
            stage1::run(&f.host_with(second.clone()), None).unwrap(),
            Outcome::Completed
        );
        let cmds: Vec<String> = first
            .lines()
            .into_iter()
            .chain(second.lines())
            .map(|l| l.replace(&f.root.display().to_string(), "ROOT"))
            .collect();
        let want: Vec<String> = want_cmds
            .iter()
            .map(|l| l.replace(&reference.root.display().to_string(), "ROOT"))
            .collect();
        assert_eq!(cmds, want, "k={k}");
        assert_eq!(f.snapshot(), reference.snapshot(), "k={k}");
        let j = Journal::read(&f.path(node_paths::JOURNAL))
            .unwrap()
            .unwrap();
        assert!(j.steps.iter().all(|r| r.attempts == 1), "k={k}: {j:?}");
    }
}

#[test]
fn a_new_bundle_on_the_card_runs_stage1_again() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-3");
    run(&f);
    let mut bundle = f.bundle.clone();
    bundle
        .user
        .authorized_keys
        .push("ssh-ed25519 AAAAnewkey new@host".into());
    std::fs::write(
        f.boot.join(boot_files::BUNDLE),
        serde_json::to_vec(&bundle).unwrap(),
    )
    .unwrap();
    std::fs::write(f.boot.join(boot_files::SECRETS), &f.secrets_json).unwrap();
    run(&f);
    assert!(f.read("/home/pi/.ssh/authorized_keys").contains("new@host"));
    assert!(!f.boot.join(boot_files::SECRETS).exists());
    let j = Journal::read(&f.path(node_paths::JOURNAL))
        .unwrap()
        .unwrap();
    assert!(j.steps.iter().all(|r| r.attempts == 2), "{j:?}");
}

#[test]
fn creates_the_user_when_the_image_has_no_first_user() {
    if !["useradd", "usermod", "chpasswd"].iter().all(|t| have(t)) {
        eprintln!("SKIPPED: shadow tools (useradd, usermod, chpasswd) are not installed");
        return;
    }
    let f = Fixture::new(&alice_cluster(), "pi-worker-3");
    // An image without `pi`: drop it from every account file.
    for file in ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"] {
        let kept: String = f
            .read(file)
            .lines()
            .filter(|l| !l.starts_with("pi:"))
            .map(|l| format!("{}\n", l.replace(":pi", ":")))
            .collect();
        std::fs::write(f.path(file), kept).unwrap();
    }
    std::fs::remove_dir_all(f.path("/home/pi")).unwrap();
    let rec = Recorder::new();
    let runner = Arc::new(AccountsForReal {
        real: SystemRunner::new(&f.root),
        rec,
    });
    stage1::run(&f.host_with(runner.clone()), None).unwrap();
    let r = f.root.display().to_string();
    assert_eq!(
        runner.rec.lines()[0],
        format!("useradd --prefix {r} -m -U -s /bin/bash -u 1000 alice")
    );
    let passwd = f.read("/etc/passwd");
    assert!(
        passwd.contains("\nalice:x:1000:1000::/home/alice:/bin/bash\n"),
        "{passwd}"
    );
    assert!(f.read("/etc/group").contains("\nsudo:x:27:alice\n"));
    assert!(
        f.read("/etc/shadow")
            .contains(&format!("\nalice:{PASSWORD_HASH}:"))
    );
    // useradd made the home (its mode follows login.defs); the keys are the user's.
    assert_eq!(f.meta("/home/alice").1, 1000);
    assert_eq!(f.meta("/home/alice/.ssh"), (0o700, 1000, 1000));
    assert_eq!(
        f.meta("/home/alice/.ssh/authorized_keys"),
        (0o600, 1000, 1000)
    );
}

#[test]
fn an_existing_system_account_is_never_taken_over() {
    // Validation refuses `proxy`; a bundle built by an older or edited tool is
    // refused by the agent too: Debian's proxy has uid 13 and home /bin.
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    let mut bundle = f.bundle.clone();
    bundle.user.name = "proxy".into();
    std::fs::write(
        f.boot.join(boot_files::BUNDLE),
        serde_json::to_vec_pretty(&bundle).unwrap(),
    )
    .unwrap();
    let passwd = f.path("/etc/passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("proxy:x:13:13:proxy:/bin:/usr/sbin/nologin\n");
    std::fs::write(&passwd, text).unwrap();
    let err = format!("{:#}", stage1::run(&f.host(), None).unwrap_err());
    assert!(
        err.contains("already has an account \"proxy\" with uid 13 (home /bin), not uid 1000")
            && err.contains("Choose another [access] user"),
        "{err}"
    );
    assert!(
        !f.recorder.lines().iter().any(|l| l.contains("usermod")),
        "{:?}",
        f.recorder.lines()
    );
}

#[test]
fn retiring_pi_os_helpers_tolerates_image_variants_and_says_what_it_found() {
    // userconfig.service moved to /etc by a customisation tool: `systemctl
    // mask` would refuse, so it is only disabled; the step carries on.
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    let unit = f.path("/etc/systemd/system/userconfig.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Unit]\nDescription=wizard\n").unwrap();
    // And a systemctl that fails to enable getty@tty1 (no such unit).
    let rec = Arc::new(Recorder::with_responder(|c: &Cmd| {
        if c.args.iter().any(|a| a == "getty@tty1.service") {
            CmdOutput::failed(
                1,
                "Failed to enable unit: Unit file getty@tty1.service does not exist.",
            )
        } else {
            CmdOutput::ok()
        }
    }));
    let host = f.host_with(rec.clone());
    assert_eq!(stage1::run(&host, None).unwrap(), Outcome::Completed);
    let lines = rec.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("disable userconfig.service")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.ends_with("mask userconfig.service")),
        "{lines:?}"
    );
    let detail = stage1_detail(&f, "rename-wizard");
    assert!(
        detail.contains("moved there by a customisation tool")
            && detail.contains("enabling getty@tty1 failed")
            && detail.contains("does not exist"),
        "{detail}"
    );
    assert!(
        host.log
            .lines()
            .join("\n")
            .contains("rename-wizard: continuing; found:")
    );
    assert_eq!(
        std::fs::read_to_string(f.boot.join(boot_files::CMDLINE)).unwrap(),
        FINAL_CMDLINE
    );

    // Already masked (a link to /dev/null): nothing to do, and it says so.
    let g = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    let unit = g.path("/etc/systemd/system/userconfig.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&unit);
    std::os::unix::fs::symlink("/dev/null", &unit).unwrap();
    stage1::run(&g.host(), None).unwrap();
    assert!(
        !g.recorder.lines().iter().any(|l| l.contains("userconfig")),
        "{:?}",
        g.recorder.lines()
    );
    assert!(stage1_detail(&g, "rename-wizard").contains("userconfig.service already masked"));
}

#[test]
fn a_fatal_step_failing_three_times_falls_back_to_a_normal_boot_with_sshd() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    // The user step fails every time (usermod broken).
    let rec = Arc::new(Recorder::with_responder(|c: &Cmd| {
        if c.program == "usermod" {
            CmdOutput::failed(10, "usermod: cannot lock /etc/passwd; try again later.")
        } else {
            CmdOutput::ok()
        }
    }));
    let host = f.host_with(rec.clone());
    for attempt in 1..=2 {
        let err = stage1::run(&host, None).unwrap_err();
        assert_eq!(
            stage1::recover(&host, &err),
            stage1::Recovery::Retry { attempt }
        );
    }
    let err = stage1::run(&host, None).unwrap_err();
    assert_eq!(
        stage1::recover(&host, &err),
        stage1::Recovery::FellBack { attempts: 3 }
    );
    assert_eq!(
        std::fs::read_to_string(f.boot.join(boot_files::CMDLINE)).unwrap(),
        FINAL_CMDLINE
    );
    let lines = rec.lines();
    let r = f.root.display().to_string();
    assert!(
        lines.contains(&format!("systemctl --root={r} enable ssh.service")),
        "{lines:?}"
    );
    let notice = f.read("/etc/motd.d/picluster");
    assert!(
        notice.starts_with(
            "picluster: pi-master - stage 1 FAILED 3 times: stage1 step \"user\" failed"
        ) && notice.contains("cannot lock /etc/passwd"),
        "{notice}"
    );
    assert_eq!(f.read("/etc/issue.d/picluster.issue"), notice);
    // The secrets were still moved off the card before the user step.
    assert!(!f.boot.join(boot_files::SECRETS).exists());
}
