//! A Raspberry Pi OS Bookworm root and boot partition in a temporary
//! directory, with a bundle and secrets rendered by `picluster_profiles` from
//! the sample cluster file, as `picluster build` would place them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use picluster_node::host::{Host, Recorder, Runner, SimulatedEnvironment, Timing};
use picluster_node::log::Log;
use picluster_node::testing::{self, write};
use picluster_profiles::bundle::{BootAsset, NodeBundle, NodeSecrets, boot_files};
use picluster_profiles::pki::ClusterPki;
use picluster_profiles::render::{RenderInputs, added_kernel_args, render_node};
use picluster_profiles::{Cluster, SAMPLE_CLUSTER, Secrets, cmdline};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// 2025-11-24T10:34:56Z, the pretend image build time.
pub const BUILT_AT: i64 = 1_763_980_496;

/// cmdline.txt as Raspberry Pi OS ships it.
pub const PIOS_CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

/// What stage 1 must leave: Raspberry Pi OS's first boot dropped `quiet` and
/// `init=`, stage 1 drops its own arguments; the memory cgroup stays.
pub const FINAL_CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait cgroup_enable=memory\n";

pub const PASSWORD_HASH: &str = "$6$rounds=5000$saltsalt$Vm3kKz0q6m7x1uS0yRrQmXe3m8dC2wqfN9cH2bR3sT4uV5wX6yZ7aB8cD9eF0gH1iJ2kL3mN4oP5qR6sT7uV8w";

/// The sample with three servers: pi-master (first), pi-worker-1 and pi-worker-2.
pub fn ha_cluster() -> String {
    let mut text = SAMPLE_CLUSTER.to_string();
    for n in ["pi-worker-1", "pi-worker-2"] {
        let ip = if n == "pi-worker-1" { "121" } else { "122" };
        let from = format!("name = \"{n}\"\nip = \"192.168.0.{ip}\"\nrole = \"agent\"");
        let to =
            format!("name = \"{n}\"\nip = \"192.168.0.{ip}\"\nrole = \"server\"\nmedia = \"nvme\"");
        assert!(text.contains(&from), "sample lacks {from}");
        text = text.replace(&from, &to);
    }
    text
}

/// The sample with user `alice` and a password.
pub fn alice_cluster() -> String {
    let from = "user = \"pi\"";
    assert!(SAMPLE_CLUSTER.contains(from));
    SAMPLE_CLUSTER.replace(
        from,
        &format!("user = \"alice\"\npassword_hash = \"{PASSWORD_HASH}\""),
    )
}

