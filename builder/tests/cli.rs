//! The small commands through the real binary: init, secrets, plan, fetch.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::*;

fn secret_values(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" = \""))
        .map(|l| l.split('"').nth(1).unwrap().to_string())
        .collect()
}

/// `init` in a HOME without `~/.ssh/*.pub`: the cluster file keeps the
/// sample key (which plan and build refuse). Returns (cache, cluster file).
fn init_with_sample_key(d: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cache = d.join("cache");
    let home = d.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let dir = d.join("c");
    run(picluster(&cache).env("HOME", &home).arg("init").arg(&dir));
    (cache, dir.join("cluster.toml"))
}

#[test]
fn plan_refuses_the_sample_key_and_says_how_to_add_a_real_one() {
    let d = tempfile::tempdir().unwrap();
    let (cache, cfg) = init_with_sample_key(d.path());
    let err = fails(picluster(&cache).arg("plan").arg("-c").arg(&cfg));
    let text = std::fs::read_to_string(&cfg).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("example@picluster"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("cluster.toml:{line}:"))
            && err.contains("access.ssh_authorized_keys: this is the example key")
            && err.contains("fix: put your own public key here"),
        "{err}"
    );
    // build refuses it before touching the network or the output directory.
    let out = d.path().join("out");
    let err = fails(
        picluster(&cache)
            .arg("build")
            .arg("-c")
            .arg(&cfg)
            .arg("--out")
            .arg(&out),
    );
    assert!(err.contains("this is the example key"), "{err}");
    assert!(entries(&out).is_empty());
}

#[test]
fn secrets_join_token_comes_from_a_file_or_stdin_never_the_command_line() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    init_with_key(&cache, d.path());
    let cfg = d.path().join("cluster.toml");
    let secrets = d.path().join("secrets.toml");
    let token = format!("K10{}::node:agent-s3cret", "e".repeat(64));
    let mut child = picluster(&cache)
        .args(["secrets", "--join-token", "-", "-c"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&secrets).unwrap();
    assert!(
        text.contains(&format!("join_token = \"{token}\"")),
        "{text}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("agent-s3cret"));
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A server token from a file goes to join_server_token; a mangled one is refused.
    let file = d.path().join("token");
    let server = format!("K10{}::server:server-s3cret", "f".repeat(64));
    std::fs::write(&file, format!("{server}\n")).unwrap();
    run(picluster(&cache)
        .arg("secrets")
        .arg("--join-token")
        .arg(&file)
        .arg("-c")
        .arg(&cfg));
    let text = std::fs::read_to_string(&secrets).unwrap();
    assert!(
        text.contains(&format!("join_server_token = \"{server}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("join_token = \"{token}\"")),
        "{text}"
    );
    std::fs::write(&file, "K10abc::server:x").unwrap();
    let err = fails(
        picluster(&cache)
            .arg("secrets")
            .arg("--join-token")
            .arg(&file)
            .arg("-c")
            .arg(&cfg),
    );
    assert!(
        err.contains("CA hash of a K10 token is 64 hexadecimal"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&secrets).unwrap(), text);
}

#[test]
fn init_writes_a_valid_cluster_and_private_secrets_and_never_overwrites() {
    let d = tempfile::tempdir().unwrap();
    let key = ssh_key(d.path());
    std::fs::write(d.path().join("k.pub"), &key).unwrap();
    let cache = d.path().join("cache");
    let out = run(picluster(&cache)
        .arg("init")
        .arg(d.path().join("c"))
        .arg("--ssh-key")
        .arg(d.path().join("k.pub")));
    assert!(out.contains("cluster.toml"), "{out}");
    let cluster = std::fs::read_to_string(d.path().join("c/cluster.toml")).unwrap();
    assert!(
        cluster.contains(&key),
        "the user's key is in the cluster file"
    );
    let secrets = d.path().join("c/secrets.toml");
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(secret_values(&secrets).len() >= 3);
    let ignored = std::fs::read_to_string(d.path().join("c/.gitignore")).unwrap();
    for pattern in ["secrets.toml", "images/"] {
        assert!(ignored.lines().any(|l| l == pattern), "{ignored}");
    }
    let before = std::fs::read(&secrets).unwrap();
    let err = fails(picluster(&cache).arg("init").arg(d.path().join("c")));
    assert!(
        err.contains("already exist") && err.contains("never overwrites"),
        "{err}"
    );
    assert_eq!(std::fs::read(&secrets).unwrap(), before);
}

#[test]
fn secrets_command_creates_missing_file_and_keeps_existing_values() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    init_with_key(&cache, d.path());
    let secrets = d.path().join("secrets.toml");
    let cfg = d.path().join("cluster.toml");
    let before = std::fs::read(&secrets).unwrap();
    let out = run(picluster(&cache).arg("secrets").arg("-c").arg(&cfg));
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(std::fs::read(&secrets).unwrap(), before);

    std::fs::remove_file(&secrets).unwrap();
    let err = fails(picluster(&cache).arg("plan").arg("-c").arg(&cfg));
    assert!(
        err.contains("secrets.toml: the secrets file is missing")
            && err.contains("picluster secrets -c"),
        "{err}"
    );
    run(picluster(&cache).arg("secrets").arg("-c").arg(&cfg));
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );

    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(picluster(&cache).arg("plan").arg("-c").arg(&cfg));
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A file that lost a key: named with its fix, and repaired by `secrets`
    // without touching the other values.
    let text = std::fs::read_to_string(&secrets).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("k3s_agent_token"))
        .collect();
    std::fs::write(&secrets, kept.join("\n")).unwrap();
    let err = fails(picluster(&cache).arg("plan").arg("-c").arg(&cfg));
    assert!(
        err.contains("k3s_agent_token")
            && err.contains("is missing")
            && !err.contains("missing field"),
        "{err}"
    );
    let out = picluster(&cache)
        .arg("secrets")
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("re-flash"), "{said}");
    let repaired = std::fs::read_to_string(&secrets).unwrap();
    for line in kept
        .iter()
        .filter(|l| l.starts_with("k3s_token") || l.starts_with("node_secret"))
    {
        assert!(repaired.contains(line), "kept: {line}");
    }
    assert!(repaired.contains("k3s_agent_token = "), "{repaired}");
    run(picluster(&cache).arg("plan").arg("-c").arg(&cfg));
}

