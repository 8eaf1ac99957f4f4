//! Stage 2 against a temporary root that went through stage 1.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use common::{BUILT_AT, Fixture, airgap_bytes, files_containing, ha_cluster, k3s_bytes};
use picluster_node::host::{Cmd, CmdOutput, Environment, Recorder, SimulatedEnvironment};
use picluster_node::journal::{Journal, Outcome, Stage, Status};
use picluster_node::{stage1, stage2, status};
use picluster_profiles::SAMPLE_CLUSTER;
use picluster_profiles::bundle::{FileSpec, NodeBundle, Phase, boot_files, node_paths};

/// Run stage 1 (commands recorded elsewhere) and let the clock be synchronised.
fn after_stage1(f: &Fixture) {
    stage1::run(&f.host_with(Arc::new(Recorder::new())), None).unwrap();
    f.time_synced();
}

/// Rewrite the bundle on the card (before stage 1 installs it).
fn edit_bundle(f: &Fixture, edit: impl FnOnce(&mut NodeBundle)) {
    let mut b = f.bundle.clone();
    edit(&mut b);
    std::fs::write(
        f.boot.join(boot_files::BUNDLE),
        serde_json::to_vec(&b).unwrap(),
    )
    .unwrap();
}

fn journal(f: &Fixture) -> Journal {
    Journal::read(&f.path(node_paths::JOURNAL))
        .unwrap()
        .unwrap()
}

fn detail(f: &Fixture, step: &str) -> String {
    journal(f)
        .get(Stage::Stage2, step)
        .unwrap()
        .detail
        .clone()
        .unwrap_or_default()
}

