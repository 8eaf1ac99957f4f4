//! The `picluster-node` binary: the host build directly, and the real static
//! aarch64 build under qemu-aarch64-static.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{FINAL_CMDLINE, Fixture};
use picluster_profiles::SAMPLE_CLUSTER;
use picluster_profiles::bundle::{boot_files, node_paths};

const TARGET: &str = "aarch64-unknown-linux-musl";

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// JSON lines recorded by `--record-commands`.
fn recorded(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn argv_lines(records: &[serde_json::Value], root: &Path) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["argv"].as_array())
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
                .replace(&root.display().to_string(), "ROOT")
        })
        .collect()
}

/// Runs stage 1 of `cmd` (the agent, possibly behind qemu) on a fresh fixture
/// and checks what a node would be left with.
fn stage1_dry_run(agent: &[&str], agent_file: &Path) {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-2");
    std::fs::copy(agent_file, f.boot.join(boot_files::AGENT)).unwrap();
    let record = f.root.join("../commands.jsonl");
    let run = |args: &[&str]| {
        Command::new(agent[0])
            .args(&agent[1..])
            .args(args)
            .arg("--root")
            .arg(&f.root)
            .arg("--record-commands")
            .arg(&record)
            .output()
            .unwrap()
    };
    let out = run(&["stage1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stage 1 complete"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(f.boot.join(boot_files::CMDLINE)).unwrap(),
        FINAL_CMDLINE
    );
    assert!(!f.boot.join(boot_files::SECRETS).exists());
    assert_eq!(f.meta(node_paths::SECRETS), (0o600, 0, 0));
    assert_eq!(
        std::fs::read(f.path(node_paths::AGENT)).unwrap(),
        std::fs::read(agent_file).unwrap()
    );
    let records = recorded(&record);
    assert_eq!(
        argv_lines(&records, &f.root),
        vec![
            "usermod --prefix ROOT -a -G adm,dialout,cdrom,sudo,audio,video,plugdev,users,input,netdev,gpio,i2c,spi pi",
            "usermod --prefix ROOT -L pi",
            "systemctl --root=ROOT disable userconfig.service",
            "systemctl --root=ROOT mask userconfig.service",
            "systemctl --root=ROOT enable getty@tty1.service",
            "ssh-keygen -A -f ROOT",
            "systemctl --root=ROOT enable ssh.service picluster-node.service",
            "systemctl --root=ROOT enable systemd-time-wait-sync.service",
        ]
    );

    // Stage 2 in the same dry-run mode: simulated clock and network, K3s
    // installed from the card, commands recorded.
    let out = run(&["stage2"]);
    assert!(out.status.success(), "{}", text(&out));
    let records = recorded(&record);
    let lines = argv_lines(&records, &f.root);
    assert!(
        lines.contains(&"systemctl restart --no-block k3s-agent.service".to_string()),
        "{lines:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["probe"] == "http://127.0.0.1:10248/healthz healthy: true"),
        "{records:?}"
    );
    assert!(f.path(node_paths::K3S_BINARY).exists());

    let status = Command::new(agent[0])
        .args(&agent[1..])
        .args(["status", "--root"])
        .arg(&f.root)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("node pi-worker-2 (cluster homelab)"),
        "{table}"
    );
    assert!(table.contains("state: set up: every step done"), "{table}");
    assert!(table.contains("STAGE   STEP"), "{table}");

    let json = Command::new(agent[0])
        .args(&agent[1..])
        .args(["status", "--json", "--root"])
        .arg(&f.root)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(j["node"], "pi-worker-2");
    assert_eq!(
        j["steps"].as_array().unwrap().len(),
        picluster_node::stage1::steps().len() + picluster_node::stage2::steps().len()
    );
    assert!(
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done")
    );
}