#[test]
fn plan_shows_every_file_and_argument_and_masks_secrets() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    init_with_key(&cache, d.path());
    let cfg = d.path().join("cluster.toml");
    let text = run(picluster(&cache).arg("plan").arg("-c").arg(&cfg));
    for want in [
        "== pi-master (server, initialises the cluster) 192.168.0.120/24",
        "== pi-worker-3 (agent) 192.168.0.123/24",
        "cgroup_enable=memory systemd.run=",
        "kernel=kernel8.img",
        "picluster-secrets.json",
        "/etc/rancher/k3s/config.yaml  <secret>",
        "/etc/NetworkManager/system-connections/picluster-eth0.nmconnection",
        "agent: picluster-node",
        // The teardown scripts install.sh would write, per role.
        "/usr/local/bin/k3s-killall.sh",
        "/usr/local/bin/k3s-uninstall.sh",
        "/usr/local/bin/k3s-agent-uninstall.sh",
    ] {
        assert!(text.contains(want), "plan lacks {want:?}:\n{text}");
    }
    let json = run(picluster(&cache)
        .arg("plan")
        .arg("--json")
        .arg("-c")
        .arg(&cfg));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 4);
    assert!(
        v["nodes"][0]["kernel_args_added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "cgroup_enable=memory")
    );
    // No base is cached: cmdline.txt is the base's line plus ours, so plan
    // must not pretend to know its size or content.
    let cmdline = v["nodes"][0]["boot_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "cmdline.txt")
        .expect("cmdline.txt in plan");
    assert!(
        cmdline["size"].is_null() && cmdline["content"].is_null(),
        "{cmdline}"
    );
    for s in secret_values(&d.path().join("secrets.toml")) {
        assert!(
            !text.contains(&s) && !json.contains(&s),
            "a secret value appears in plan output"
        );
    }
    // The node password is derived from a secret: never shown either.
    assert!(json.contains("\"/etc/rancher/node/password\""));
    let err = fails(
        picluster(&cache)
            .arg("plan")
            .arg("-c")
            .arg(&cfg)
            .args(["--node", "pi-9"]),
    );
    assert!(err.contains("no node named \"pi-9\""), "{err}");
}

#[test]
fn fetch_downloads_verifies_and_reports() {
    let s = support::cluster::setup(&[]);
    let cache = s.cache();
    let mut cmd = s.cmd();
    cmd.arg("fetch").arg("-c").arg(s.config());
    let out = run(&mut cmd);
    let sha = sha256_file(&s.path("www/base.img.xz"));
    assert!(out.contains(&sha) && out.contains("bookworm"), "{out}");
    assert!(out.contains("k3s v1.33.5+k3s1 sha256"), "{out}");
    assert!(
        cache.join("bases").read_dir().unwrap().count() == 2,
        "decompressed once into the cache (the image and its size record)"
    );
    // Again: no second download.
    run(&mut cmd);
    assert_eq!(s.server.requests_for("base.img.xz").len(), 1);
    // A cached base cut short (a full disk, a crash) is made again, not used.
    let raw = cache.join("bases").join(format!("{sha}.img"));
    let len = std::fs::metadata(&raw).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = cmd.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("decompressing it again"),
        "{said}"
    );
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), len);
    assert_eq!(
        s.server.requests_for("base.img.xz").len(),
        1,
        "the blob was reused"
    );
    let bad = fails(
        picluster(&cache)
            .arg("fetch")
            .arg("--base")
            .arg(s.server.url("missing.img.xz"))
            .arg("-c")
            .arg("/nonexistent.toml"),
    );
    // Plain http:// with nothing pinned: refused before anything is fetched.
    assert!(
        bad.contains("refusing") && bad.contains("missing.img.xz") && bad.contains("https://"),
        "{bad}"
    );
    assert!(s.server.requests_for("missing.img.xz.sha256").is_empty());
}