#[test]
fn agent_installs_k3s_writes_its_config_and_waits_for_the_kubelet() {
    let f = Fixture::with_airgap(SAMPLE_CLUSTER, "pi-worker-1");
    after_stage1(&f);
    // K3s must find its node password and config when it first starts.
    let root = f.root.clone();
    let ready_at_start = Arc::new(AtomicBool::new(false));
    let seen = ready_at_start.clone();
    let rec = Arc::new(Recorder::with_responder(move |c: &Cmd| {
        if c.args.first().map(String::as_str) == Some("restart") {
            let ok = root.join("etc/rancher/node/password").exists()
                && root.join("etc/rancher/k3s/config.yaml").exists()
                && root.join("usr/local/bin/k3s").exists();
            seen.store(ok, Ordering::SeqCst);
        }
        CmdOutput::ok()
    }));
    let host = f.host_with(rec.clone());
    assert_eq!(stage2::run(&host, None).unwrap(), Outcome::Completed);
    assert!(ready_at_start.load(Ordering::SeqCst));

    // K3s, verified, with install.sh's links.
    assert_eq!(
        std::fs::read(f.path(node_paths::K3S_BINARY)).unwrap(),
        k3s_bytes()
    );
    assert_eq!(f.meta(node_paths::K3S_BINARY), (0o755, 0, 0));
    for l in ["kubectl", "crictl", "ctr"] {
        let link = f.path(&format!("/usr/local/bin/{l}"));
        assert_eq!(std::fs::read_link(link).unwrap().to_str(), Some("k3s"));
    }
    let airgap = format!("{}/{}", node_paths::AIRGAP_DIR, boot_files::K3S_AIRGAP);
    assert_eq!(std::fs::read(f.path(&airgap)).unwrap(), airgap_bytes());

    // Every BeforeK3s file exactly as rendered, with its mode.
    for s in f.bundle.files_for(&f.node_secrets, Phase::BeforeK3s) {
        assert_eq!(f.read(&s.path), s.content, "{}", s.path);
        assert_eq!(f.meta(&s.path), (s.mode.0, 0, 0), "{}", s.path);
    }
    let config = f.read(node_paths::K3S_CONFIG);
    assert_eq!(f.meta(node_paths::K3S_CONFIG), (0o600, 0, 0));
    assert!(
        config.contains(&format!("token: \"{}\"\n", f.secrets.k3s_agent_token)),
        "{config}"
    );
    assert!(
        config.contains("server: \"https://192.168.0.120:6443\"\n"),
        "{config}"
    );
    assert!(
        config.contains("node-name: \"pi-worker-1\"\nnode-ip: \"192.168.0.121\"\n"),
        "{config}"
    );
    assert!(!config.contains("cluster-init"), "{config}");
    assert_eq!(
        f.read(node_paths::NODE_PASSWORD),
        f.secrets.node_password("pi-worker-1")
    );
    assert_eq!(f.meta(node_paths::NODE_PASSWORD), (0o600, 0, 0));
    let unit = f.read("/etc/systemd/system/k3s-agent.service");
    for line in [
        "Type=notify\n",
        "Delegate=yes\n",
        "KillMode=process\n",
        "Restart=always\n",
        "ExecStartPre=-/sbin/modprobe br_netfilter\n",
        "ExecStartPre=-/sbin/modprobe overlay\n",
        "ExecStart=/usr/local/bin/k3s agent\n",
    ] {
        assert!(unit.contains(line), "{line:?} missing from\n{unit}");
    }
    assert_eq!(
        f.meta("/etc/systemd/system/k3s-agent.service.env"),
        (0o600, 0, 0)
    );

    // A stolen worker card holds no server token.
    assert!(files_containing(&f.root, &f.secrets.k3s_token).is_empty());

    let r = f.root.display().to_string();
    assert_eq!(
        rec.lines(),
        vec![
            "systemctl daemon-reload".to_string(),
            format!("systemctl --root={r} enable k3s-agent.service"),
            "systemctl restart --no-block k3s-agent.service".into(),
            "systemctl is-active k3s-agent.service".into(),
            // Ready is the Node's condition, read with the kubelet's own credentials.
            "/usr/local/bin/k3s kubectl wait --kubeconfig=/var/lib/rancher/k3s/agent/kubelet.kubeconfig --for=condition=Ready --timeout=60s node/pi-worker-1".into(),
            // The agent's progress, on its own Node for `picluster status`.
            format!("/usr/local/bin/k3s kubectl annotate --kubeconfig=/var/lib/rancher/k3s/agent/kubelet.kubeconfig --overwrite --request-timeout=10s node/pi-worker-1 picluster.io/step=ready picluster.io/agent-version={}", picluster_node::VERSION),
            format!("/usr/local/bin/k3s kubectl annotate --kubeconfig=/var/lib/rancher/k3s/agent/kubelet.kubeconfig --overwrite --request-timeout=10s node/pi-worker-1 picluster.io/step=done picluster.io/agent-version={}", picluster_node::VERSION),
            format!("systemctl --root={r} disable picluster-node.service"),
        ]
    );
    let j = journal(&f);
    assert!(j.stage_done(Stage::Stage2));
    assert!(
        detail(&f, "ready").contains("kubelet healthy"),
        "{}",
        detail(&f, "ready")
    );
    assert_eq!(
        f.read("/etc/motd.d/picluster"),
        "picluster: pi-worker-1 - K3s v1.33.5+k3s1 agent of cluster \"homelab\", set up 2025-11-24T11:34:56Z (picluster-node status)\n"
    );
    assert_eq!(
        f.read("/etc/issue.d/picluster.issue"),
        f.read("/etc/motd.d/picluster")
    );

    // Done means done: another start changes nothing and runs nothing.
    let before = f.snapshot();
    let again = Arc::new(Recorder::new());
    stage2::run(&f.host_with(again.clone()), None).unwrap();
    assert!(again.lines().is_empty(), "{:?}", again.lines());
    assert_eq!(f.snapshot(), before);

    let table = status::table(&j);
    assert!(table.contains("state: set up: every step done"), "{table}");
    assert!(table.contains("stage2  ready"), "{table}");
}

