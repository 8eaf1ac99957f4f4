//! `picluster build` end to end: a fixture base image served over HTTP with its
//! `.sha256`, a K3s mirror on the same server, the real aarch64 agent; outputs
//! checked with sfdisk, fsck.vfat, e2fsck, mtools, cmp and sha256sum.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

use support::cluster::{VERSION, setup};

fn partitions(img: &Path) -> Vec<(u64, u64)> {
    let dump = run(Command::new("sfdisk").arg("-J").arg(img));
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
            )
        })
        .collect()
}

#[test]
fn images_are_bootable_copies_with_only_the_boot_partition_patched() {
    let s = setup(&[]);
    let out = s.path("out");
    run(&mut s.build("out", &[]));
    let names = entries(&out);
    assert_eq!(
        names,
        [
            ".picluster-build.lock",
            "SHA256SUMS",
            "build.json",
            "kubeconfig",
            "pi-master.img",
            "pi-master.img.bmap",
            "pi-worker-1.img",
            "pi-worker-1.img.bmap",
            "pi-worker-2.img",
            "pi-worker-2.img.bmap",
            "pi-worker-3.img",
            "pi-worker-3.img.bmap",
        ]
    );
    // Checksums hold, by sha256sum itself.
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&out));

    let base_table = run(Command::new("sfdisk").arg("-d").arg(&s.base_img));
    let base_cmdline = {
        let (start, len) = partitions(&s.base_img)[0];
        extract(&s.base_img, start, len, &s.path("base-p1"));
        mtype(&s.path("base-p1"), "cmdline.txt")
    };
    for node in ["pi-master", "pi-worker-1"] {
        let img = out.join(format!("{node}.img"));
        // Partition table identical (disk identifier included).
        let table = run(Command::new("sfdisk").arg("-d").arg(&img));
        assert_eq!(
            table.replace(img.to_str().unwrap(), "X"),
            base_table.replace(s.base_img.to_str().unwrap(), "X")
        );
        let parts = partitions(&img);
        let (p1, p2) = (s.path(&format!("{node}-p1")), s.path(&format!("{node}-p2")));
        extract(&img, parts[0].0, parts[0].1, &p1);
        extract(&img, parts[1].0, parts[1].1, &p2);
        run(Command::new("fsck.vfat").arg("-n").arg(&p1));
        run(Command::new("e2fsck").arg("-fn").arg(&p2));
        // The root partition and everything before p1 are byte-identical to the base.
        let base_p2 = s.path("base-p2");
        extract(&s.base_img, parts[1].0, parts[1].1, &base_p2);
        run(Command::new("cmp").arg(&p2).arg(&base_p2));
        run(Command::new("cmp")
            .arg("-n")
            .arg(parts[0].0.to_string())
            .arg(&img)
            .arg(&s.base_img));

        let cmdline = mtype(&p1, "cmdline.txt");
        assert_eq!(cmdline.lines().count(), 1);
        assert!(
            cmdline.starts_with(base_cmdline.trim_end()),
            "original tokens kept in order: {cmdline}"
        );
        let added = &cmdline[base_cmdline.trim_end().len()..];
        assert!(
            added.contains(" cgroup_enable=memory systemd.run="),
            "{added}"
        );
        assert!(
            added.contains("systemd.run=\"/boot/firmware/picluster-node stage1\""),
            "{added}"
        );
        assert!(!added.contains("firstboot"), "{added}");
        let config = mtype(&p1, "config.txt");
        assert!(config.contains("[pi5]\n") && config.contains("kernel=kernel8.img"));
        assert_eq!(
            config.contains("dtparam=pciex1"),
            node == "pi-master",
            "NVMe only for the nvme node"
        );
        let dir = run(Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-b", "-i"])
            .arg(&p1)
            .arg("::/"));
        for f in [
            "ssh",
            "picluster-node",
            "k3s-arm64",
            "picluster-node.json",
            "picluster-secrets.json",
        ] {
            assert!(
                dir.lines()
                    .any(|l| l.trim_end_matches('/').ends_with(&format!("/{f}"))),
                "{f} missing: {dir}"
            );
        }
        assert!(
            !dir.contains("userconf.txt"),
            "no password hash, no userconf.txt"
        );
        let bundle: serde_json::Value =
            serde_json::from_str(&mtype(&p1, "picluster-node.json")).unwrap();
        assert_eq!(bundle["node"]["name"], node);
        let secrets = mtype(&p1, "picluster-secrets.json");
        let config_yaml = serde_json::from_str::<serde_json::Value>(&secrets).unwrap()["files"][0]
            ["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            config_yaml.contains("agent-token:"),
            node == "pi-master",
            "agents carry only the agent token"
        );
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("build.json")).unwrap()).unwrap();
    let base_sha =
        std::fs::read_to_string(s.base_img.with_file_name("base.img.xz.sha256")).unwrap();
    assert_eq!(
        record["inputs"]["base"]["sha256"],
        base_sha.split_whitespace().next().unwrap()
    );
    assert_eq!(record["inputs"]["k3s_version"], VERSION);
    assert_eq!(record["outputs"].as_array().unwrap().len(), 4);
    assert_eq!(
        record["outputs"][1]["sha256"].as_str().unwrap(),
        sha256_file(&out.join("pi-worker-1.img"))
    );
    // The build lock stays for the next build: removing it could let two
    // builds hold "the" lock at once (one on the old file, one on a new one).
    assert!(out.join(".picluster-build.lock").is_file());

    // Images carry the node's secrets: owner only. What describes them is
    // public and must hold no secret (checked with stat and by content).
    let secrets_toml = std::fs::read_to_string(s.path("cluster/secrets.toml")).unwrap();
    let secret_values: Vec<&str> = secrets_toml
        .lines()
        .filter(|l| l.contains(" = "))
        .map(|l| l.split('"').nth(1).unwrap())
        .collect();
    assert!(secret_values.len() >= 3);
    for (file, mode) in [
        ("pi-master.img", "600"),
        ("pi-worker-1.img", "600"),
        ("pi-master.img.bmap", "644"),
        ("build.json", "644"),
        ("SHA256SUMS", "644"),
    ] {
        let shown = run(Command::new("stat").args(["-c", "%a"]).arg(out.join(file)));
        assert_eq!(shown.trim(), mode, "{file}");
        if mode == "644" {
            let text = std::fs::read_to_string(out.join(file)).unwrap();
            for v in &secret_values {
                assert!(!text.contains(v), "{file} holds a secret");
            }
        }
    }

    // inspect shows the node identity and the agent version, never secrets.
    let shown = run(s.cmd().arg("inspect").arg(out.join("pi-worker-1.img")));
    assert!(
        shown.contains("pi-worker-1 (agent)") && shown.contains("picluster-node 0.1.0"),
        "{shown}"
    );
    assert!(
        shown.contains("bookworm") && shown.contains("arm64"),
        "{shown}"
    );
    // Said once and for people: no Rust enum names, no doubled codename, no
    // bare Unix time.
    assert!(shown.contains("partition table: DOS (MBR)"), "{shown}");
    assert!(!shown.contains("(bookworm) (bookworm)"), "{shown}");
    let built = shown.lines().find(|l| l.contains("built by")).unwrap();
    assert!(
        !built.contains("Unix time") && built.ends_with('Z'),
        "{built}"
    );
    for v in &secret_values {
        assert!(!shown.contains(v));
    }
}