pub fn k3s_bytes() -> Vec<u8> {
    (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

pub fn airgap_bytes() -> Vec<u8> {
    (0..64 * 1024u32).map(|i| (i * 13 % 241) as u8).collect()
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

pub struct Fixture {
    _dir: TempDir,
    pub root: PathBuf,
    pub boot: PathBuf,
    pub cluster: Cluster,
    pub secrets: Secrets,
    pub bundle: NodeBundle,
    pub node_secrets: NodeSecrets,
    pub secrets_json: Vec<u8>,
    pub recorder: Arc<Recorder>,
    pub env: Arc<SimulatedEnvironment>,
}

impl Fixture {
    pub fn new(cluster_text: &str, node: &str) -> Fixture {
        Fixture::build(cluster_text, node, false, None)
    }

    pub fn with_airgap(cluster_text: &str, node: &str) -> Fixture {
        Fixture::build(cluster_text, node, true, None)
    }

    /// Rendered with the cluster's CAs in `pki/` (as `picluster build` does).
    pub fn with_pki(cluster_text: &str, node: &str, pki: ClusterPki) -> Fixture {
        Fixture::build(cluster_text, node, false, Some(pki))
    }

    fn build(cluster_text: &str, node: &str, airgap: bool, pki: Option<ClusterPki>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let boot = root.join("boot/firmware");
        let cluster = Cluster::parse(Path::new("cluster.toml"), cluster_text).unwrap();
        let mut secrets = Secrets::generate().unwrap();
        secrets.fill_platform(&cluster.platform).unwrap();
        secrets.pki = pki;
        let k3s = k3s_bytes();
        let air = airgap_bytes();
        let inputs = RenderInputs {
            built_at: BUILT_AT,
            picluster_version: "0.1.0".into(),
            k3s_binary: BootAsset {
                file: boot_files::K3S_BINARY.into(),
                sha256: sha256(&k3s),
                size: k3s.len() as u64,
            },
            k3s_airgap: airgap.then(|| BootAsset {
                file: boot_files::K3S_AIRGAP.into(),
                sha256: sha256(&air),
                size: air.len() as u64,
            }),
        };
        let n = cluster.node(node).expect("node in cluster").clone();
        let (bundle, node_secrets) = render_node(&cluster, &secrets, &n, &inputs).unwrap();

        testing::pios_root(&root);

        // The boot partition as `picluster build` leaves it, after Raspberry Pi
        // OS's own first boot removed `quiet` and `init=`.
        let built = cmdline::append(PIOS_CMDLINE, &added_kernel_args(&cluster));
        let after_pios_firstboot = cmdline::remove(
            &built,
            &[
                "quiet".to_string(),
                "init=/usr/lib/raspberrypi-sys-mods/firstboot".to_string(),
            ],
        );
        write(
            &boot.join(boot_files::CMDLINE),
            after_pios_firstboot.as_bytes(),
            0o755,
        );
        write(&boot.join(boot_files::CONFIG), b"[all]\n", 0o755);
        write(&boot.join(boot_files::SSH), b"", 0o755);
        write(
            &boot.join(boot_files::AGENT),
            b"\x7fELF picluster-node agent stand-in",
            0o755,
        );
        write(&boot.join(boot_files::K3S_BINARY), &k3s, 0o755);
        if airgap {
            write(&boot.join(boot_files::K3S_AIRGAP), &air, 0o755);
        }
        write(
            &boot.join(boot_files::BUNDLE),
            &serde_json::to_vec_pretty(&bundle).unwrap(),
            0o755,
        );
        let secrets_json = serde_json::to_vec_pretty(&node_secrets).unwrap();
        write(&boot.join(boot_files::SECRETS), &secrets_json, 0o755);

        let recorder = Arc::new(Recorder::new());
        Fixture {
            _dir: dir,
            root,
            boot,
            cluster,
            secrets,
            bundle,
            node_secrets,
            secrets_json,
            recorder: recorder.clone(),
            // Probes are noted in the fixture's recorder, in order.
            env: Arc::new(SimulatedEnvironment::starting_at(BUILT_AT + 3600).recording(recorder)),
        }
    }

    /// Mark the clock synchronised, as systemd-timesyncd does.
    pub fn time_synced(&self) {
        write(
            &self.root.join("run/systemd/timesync/synchronized"),
            b"",
            0o644,
        );
    }

    pub fn timing() -> Timing {
        Timing {
            give_up_after: Some(30),
            ..Timing::default()
        }
    }

    /// A host over the fixture with its recorder and simulated environment.
    pub fn host(&self) -> Host {
        self.host_with(self.recorder.clone())
    }

    pub fn host_with(&self, runner: Arc<dyn Runner>) -> Host {
        Host {
            root: self.root.clone(),
            boot: self.boot.clone(),
            runner,
            env: self.env.clone(),
            timing: Fixture::timing(),
            log: Log::memory_with_boot_log(&self.boot.join(boot_files::LOG)),
        }
    }

    /// A node path below the root.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    pub fn read(&self, node_path: &str) -> String {
        std::fs::read_to_string(self.path(node_path)).unwrap_or_else(|e| panic!("{node_path}: {e}"))
    }

    /// (mode, uid, gid) of a node path.
    pub fn meta(&self, node_path: &str) -> (u32, u32, u32) {
        let m =
            std::fs::metadata(self.path(node_path)).unwrap_or_else(|e| panic!("{node_path}: {e}"));
        (m.mode() & 0o7777, m.uid(), m.gid())
    }

    /// Every file, directory and link below the root, with mode, owner and
    /// content, except what legitimately differs between runs (the journal's
    /// timestamps, the boot log).
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out.remove("var/lib/picluster/state.json");
        out.remove("boot/firmware/picluster-node.log");
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let head = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
        if m.file_type().is_symlink() {
            out.insert(
                rel,
                format!("link -> {}", std::fs::read_link(&p).unwrap().display()),
            );
        } else if m.is_dir() {
            out.insert(rel.clone(), format!("dir {head}"));
            walk(root, &p, out);
        } else {
            let content = std::fs::read(&p).unwrap();
            out.insert(rel, format!("file {head} {}", sha256(&content)));
        }
    }
}

/// Whether any file below `dir` contains `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}