#[test]
fn first_server_initialises_the_cluster() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    after_stage1(&f);
    stage2::run(&f.host(), None).unwrap();
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(
        config.contains(&format!("token: \"{}\"\n", f.secrets.k3s_token)),
        "{config}"
    );
    assert!(config.contains(&format!("agent-token: \"{}\"\n", f.secrets.k3s_agent_token)));
    assert!(config.contains("cluster-init: true\n"), "{config}");
    assert!(!config.contains("server:"), "{config}");
    assert!(
        config.contains("write-kubeconfig-mode: \"0600\"\n"),
        "{config}"
    );
    assert!(
        config.contains("tls-san:\n  - \"192.168.0.120\"\n"),
        "{config}"
    );
    assert!(
        f.read("/etc/systemd/system/k3s.service")
            .contains("ExecStart=/usr/local/bin/k3s server\n")
    );
    assert!(detail(&f, "k3s-config").starts_with("first server: initialising the cluster"));
    assert!(
        f.recorder.lines().contains(
            &"/usr/local/bin/k3s kubectl wait --for=condition=Ready --timeout=60s node/pi-master"
                .to_string()
        ),
        "{:?}",
        f.recorder.lines()
    );
}

#[test]
fn joining_server_points_at_the_api_endpoint() {
    let f = Fixture::new(&ha_cluster(), "pi-worker-1");
    after_stage1(&f);
    stage2::run(&f.host(), None).unwrap();
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(
        config.contains(&format!("token: \"{}\"\n", f.secrets.k3s_token)),
        "{config}"
    );
    assert!(
        config.contains("server: \"https://192.168.0.120:6443\"\n"),
        "{config}"
    );
    assert!(!config.contains("cluster-init"), "{config}");
    let d = detail(&f, "k3s-config");
    assert!(
        d.starts_with("server joining https://192.168.0.120:6443 (none of 192.168.0.120:6443, 192.168.0.122:6443 answered"),
        "{d}"
    );
}

#[test]
fn a_joining_node_registers_with_the_first_server_that_answers() {
    // The first server is down; the third answers: join through it.
    let f = Fixture::new(&ha_cluster(), "pi-worker-1");
    after_stage1(&f);
    f.env
        .open_ports
        .lock()
        .unwrap()
        .push(SocketAddr::from(([192, 168, 0, 122], 6443)));
    stage2::run(&f.host(), None).unwrap();
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(
        config.contains("server: \"https://192.168.0.122:6443\"\n"),
        "{config}"
    );
    let d = detail(&f, "k3s-config");
    assert!(
        d.starts_with("server joining https://192.168.0.122:6443 (registration addresses in order: https://192.168.0.120:6443, https://192.168.0.122:6443; 192.168.0.122:6443 answered in probe round 1"),
        "{d}"
    );
    // Probed in file order: the first server first.
    let notes = f.recorder.notes();
    let first = notes
        .iter()
        .position(|n| n.starts_with("tcp 192.168.0.120:6443"))
        .unwrap();
    let third = notes
        .iter()
        .position(|n| n.starts_with("tcp 192.168.0.122:6443"))
        .unwrap();
    assert!(first < third, "{notes:?}");
}

#[test]
fn reflashed_first_server_keeps_probing_late_peers_then_joins_never_cluster_init() {
    let f = Fixture::new(&ha_cluster(), "pi-master");
    after_stage1(&f);
    let t0 = f.env.now();
    // Its own link comes up after 3 minutes (past the network step's 2-minute
    // wait), the second server answers 4 minutes after that.
    *f.env.address_from.lock().unwrap() = Some(t0 + 180);
    f.env
        .open_from
        .lock()
        .unwrap()
        .push((SocketAddr::from(([192, 168, 0, 121], 6443)), t0 + 420));
    let host = f.host();
    stage2::run(&host, None).unwrap();
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(!config.contains("cluster-init"), "{config}");
    assert!(
        config.contains("server: \"https://192.168.0.121:6443\"\n"),
        "{config}"
    );
    let log = host.log.lines().join("\n");
    assert!(
        log.contains("is not assigned yet: not deciding between joining and initialising"),
        "{log}"
    );
    assert!(
        log.contains("probe round 1: none of 192.168.0.121:6443, 192.168.0.122:6443 answers"),
        "{log}"
    );
    let d = detail(&f, "k3s-config");
    assert!(
        d.starts_with("re-flashed first server: 192.168.0.121:6443 answers, so the cluster is running (192.168.0.121:6443 answered in probe round"),
        "{d}"
    );
    // No peer was probed before the node's own address was up.
    let notes = f.recorder.notes();
    let up = notes
        .iter()
        .position(|n| n == "address 192.168.0.120 assigned: true")
        .unwrap();
    let first_probe = notes.iter().position(|n| n.starts_with("tcp ")).unwrap();
    assert!(up < first_probe, "{notes:?}");
}