/// `config.yaml`'s `token:` value from an image's secrets file.
fn config_token(secrets_json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(secrets_json).unwrap();
    let files = v["files"].as_array().unwrap();
    let yaml = files
        .iter()
        .find(|f| f["path"] == "/etc/rancher/k3s/config.yaml")
        .unwrap()["content"]
        .as_str()
        .unwrap();
    let line = yaml.lines().find(|l| l.starts_with("token: ")).unwrap();
    serde_json::from_str(&line["token: ".len()..]).unwrap()
}

#[test]
fn only_the_first_server_carries_the_cas_and_every_token_pins_them() {
    let s = setup(&[]);
    let out = s.path("out");
    run(&mut s.build("out", &[]));
    // The CA hash as K3s computes it for a one-certificate file: sha256sum
    // of the file (k3s pkg/clientaccess/token.go, hashCA).
    let sum = run(Command::new("sha256sum").arg(s.path("cluster/pki/server-ca.crt")));
    let hash = sum.split_whitespace().next().unwrap().to_string();
    let secrets_toml = std::fs::read_to_string(s.path("cluster/secrets.toml")).unwrap();
    let value = |key: &str| {
        let l = secrets_toml
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap();
        l.split('"').nth(1).unwrap().to_string()
    };
    for node in ["pi-master", "pi-worker-1", "pi-worker-2", "pi-worker-3"] {
        let img = out.join(format!("{node}.img"));
        // The whole image, byte by byte: a PEM private-key header anywhere.
        let found = Command::new("grep")
            .args([
                "-a",
                "-c",
                "-E",
                "-e",
                "-----BEGIN ([A-Z]+ )*PRIVATE KEY-----",
            ])
            .arg(&img)
            .output()
            .unwrap();
        let count: u32 = String::from_utf8_lossy(&found.stdout)
            .trim()
            .parse()
            .unwrap();
        let (start, len) = partitions(&img)[0];
        let p1 = s.path(&format!("{node}-p1"));
        extract(&img, start, len, &p1);
        let secrets = mtype(&p1, "picluster-secrets.json");
        let token = config_token(&secrets);
        if node == "pi-master" {
            assert!(count > 0, "the first server carries the CA keys");
            let v: serde_json::Value = serde_json::from_str(&secrets).unwrap();
            let tls: Vec<(String, String)> = v["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| {
                    f["path"]
                        .as_str()
                        .unwrap()
                        .starts_with("/var/lib/rancher/k3s/server/tls/")
                })
                .map(|f| {
                    (
                        f["path"].as_str().unwrap().to_string(),
                        f["mode"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(tls.len(), 11, "{tls:?}");
            assert!(tls.iter().all(|(_, m)| m == "0600"), "{tls:?}");
            assert!(
                tls.iter()
                    .any(|(p, _)| p == "/var/lib/rancher/k3s/server/tls/etcd/peer-ca.key")
            );
            assert_eq!(token, format!("K10{hash}::server:{}", value("k3s_token")));
        } else {
            assert_eq!(count, 0, "{node}'s image holds a private key");
            assert_eq!(
                token,
                format!("K10{hash}::node:{}", value("k3s_agent_token"))
            );
            assert!(!secrets.contains("server/tls"), "{node}");
        }
    }
    // The admin kubeconfig beside the images, owner only.
    let kc = out.join("kubeconfig");
    let shown = run(Command::new("stat").args(["-c", "%a"]).arg(&kc));
    assert_eq!(shown.trim(), "600");
    assert!(
        std::fs::read_to_string(&kc)
            .unwrap()
            .contains("client-certificate-data: ")
    );
    run(&mut s.build("nok", &["--node", "pi-worker-3", "--no-kubeconfig"]));
    assert!(!s.path("nok/kubeconfig").exists());
    assert!(s.path("nok/pi-worker-3.img").exists());
}

#[test]
fn same_inputs_and_source_date_epoch_give_identical_images() {
    let s = setup(&["--layout", "4mib"]);
    for out in ["a", "b"] {
        run(s
            .build(out, &["--node", "pi-worker-2", "--compress", "xz"])
            .env("SOURCE_DATE_EPOCH", "1750000000"));
    }
    let a = std::fs::read(s.path("a/SHA256SUMS")).unwrap();
    assert_eq!(a, std::fs::read(s.path("b/SHA256SUMS")).unwrap());
    assert_eq!(
        std::fs::read(s.path("a/build.json")).unwrap(),
        std::fs::read(s.path("b/build.json")).unwrap()
    );
    run(Command::new("cmp")
        .arg(s.path("a/pi-worker-2.img.xz"))
        .arg(s.path("b/pi-worker-2.img.xz")));
    run(Command::new("xz")
        .arg("-t")
        .arg(s.path("a/pi-worker-2.img.xz")));
    // The second build reused the cached base: no second download of the image.
    assert_eq!(s.server.requests_for("base.img.xz").len(), 1);
}

#[test]
fn compressed_outputs_decompress_to_the_raw_image() {
    let s = setup(&[]);
    let epoch = [("SOURCE_DATE_EPOCH", "1750000000")];
    run(s.build("raw", &["--node", "pi-master"]).envs(epoch));
    run(s
        .build("gz", &["--node", "pi-master", "--compress", "gz"])
        .envs(epoch));
    run(Command::new("gzip")
        .arg("-t")
        .arg(s.path("gz/pi-master.img.gz")));
    let mode = run(Command::new("stat")
        .args(["-c", "%a"])
        .arg(s.path("gz/pi-master.img.gz")));
    assert_eq!(mode.trim(), "600", "compressed images carry secrets too");
    let raw = sha256_file(&s.path("raw/pi-master.img"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | sha256sum",
            s.path("gz/pi-master.img.gz").display()
        ))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&raw));
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(s.path("gz")));

    // The bmap is named for the artefact and describes the raw image it
    // decompresses to: a compressed build into the raw build's folder leaves
    // each image with its own bmap.
    assert!(s.path("gz/pi-master.img.gz.bmap").is_file());
    assert!(!s.path("gz/pi-master.img.bmap").exists());
    assert_eq!(
        std::fs::read(s.path("gz/pi-master.img.gz.bmap")).unwrap(),
        std::fs::read(s.path("raw/pi-master.img.bmap")).unwrap()
    );
    run(s
        .build("raw", &["--node", "pi-master", "--compress", "gz"])
        .envs(epoch));
    let raw_bmap = std::fs::read(s.path("raw/pi-master.img.bmap")).unwrap();
    assert_eq!(
        raw_bmap,
        std::fs::read(s.path("gz/pi-master.img.gz.bmap")).unwrap()
    );
    run(Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(s.path("raw/pi-master.img.bmap"))
        .arg(s.path("raw/pi-master.img"))
        .arg(s.path("copy.img")));
}