#[test]
fn flash_usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let out = picluster(&d.path().join("cache"))
        .args(["flash", "only-an-image.img"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("give IMAGE and DEVICE") && err.contains("--help"),
        "{err}"
    );
}

#[test]
fn help_documents_the_exit_status() {
    let d = tempfile::tempdir().unwrap();
    let help = run(picluster(&d.path().join("cache")).arg("--help"));
    for code in [
        "0 done",
        "1 failed",
        "2 usage error",
        "130 stopped by Ctrl-C",
    ] {
        assert!(help.contains(code), "{code:?} missing:\n{help}");
    }
    let out = picluster(&d.path().join("cache"))
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_cause_is_said_once() {
    // thiserror messages that embed `{source}` were printed again as the cause.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("cluster.toml")).unwrap();
    let out = picluster(&d.path().join("cache"))
        .arg("plan")
        .arg("-c")
        .arg(d.path().join("cluster.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn a_mistyped_node_fails_at_once_with_a_suggestion_and_no_download() {
    // The base URL points at a port nothing listens on: any attempt to fetch
    // would fail only after its retries (tens of seconds).
    let s = support::cluster::setup(&[]);
    let text = std::fs::read_to_string(s.config()).unwrap();
    let unreachable = text.replace(
        &format!("url = \"{}\"", s.server.url("base.img.xz")),
        "url = \"https://127.0.0.1:9/none.img.xz\"",
    );
    assert_ne!(unreachable, text);
    std::fs::write(s.config(), unreachable).unwrap();
    for cmd in ["build", "flash"] {
        let t = std::time::Instant::now();
        let mut c = s.cmd();
        c.arg(cmd)
            .arg("-c")
            .arg(s.config())
            .args(["--node", "pi-wrker-1"]);
        if cmd == "flash" {
            c.arg("/dev/null");
        }
        let err = fails(&mut c);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(3),
            "{cmd} took {:?}",
            t.elapsed()
        );
        assert!(
            err.contains("no node named \"pi-wrker-1\"; did you mean \"pi-worker-1\"?"),
            "{err}"
        );
    }
    assert!(s.server.requests().is_empty());
}

#[test]
fn a_file_that_is_not_a_disk_image_is_named_as_such_by_inspect_and_flash() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let text = d.path().join("notes.img");
    std::fs::write(&text, "these are notes, not a disk\n".repeat(100)).unwrap();
    let empty = d.path().join("empty.img");
    std::fs::write(&empty, "").unwrap();
    let target = d.path().join("card.img");
    std::fs::write(&target, vec![0u8; 1 << 20]).unwrap();
    for (img, says) in [
        (&text, "has no partition table"),
        (&empty, "is not a disk image: it holds 0 bytes"),
    ] {
        let err = fails(picluster(&cache).arg("inspect").arg(img));
        assert!(err.contains(says), "inspect: {err}");
        assert!(!err.contains("fill whole buffer"), "{err}");
        let err = fails(
            picluster(&cache)
                .args(["flash", "--yes", "--allow-regular-file"])
                .arg(img)
                .arg(&target)
                .stdin(std::process::Stdio::null()),
        );
        assert!(err.contains("is not a disk image"), "flash: {err}");
        assert!(!err.contains("fill whole buffer"), "{err}");
        assert_eq!(err.matches("is not a disk image").count(), 1, "{err}");
    }
    // Nothing was written to the target.
    assert!(std::fs::read(&target).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn ctrl_c_during_a_download_says_what_was_kept_and_the_next_run_resumes() {
    let s = support::cluster::setup(&[]);
    s.server
        .throttle("base.img.xz", std::time::Duration::from_millis(30));
    let partial = s.cache().join("partial");
    let child = s
        .cmd()
        .arg("fetch")
        .arg("-c")
        .arg(s.config())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let has_bytes = || {
        entries(&partial).iter().any(|n| {
            n.ends_with(".part")
                && std::fs::metadata(partial.join(n)).is_ok_and(|m| m.len() > 64 << 10)
        })
    };
    while !has_bytes() {
        assert!(t0.elapsed().as_secs() < 60, "the download did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    run(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("received so far are kept in") && err.contains("resumes"),
        "{err}"
    );
    assert!(!err.contains("nothing was left"), "{err}");
    s.server.throttle("base.img.xz", std::time::Duration::ZERO);
    run(s.cmd().arg("fetch").arg("-c").arg(s.config()));
    let reqs = s.server.requests_for("base.img.xz");
    assert!(
        reqs.last().unwrap().range.is_some(),
        "the second run resumed: {:?}",
        reqs.iter().map(|r| r.range.clone()).collect::<Vec<_>>()
    );
}

/// README's command table against the binary: every `picluster` command it
/// lists answers `--help`, and every option it shows is one that help lists.
#[test]
fn every_command_in_the_readme_has_help_listing_its_options() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for line in readme.lines().filter(|l| l.starts_with("| `picluster ")) {
        let usage = line.split('`').nth(1).unwrap();
        let sub = usage.split_whitespace().nth(1).unwrap();
        let help = run(picluster(&d.path().join("cache")).args([sub, "--help"]));
        for word in usage.split(|c: char| c.is_whitespace() || "[]()|\\".contains(c)) {
            if let Some(flag) = word.strip_prefix("--").filter(|f| !f.is_empty()) {
                assert!(
                    help.contains(&format!("--{flag}")),
                    "README shows `picluster {sub} --{flag}`, its --help does not:\n{help}"
                );
            }
        }
        if let Some(values) = usage.split("--compress ").nth(1) {
            for v in values.split(']').next().unwrap().split("\\|") {
                assert!(help.contains(v), "--compress {v} is not in:\n{help}");
            }
        }
        seen += 1;
    }
    assert!(
        seen >= 9,
        "README's command table was not found ({seen} rows)"
    );
}

#[test]
fn under_json_an_error_is_one_json_object_on_stderr() {
    let d = tempfile::tempdir().unwrap();
    let (cache, cfg) = init_with_sample_key(d.path());
    let out = picluster(&cache)
        .args(["plan", "--json", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let v: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let p = &v["error"]["problems"][0];
    assert!(p["file"].as_str().unwrap().ends_with("cluster.toml"), "{v}");
    assert!(p["line"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(p["field"], "access.ssh_authorized_keys", "{v}");
    assert!(
        p["message"].as_str().unwrap().contains("example key"),
        "{v}"
    );
    assert!(p["fix"].as_str().unwrap().contains("public key"), "{v}");
    // Other errors: a message and its causes, no problems.
    let out = picluster(&cache)
        .args(["inspect", "--json"])
        .arg(d.path().join("missing.img"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing.img"),
        "{v}"
    );
    assert_eq!(v["error"]["problems"], serde_json::json!([]), "{v}");
}

#[test]
fn init_given_a_private_key_says_so_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("id_ed25519");
    run(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    let dir = d.path().join("c");
    let err = fails(
        picluster(&d.path().join("cache"))
            .arg("init")
            .arg(&dir)
            .arg("--ssh-key")
            .arg(&key),
    );
    assert!(
        err.contains("this is a private key") && err.contains(".pub"),
        "{err}"
    );
    assert!(!err.contains("line break"), "{err}");
    let private = std::fs::read_to_string(&key).unwrap();
    let body = private.lines().nth(1).unwrap();
    assert!(!err.contains(body), "the key never reaches the message");
    assert!(!dir.join("cluster.toml").exists());
}