#[test]
fn first_server_initialises_only_after_probing_its_peers_for_minutes() {
    let f = Fixture::new(&ha_cluster(), "pi-master");
    after_stage1(&f);
    let t0 = f.env.now();
    stage2::run(&f.host(), None).unwrap();
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(config.contains("cluster-init: true\n"), "{config}");
    let d = detail(&f, "k3s-config");
    assert!(
        d.starts_with("first server: initialising the cluster (cluster-init): 192.168.0.120 is up and none of 192.168.0.121:6443, 192.168.0.122:6443 answered in"),
        "{d}"
    );
    assert!(d.contains("over 5m00s"), "{d}");
    assert!(f.env.now() - t0 >= 300);
}

#[test]
fn reflashed_first_server_joins_the_running_cluster_instead_of_starting_a_second() {
    let f = Fixture::new(&ha_cluster(), "pi-master");
    after_stage1(&f);
    f.env
        .open_ports
        .lock()
        .unwrap()
        .push(SocketAddr::from(([192, 168, 0, 122], 6443)));
    stage2::run(&f.host(), None).unwrap();
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(
        config.contains("server: \"https://192.168.0.122:6443\"\n"),
        "{config}"
    );
    assert!(!config.contains("cluster-init"), "{config}");
    // Everything else as rendered.
    let spec = f
        .node_secrets
        .files
        .iter()
        .find(|s| s.path == node_paths::K3S_CONFIG)
        .unwrap();
    assert_eq!(
        config.replace(
            "server: \"https://192.168.0.122:6443\"\n",
            "cluster-init: true\n"
        ),
        spec.content
    );
    assert!(
        detail(&f, "k3s-config").contains("re-flashed first server: 192.168.0.122:6443 answers")
    );
}

#[test]
fn first_server_with_a_datastore_keeps_cluster_init() {
    let f = Fixture::new(&ha_cluster(), "pi-master");
    after_stage1(&f);
    std::fs::create_dir_all(f.path("/var/lib/rancher/k3s/server/db/etcd")).unwrap();
    f.env
        .open_ports
        .lock()
        .unwrap()
        .push(SocketAddr::from(([192, 168, 0, 121], 6443)));
    stage2::run(&f.host(), None).unwrap();
    assert!(
        f.read(node_paths::K3S_CONFIG)
            .contains("cluster-init: true\n")
    );
}