#[test]
fn host_binary_version_status_and_dry_runs() {
    let bin = env!("CARGO_BIN_EXE_picluster-node");
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("picluster-node {}\n", env!("CARGO_PKG_VERSION"))
    );

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["status", "--root"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no journal at"),
        "{}",
        text(&out)
    );

    stage1_dry_run(&[bin], Path::new(bin));
}

#[test]
fn stage1_failure_retries_a_bounded_number_of_times_then_boots_normally() {
    let bin = env!("CARGO_BIN_EXE_picluster-node");
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-2");
    std::fs::remove_file(f.boot.join(boot_files::BUNDLE)).unwrap();
    let record = f.root.join("cmds.jsonl");
    let cmdline = f.boot.join(boot_files::CMDLINE);
    let built = std::fs::read_to_string(&cmdline).unwrap();
    let run = || {
        Command::new(bin)
            .args(["stage1", "--root"])
            .arg(&f.root)
            .arg("--record-commands")
            .arg(&record)
            .output()
            .unwrap()
    };
    // A handled failure exits 0, so systemd.run_success_action=reboot reboots
    // instead of leaving the node in kernel-command-line.target.
    for attempt in 1..=2 {
        let out = run();
        assert!(out.status.success(), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("stage 1 FAILED: no node bundle at"), "{err}");
        assert!(
            err.contains(&format!("stage 1 failed (attempt {attempt} of 3)"))
                && err.contains("rebooting to try again"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&cmdline).unwrap(),
            built,
            "retries keep stage 1's arguments"
        );
    }
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stage 1 failed 3 times, the last time: no node bundle at")
            && err.contains("Falling back to a normal boot (sshd enabled, stage 1 arguments removed from cmdline.txt, login notice written)"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&cmdline).unwrap(), FINAL_CMDLINE);
    let notice = f.read("/etc/motd.d/picluster");
    assert!(
        notice.starts_with("picluster: this node - stage 1 FAILED 3 times: no node bundle at")
            && notice.contains("booted normally with SSH on"),
        "{notice}"
    );
    let log = std::fs::read_to_string(f.boot.join(boot_files::LOG)).unwrap();
    assert!(log.contains("Falling back to a normal boot"), "{log}");
    assert!(
        argv_lines(&recorded(&record), &f.root)
            .contains(&"systemctl --root=ROOT enable ssh.service".to_string())
    );
    assert!(!f.boot.join(boot_files::STAGE1_TRIES).exists());
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn target_installed() -> bool {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    sysroot.is_some_and(|s| s.join("lib/rustlib").join(TARGET).exists())
}

/// The shipped artefact: a static aarch64 musl binary linked by rust-lld.
/// Building it cold takes about 1.5 min here; later runs reuse the build.
#[test]
fn aarch64_binary_runs_under_qemu() {
    if !target_installed() {
        eprintln!(
            "SKIPPED: the Rust target {TARGET} is not installed (rustup target add {TARGET})"
        );
        return;
    }
    if !picluster_node::testing::qemu_user_available() {
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "picluster-node",
            "--release",
            "--target",
            TARGET,
        ])
        .current_dir(&workspace)
        .output()
        .unwrap();
    assert!(out.status.success(), "cross build failed:\n{}", text(&out));
    let bin = target_dir().join(TARGET).join("release/picluster-node");

    let bytes = std::fs::read(&bin).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "e_machine is EM_AARCH64"
    );
    // `<version>+src.<sources>`: picluster build reads both (firstboot/src/lib.rs).
    let marker = format!(
        "picluster-node-version:{}+src.{}\0",
        env!("CARGO_PKG_VERSION"),
        picluster_node::SOURCE_ID
    );
    assert!(
        bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "version marker missing from {}",
        bin.display()
    );

    let bin_str = bin.to_str().unwrap();
    let out = Command::new("qemu-aarch64-static")
        .args([bin_str, "--version"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("picluster-node {}\n", env!("CARGO_PKG_VERSION")),
        "{}",
        text(&out)
    );
    stage1_dry_run(&["qemu-aarch64-static", bin_str], &bin);
}