/// Each bad input fails with a message, and leaves no file in the output directory.
#[test]
fn bad_inputs_fail_clearly_and_leave_nothing_behind() {
    let s = setup(&[]);
    let check = |what: &str, cmd: &mut Command, wanted: &[&str]| {
        let err = fails(cmd);
        for w in wanted {
            assert!(err.contains(w), "{what}: message lacks {w:?}:\n{err}");
        }
        let left = entries(&s.path("out"));
        assert!(left.is_empty(), "{what}: left {left:?}");
    };
    let sid = fixture(&["--release", "sid"]);
    check(
        "a release picluster does not know",
        s.build("out", &["--base", sid.to_str().unwrap()])
            .arg("--node")
            .arg("pi-master"),
        &["(sid)", "not Debian bookworm or trixie", "picluster images"],
    );
    let amd64 = fixture(&["--arch", "amd64"]);
    check(
        "amd64 base",
        &mut s.build("out", &["--base", amd64.to_str().unwrap()]),
        &["amd64", "not arm64"],
    );
    check(
        "plain-http base with nothing pinned",
        &mut s.build("out", &["--base", &s.server.url("gone.img.xz")]),
        &["refusing", "gone.img.xz", "plain http://", "https://"],
    );
    check(
        "missing base",
        &mut s.build(
            "out",
            &["--base", s.path("www/gone.img.xz").to_str().unwrap()],
        ),
        &["gone.img.xz"],
    );
    check(
        "unknown node",
        &mut s.build("out", &["--node", "pi-worker-9"]),
        &["no node named \"pi-worker-9\"", "pi-worker-1"],
    );

    // A pinned digest the server's file does not match.
    let text = std::fs::read_to_string(s.config()).unwrap();
    let pin_line = format!("sha256 = \"{}\"", sha256_file(&s.path("www/base.img.xz")));
    assert!(text.contains(&pin_line));
    let pinned = text.replace(&pin_line, &format!("sha256 = \"{}\"", "ab".repeat(32)));
    std::fs::write(s.config(), &pinned).unwrap();
    check(
        "checksum mismatch",
        &mut s.build("out", &[]),
        &["checksum mismatch", &"ab".repeat(32)],
    );
    std::fs::write(s.config(), &text).unwrap();

    // Invalid cluster file.
    std::fs::write(s.config(), text.replace("192.168.0.123", "192.168.0.121")).unwrap();
    check(
        "duplicate ip",
        &mut s.build("out", &[]),
        &[
            "cluster.toml:",
            "nodes[3].ip",
            "already the address of nodes[1]",
        ],
    );
    std::fs::write(s.config(), &text).unwrap();

    // Missing secrets file.
    std::fs::rename(s.path("cluster/secrets.toml"), s.path("secrets.bak")).unwrap();
    check(
        "no secrets",
        &mut s.build("out", &[]),
        &["secrets.toml", "missing", "picluster secrets -c"],
    );
    std::fs::rename(s.path("secrets.bak"), s.path("cluster/secrets.toml")).unwrap();

    // Agent of the wrong architecture.
    check(
        "x86 agent",
        s.build("out", &["--agent", "/bin/true"])
            .env_remove("PICLUSTER_AGENT"),
        &["/bin/true", "not an arm64 program"],
    );

    // A stale cross-build: the same version, other sources.
    let mut agent = std::fs::read(agent_binary()).unwrap();
    let marker = b"picluster-node-version:";
    let at = agent
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    let src = at + agent[at..].windows(5).position(|w| w == b"+src.").unwrap() + 5;
    agent[src..src + 16].copy_from_slice(b"0123456789abcdef");
    std::fs::write(s.path("stale-agent"), &agent).unwrap();
    check(
        "stale agent",
        s.build("out", &["--agent", s.path("stale-agent").to_str().unwrap()])
            .env_remove("PICLUSTER_AGENT"),
        &[
            "stale-agent",
            "+src.0123456789abcdef",
            "stale cross-build",
            "cargo build --release -p picluster-node --target aarch64-unknown-linux-musl",
        ],
    );
}