#[test]
fn k3s_with_a_wrong_checksum_is_refused_then_installed_once_fixed() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-2");
    after_stage1(&f);
    let card = f.boot.join(boot_files::K3S_BINARY);
    let mut bad = k3s_bytes();
    bad[1000] ^= 0xff;
    std::fs::write(&card, &bad).unwrap();

    let err = format!("{:#}", stage2::run(&f.host(), None).unwrap_err());
    assert!(err.contains("k3s-arm64 does not match the bundle"), "{err}");
    assert!(err.contains(&f.bundle.k3s.binary.sha256), "{err}");
    assert!(err.contains("Nothing was installed"), "{err}");
    assert!(!f.path(node_paths::K3S_BINARY).exists());
    assert_eq!(
        std::fs::read_dir(f.path("/usr/local/bin"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    let rec = journal(&f)
        .get(Stage::Stage2, "k3s-binary")
        .unwrap()
        .clone();
    assert_eq!(rec.status, Status::Failed);
    assert!(
        rec.last_error
            .unwrap()
            .contains("does not match the bundle")
    );
    assert!(
        f.read("/etc/motd.d/picluster").contains("setup FAILED"),
        "{}",
        f.read("/etc/motd.d/picluster")
    );
    // K3s was never started.
    assert!(!f.recorder.lines().iter().any(|l| l.contains("k3s-agent")));

    std::fs::write(&card, k3s_bytes()).unwrap();
    stage2::run(&f.host(), None).unwrap();
    assert_eq!(
        std::fs::read(f.path(node_paths::K3S_BINARY)).unwrap(),
        k3s_bytes()
    );
    let j = journal(&f);
    assert_eq!(j.get(Stage::Stage2, "k3s-binary").unwrap().attempts, 2);
    assert_eq!(j.get(Stage::Stage2, "network").unwrap().attempts, 1);
}

#[test]
fn missing_memory_cgroup_names_the_fix() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    after_stage1(&f);
    std::fs::write(
        f.path("/sys/fs/cgroup/cgroup.controllers"),
        "cpuset cpu io pids\n",
    )
    .unwrap();
    let err = format!("{:#}", stage2::run(&f.host(), None).unwrap_err());
    assert!(
        err.contains("cgroup v2 controller(s) memory K3s needs are not enabled"),
        "{err}"
    );
    assert!(err.contains("lists: cpuset cpu io pids"), "{err}");
    assert!(
        err.contains("cgroup_enable=memory") && !err.contains("cgroup_memory=1"),
        "{err}"
    );
    assert!(err.contains("/boot/firmware/cmdline.txt"), "{err}");

    // Without cpuset the step names exactly that controller.
    std::fs::write(
        f.path("/sys/fs/cgroup/cgroup.controllers"),
        "cpu io memory pids\n",
    )
    .unwrap();
    let err = format!("{:#}", stage2::run(&f.host(), None).unwrap_err());
    assert!(err.contains("controller(s) cpuset K3s needs"), "{err}");
}

#[test]
fn without_time_sync_the_clock_is_never_earlier_than_the_build() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    stage1::run(&f.host_with(Arc::new(Recorder::new())), None).unwrap();
    // No synchronised flag, no address, and a clock in 1970.
    let env = Arc::new(SimulatedEnvironment::starting_at(1_000));
    *env.address_from.lock().unwrap() = None;
    let mut host = f.host();
    host.env = env.clone();
    stage2::run(&host, None).unwrap();
    assert!(
        f.recorder
            .lines()
            .contains(&format!("date -u -s @{BUILT_AT}"))
    );
    let clock = detail(&f, "clock");
    assert!(
        clock.contains("time is not synchronised after 1m30s"),
        "{clock}"
    );
    assert!(
        clock.contains("set it to the build time 2025-11-24T10:34:56Z"),
        "{clock}"
    );
    let net = detail(&f, "network");
    assert!(
        net.contains("192.168.0.121 is not assigned after 2m00s: continuing anyway"),
        "{net}"
    );

    // With a later clock, it is left alone and the log says so.
    let g = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    stage1::run(&g.host_with(Arc::new(Recorder::new())), None).unwrap();
    stage2::run(&g.host(), None).unwrap();
    assert!(!g.recorder.lines().iter().any(|l| l.starts_with("date")));
    let clock = detail(&g, "clock");
    assert!(
        clock.contains("continuing with the clock at 2025-11-24T11:36:26Z (not earlier than the image build time 2025-11-24T10:34:56Z)"),
        "{clock}"
    );
}

