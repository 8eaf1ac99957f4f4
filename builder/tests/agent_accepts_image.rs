//! The real aarch64 node agent, under qemu-aarch64-static, runs stage 1 and
//! stage 2 against the boot files of an image `picluster build` wrote: the bundle
//! is accepted, K3s passes the agent's own checksum check, secrets leave the card.
//! Commands are recorded, not executed (`--record-commands`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;

#[test]
fn the_agent_accepts_what_build_wrote() {
    if !picluster_node::testing::qemu_user_available() {
        return;
    }
    let s = support::cluster::setup(&[]);
    run(&mut s.build("out", &["--node", "pi-worker-1"]));
    let d = s.dir.path();

    // The node's root, with the boot partition's files where Raspberry Pi OS mounts it.
    let img = d.join("out/pi-worker-1.img");
    let root = d.join("root");
    picluster_node::testing::pios_root(&root);
    let boot = root.join("boot/firmware");
    let p1 = d.join("p1");
    extract(&img, 8 << 20, 512 << 20, &p1);
    copy_from_fat(&p1, AGENT_BOOT_FILES, &boot);
    let agent = boot.join("picluster-node");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secrets_on_card = std::fs::read(boot.join("picluster-secrets.json")).unwrap();

    for stage in ["stage1", "stage2"] {
        run(Command::new("qemu-aarch64-static")
            .arg(&agent)
            .arg("--root")
            .arg(&root)
            .arg("--record-commands")
            .arg(d.join(format!("{stage}.jsonl")))
            .arg(stage));
    }
    let cmdline = std::fs::read_to_string(boot.join("cmdline.txt")).unwrap();
    assert!(
        !cmdline.contains("systemd.run") && cmdline.contains("cgroup_enable=memory"),
        "{cmdline}"
    );
    assert!(
        !boot.join("picluster-secrets.json").exists(),
        "secrets scrubbed from the card"
    );
    let moved = root.join("etc/picluster/secrets.json");
    assert_eq!(std::fs::read(&moved).unwrap(), secrets_on_card);
    assert_eq!(
        std::fs::metadata(&moved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "pi-worker-1\n"
    );
    let config = std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap();
    assert!(
        config.contains("server: \"https://192.168.0.120:6443\"")
            && config.contains("node-name: \"pi-worker-1\""),
        "{config}"
    );
    // K3s installed from the card passed the agent's checksum check.
    assert_eq!(
        sha256_file(&root.join("usr/local/bin/k3s")),
        sha256_file(&d.join(format!("www/k3s/{}/k3s-arm64", support::cluster::VERSION)))
    );
    let status = run(Command::new("qemu-aarch64-static")
        .arg(&agent)
        .arg("--root")
        .arg(&root)
        .args(["status", "--json"]));
    assert!(
        status.contains("\"ready\"") && status.contains("done"),
        "{status}"
    );
}