#[test]
fn ctrl_c_leaves_no_half_written_image() {
    let s = setup(&[]);
    // Warm the cache so the build spends its time writing images.
    run(&mut s.build("warm", &["--node", "pi-master"]));
    let out = s.path("out");
    let child = s
        .build("out", &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        if entries(&out).iter().any(|n| n.ends_with(".partial")) {
            break;
        }
        assert!(t0.elapsed().as_secs() < 60, "no partial file appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("the output folder is as it was"), "{err}");
    let left: Vec<String> = entries(&out)
        .into_iter()
        .filter(|n| n != ".picluster-build.lock")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn airgap_images_are_fetched_verified_and_placed() {
    let s = setup(&[]);
    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(
        s.config(),
        text.replace("# airgap = false", "airgap = true"),
    )
    .unwrap();
    run(&mut s.build("out", &["--node", "pi-worker-3"]));
    let img = s.path("out/pi-worker-3.img");
    let (start, len) = partitions(&img)[0];
    let p1 = s.path("p1");
    extract(&img, start, len, &p1);
    let archive = s
        .path("www/k3s")
        .join(VERSION)
        .join("k3s-airgap-images-arm64.tar.zst");
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&p1)
        .arg("::/k3s-airgap-images-arm64.tar.zst")
        .arg(s.path("air")));
    assert_eq!(sha256_file(&s.path("air")), sha256_file(&archive));
    let bundle: serde_json::Value =
        serde_json::from_str(&mtype(&p1, "picluster-node.json")).unwrap();
    assert_eq!(
        bundle["k3s"]["airgap_images"]["sha256"].as_str().unwrap(),
        sha256_file(&archive)
    );

    // Without the cluster file's pin, images/k3s.toml's pin of the real
    // archive applies: the test mirror's stand-in does not match it.
    let text = std::fs::read_to_string(s.config()).unwrap();
    let unpinned: String = text
        .lines()
        .filter(|l| !l.starts_with("k3s_airgap_sha256"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(s.config(), unpinned).unwrap();
    let err = fails(
        s.build("out2", &["--node", "pi-worker-3"])
            .env("PICLUSTER_CACHE_DIR", s.path("cache2")),
    );
    assert!(
        err.contains("checksum mismatch")
            && err.contains("b0408ae107ce0ddbd47b62242d8e2e97532b1cfeeef1a38cad0cc54dfd289edc"),
        "{err}"
    );
    assert!(!s.path("out2").join("pi-worker-3.img").exists());
}

#[test]
fn a_join_cluster_builds_without_cas_or_kubeconfig_and_says_why() {
    let s = setup(&[]);
    let cfg = s.config();
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[cluster]\n",
        "[cluster]\njoin = \"https://k3s.example.net:6443\"\n",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let hash = "e".repeat(64);
    for (file, token) in [
        ("server.token", format!("K10{hash}::server:srv-secret")),
        ("agent.token", format!("K10{hash}::node:agent-secret")),
    ] {
        std::fs::write(s.path(file), token).unwrap();
        run(s
            .cmd()
            .arg("secrets")
            .arg("-c")
            .arg(&cfg)
            .arg("--join-token")
            .arg(s.path(file)));
    }
    let out = s.build("out", &["--node", "pi-worker-1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no kubeconfig: the nodes join https://k3s.example.net:6443"),
        "{err}"
    );
    assert!(!s.path("out/kubeconfig").exists());
    let (start, len) = partitions(&s.path("out/pi-worker-1.img"))[0];
    let p1 = s.path("p1");
    extract(&s.path("out/pi-worker-1.img"), start, len, &p1);
    let secrets = mtype(&p1, "picluster-secrets.json");
    assert_eq!(
        config_token(&secrets),
        format!("K10{hash}::node:agent-secret"),
        "the joined cluster's own token"
    );
    assert!(!secrets.contains("PRIVATE KEY") && !secrets.contains("server/tls"));
}

#[test]
fn out_defaults_to_images_beside_the_cluster_file() {
    let s = setup(&[]);
    let elsewhere = s.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    run(s
        .cmd()
        .current_dir(&elsewhere)
        .args(["build", "--node", "pi-master", "-c"])
        .arg(s.config()));
    assert!(s.path("cluster/images/pi-master.img").is_file());
    assert!(s.path("cluster/images/kubeconfig").is_file());
    let stray: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
    assert!(stray.is_empty(), "nothing written in the working directory");
}