#[test]
fn waiting_for_ready_backs_off_and_explains_a_stale_etcd_member() {
    let f = Fixture::new(&ha_cluster(), "pi-worker-1");
    after_stage1(&f);
    let checks = Arc::new(AtomicU32::new(0));
    let n = checks.clone();
    let rec = Arc::new(Recorder::with_responder(move |c: &Cmd| {
        if c.args.get(1).map(String::as_str) == Some("wait") {
            if n.fetch_add(1, Ordering::SeqCst) < 3 {
                return CmdOutput::failed(
                    1,
                    "Error from server (NotFound): nodes \"pi-worker-1\" not found",
                );
            }
        } else if c.program == "journalctl" {
            return CmdOutput::ok_with(
                "level=info msg=\"Starting k3s v1.33.5+k3s1\"\nlevel=fatal msg=\"ETCD join failed: duplicate node name found, please use a unique name for this node\"\n",
            );
        }
        CmdOutput::ok()
    }));
    let host = f.host_with(rec.clone());
    stage2::run(&host, None).unwrap();
    let log = host.log.lines().join("\n");
    for pause in ["retrying in 5s", "retrying in 10s", "retrying in 20s"] {
        assert!(log.contains(pause), "{pause} missing:\n{log}");
    }
    assert!(log.contains("waiting for pi-worker-1 to be Ready failed (attempt 1): `k3s kubectl wait` says: Error from server (NotFound)"), "{log}");
    assert!(
        log.contains("ACTION NEEDED: the cluster's etcd still has a member for pi-worker-1")
            && log.contains("sudo k3s kubectl delete node pi-worker-1"),
        "{log}"
    );
    assert!(
        detail(&f, "ready").contains("after 35s and 4 check(s)"),
        "{}",
        detail(&f, "ready")
    );
    assert_eq!(
        rec.lines()
            .iter()
            .filter(|l| l.starts_with("journalctl -u k3s.service -b"))
            .count(),
        3
    );
}

#[test]
fn a_waiting_ready_step_says_why_in_the_journal() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    after_stage1(&f);
    let journal_path = f.path(node_paths::JOURNAL);
    // What `picluster-node status` would show during each Ready check.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let rec = Arc::new(Recorder::with_responder(move |c: &Cmd| {
        if c.args.get(1).map(String::as_str) == Some("wait") {
            let j = Journal::read(&journal_path).unwrap().unwrap();
            let r = j.get(Stage::Stage2, "ready").unwrap();
            s.lock().unwrap().push((r.status, r.detail.clone()));
            if s.lock().unwrap().len() < 3 {
                return CmdOutput::failed(
                    1,
                    "Error from server (NotFound): nodes \"pi-master\" not found",
                );
            }
        }
        CmdOutput::ok()
    }));
    stage2::run(&f.host_with(rec), None).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0],
        (Status::Running, None),
        "nothing to say before the first check"
    );
    let (status, note) = &seen[2];
    assert_eq!(*status, Status::Running);
    let note = note.as_deref().unwrap();
    assert!(
        note.starts_with("waiting (check 2, ") && note.contains("NotFound"),
        "{note}"
    );
    assert!(
        detail(&f, "ready").contains("is Ready"),
        "the final account replaces the note"
    );
}

#[test]
fn an_unready_node_retries_and_reports_on_the_login_notice() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-3");
    after_stage1(&f);
    // The kubelet never answers: with the test's attempt limit the step gives up.
    *f.env.healthy_from.lock().unwrap() = None;
    let err = format!("{:#}", stage2::run(&f.host(), None).unwrap_err());
    assert!(err.contains("giving up after 30 attempts"), "{err}");
    assert!(
        err.contains("kubelet health endpoint http://127.0.0.1:10248/healthz"),
        "{err}"
    );
    let notice = f.read("/etc/motd.d/picluster");
    assert!(notice.contains("setup FAILED"), "{notice}");
}

#[test]
fn apt_packages_are_retried_until_installed() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    edit_bundle(&f, |b| {
        b.apt_packages = vec!["open-iscsi".into(), "nfs-common".into()]
    });
    after_stage1(&f);
    let fails = Arc::new(AtomicU32::new(0));
    let n = fails.clone();
    let rec = Arc::new(Recorder::with_responder(move |c: &Cmd| {
        if c.program == "apt-get" && c.args[0] == "update" && n.fetch_add(1, Ordering::SeqCst) < 2 {
            return CmdOutput::failed(
                100,
                "E: Failed to fetch http://deb.debian.org/ Temporary failure resolving",
            );
        }
        CmdOutput::ok()
    }));
    let host = f.host_with(rec.clone());
    stage2::run(&host, None).unwrap();
    let apt: Vec<String> = rec
        .lines()
        .into_iter()
        .filter(|l| l.contains("apt-get"))
        .collect();
    assert_eq!(
        apt,
        vec![
            "DEBIAN_FRONTEND=noninteractive apt-get update".to_string(),
            "DEBIAN_FRONTEND=noninteractive apt-get update".into(),
            "DEBIAN_FRONTEND=noninteractive apt-get update".into(),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends open-iscsi nfs-common".into(),
        ]
    );
    assert!(
        rec.calls()
            .iter()
            .filter(|c| c.program == "apt-get")
            .all(|c| c.live)
    );
    assert!(host.log.lines().join("\n").contains("installing Debian packages failed (attempt 2): `DEBIAN_FRONTEND=noninteractive apt-get update` failed with status 100: E: Failed to fetch"));
    assert_eq!(
        detail(&f, "apt-packages"),
        "installed open-iscsi, nfs-common (attempt 3)"
    );
}

#[test]
fn manifests_are_written_only_once_the_node_is_ready() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-master");
    let manifest = "/var/lib/rancher/k3s/server/manifests/picluster-demo.yaml";
    edit_bundle(&f, |b| {
        b.files.push(FileSpec::root(
            manifest,
            0o600,
            Phase::AfterReady,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n".into(),
        ))
    });
    after_stage1(&f);
    let through_ready = stage2::steps()
        .iter()
        .position(|s| s.name == "ready")
        .unwrap()
        + 1;
    assert_eq!(
        stage2::run(&f.host(), Some(through_ready)).unwrap(),
        Outcome::Interrupted
    );
    assert!(!f.path(manifest).exists());
    stage2::run(&f.host(), None).unwrap();
    assert_eq!(
        f.read(manifest),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n"
    );
    assert_eq!(f.meta(manifest), (0o600, 0, 0));
}

#[test]
fn resume_after_power_loss_between_any_two_steps() {
    let reference = Fixture::with_airgap(SAMPLE_CLUSTER, "pi-worker-1");
    let bundle_json = std::fs::read(reference.boot.join(boot_files::BUNDLE)).unwrap();
    after_stage1(&reference);
    stage2::run(&reference.host(), None).unwrap();
    let want: Vec<String> = reference
        .recorder
        .lines()
        .iter()
        .map(|l| l.replace(&reference.root.display().to_string(), "ROOT"))
        .collect();
    let steps = stage2::steps().len();
    for k in 0..steps {
        let f = Fixture::with_airgap(SAMPLE_CLUSTER, "pi-worker-1");
        std::fs::write(f.boot.join(boot_files::BUNDLE), &bundle_json).unwrap();
        std::fs::write(f.boot.join(boot_files::SECRETS), &reference.secrets_json).unwrap();
        after_stage1(&f);
        let first = Arc::new(Recorder::new());
        assert_eq!(
            stage2::run(&f.host_with(first.clone()), Some(k)).unwrap(),
            Outcome::Interrupted
        );
        let second = Arc::new(Recorder::new());
        assert_eq!(
            stage2::run(&f.host_with(second.clone()), None).unwrap(),
            Outcome::Completed
        );
        let cmds: Vec<String> = first
            .lines()
            .into_iter()
            .chain(second.lines())
            .map(|l| l.replace(&f.root.display().to_string(), "ROOT"))
            .collect();
        assert_eq!(cmds, want, "k={k}");
        assert_eq!(f.snapshot(), reference.snapshot(), "k={k}");
        assert!(journal(&f).steps.iter().all(|r| r.attempts == 1), "k={k}");
    }
}

#[test]
fn stage2_before_stage1_says_so() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    let err = format!("{:#}", stage2::run(&f.host(), None).unwrap_err());
    assert!(
        err.contains("/etc/picluster/node.json does not exist: stage 1 has not run"),
        "{err}"
    );
}

#[test]
fn wrong_tokens_and_surviving_etcd_members_are_explained() {
    let f = Fixture::new(SAMPLE_CLUSTER, "pi-worker-1");
    // K3s 1.33 with a plain token: the CA is not pinned, so the first
    // authenticated request fails as "<url>: <status>" (k3s
    // pkg/clientaccess/token.go, get()).
    let log = "level=error msg=\"Failed to retrieve agent configuration: https://192.168.0.120:6443/v1-k3s/config: 401 Unauthorized\"\n";
    let hint = picluster_node::k3s::diagnose(log, &f.bundle).expect("recognised");
    assert!(
        hint.contains("does not accept this node's token") && hint.contains("secrets.toml"),
        "{hint}"
    );
    // A 401 elsewhere (say, a kubectl call) is not a join failure.
    assert!(
        picluster_node::k3s::diagnose("GET /api/v1/pods: 401 Unauthorized\n", &f.bundle).is_none()
    );
    let hint = picluster_node::k3s::diagnose(
        "ETCD join failed: duplicate node name found, please use a unique name for this node\n",
        &f.bundle,
    )
    .unwrap();
    assert!(
        hint.contains("sudo k3s kubectl delete node pi-worker-1")
            && hint.contains("#12908")
            && hint.contains("member remove <ID>"),
        "{hint}"
    );
}

/// Stand-in CA files: the agent copies bytes, the hash is over bytes.
fn stand_in_pki() -> picluster_profiles::pki::ClusterPki {
    picluster_profiles::pki::ClusterPki {
        files: picluster_profiles::pki::file_names()
            .into_iter()
            .map(|n| {
                let label = if n.ends_with(".crt") {
                    "CERTIFICATE"
                } else {
                    "EC PRIVATE KEY"
                };
                (
                    n.clone(),
                    format!("-----BEGIN {label}-----\nstand-in {n}\n-----END {label}-----\n"),
                )
            })
            .collect(),
    }
}

#[test]
fn first_server_has_the_cas_in_server_tls_before_k3s_starts_and_tokens_pin_them() {
    let f = Fixture::with_pki(SAMPLE_CLUSTER, "pi-master", stand_in_pki());
    after_stage1(&f);
    // Stop right after `k3s-config` (the 7th step): K3s has not started yet.
    stage2::run(&f.host(), Some(7)).unwrap();
    assert!(
        !f.recorder.lines().iter().any(|l| l.contains("restart")),
        "{:?}",
        f.recorder.lines()
    );
    let tls = "/var/lib/rancher/k3s/server/tls";
    for name in picluster_profiles::pki::file_names() {
        let path = format!("{tls}/{name}");
        assert_eq!(f.meta(&path), (0o600, 0, 0), "{path}");
    }
    // The token's CA hash is sha256sum of the server CA file K3s will serve.
    let sum = std::process::Command::new("sha256sum")
        .arg(f.root.join(&tls[1..]).join("server-ca.crt"))
        .output()
        .unwrap();
    let hash = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(
        config.contains(&format!(
            "token: \"K10{hash}::server:{}\"\n",
            f.secrets.k3s_token
        )),
        "{config}"
    );
    assert!(
        config.contains(&format!(
            "agent-token: \"K10{hash}::node:{}\"\n",
            f.secrets.k3s_agent_token
        )),
        "{config}"
    );
}

#[test]
fn agents_get_no_ca_file_and_an_agent_token_pinning_the_ca() {
    let pki = stand_in_pki();
    let hash = pki.ca_hash();
    let f = Fixture::with_pki(SAMPLE_CLUSTER, "pi-worker-1", pki);
    after_stage1(&f);
    stage2::run(&f.host(), None).unwrap();
    assert!(!f.root.join("var/lib/rancher/k3s/server/tls").exists());
    assert!(files_containing(&f.root, "PRIVATE KEY").is_empty());
    let config = f.read(node_paths::K3S_CONFIG);
    assert!(
        config.contains(&format!(
            "token: \"K10{hash}::node:{}\"\n",
            f.secrets.k3s_agent_token
        )),
        "{config}"
    );
}
