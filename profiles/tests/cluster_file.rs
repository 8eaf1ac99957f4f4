//! Every bad input in the cluster-file contract gets one message naming the
//! file, the line and the field.

use std::path::Path;

use picluster_profiles::cluster::BaseSource;
use picluster_profiles::{Cluster, Role, SAMPLE_CLUSTER};

fn parse(text: &str) -> Result<Cluster, String> {
    Cluster::parse(Path::new("cluster.toml"), text).map_err(|e| e.to_string())
}

/// The sample with one substitution applied.
fn sample_with(from: &str, to: &str) -> String {
    assert!(SAMPLE_CLUSTER.contains(from), "sample lacks {from:?}");
    SAMPLE_CLUSTER.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

fn expect_err(text: &str, wanted: &[&str]) -> String {
    let msg = parse(text).expect_err("should be rejected");
    for w in wanted {
        assert!(msg.contains(w), "message lacks {w:?}:\n{msg}");
    }
    msg
}

#[test]
fn sample_is_valid_and_resolves_the_four_node_layout() {
    let c = parse(SAMPLE_CLUSTER).unwrap();
    assert_eq!(c.name, "homelab");
    assert_eq!(c.k3s.version, "v1.33.5+k3s1");
    assert_eq!(c.nodes.len(), 4);
    assert_eq!(c.api_endpoint, "192.168.0.120");
    assert!(c.nodes[0].init && c.nodes[0].role == Role::Server);
    assert!(
        c.nodes[1..]
            .iter()
            .all(|n| !n.init && n.role == Role::Agent)
    );
    assert_eq!(c.nodes[3].ip.to_string(), "192.168.0.123");
    assert!(
        matches!(c.image.source, BaseSource::Catalog(ref i) if i.name == "raspios-bookworm-arm64-lite")
    );
    assert!(c.access.keys_only());
    assert_eq!(c.network.dns.len(), 2);
    assert_eq!(c.sha256.len(), 64);
}

#[test]
fn unknown_key_names_line_and_key() {
    let text = sample_with("prefix = 24", "prefix = 24\nprefx = 25");
    let msg = expect_err(&text, &["network.prefx: unknown field `prefx`", "fix:"]);
    let line = line_of(&text, "prefx");
    assert!(msg.contains(&format!("cluster.toml:{line}:")), "{msg}");
}

#[test]
fn duplicate_node_name() {
    let text = sample_with("name = \"pi-worker-2\"", "name = \"pi-worker-1\"");
    let msg = expect_err(
        &text,
        &[
            "nodes[2].name",
            "\"pi-worker-1\" is already the name of nodes[1]",
        ],
    );
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("\"pi-worker-1\""))
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert!(msg.contains(&format!("cluster.toml:{line}:")), "{msg}");
}

#[test]
fn duplicate_ip() {
    let text = sample_with("192.168.0.123", "192.168.0.121");
    expect_err(
        &text,
        &[
            "nodes[3].ip",
            "192.168.0.121 is already the address of nodes[1]",
        ],
    );
}

#[test]
fn ip_outside_prefix_and_gateway_ip() {
    let text = sample_with("192.168.0.122", "192.168.7.122");
    expect_err(
        &text,
        &[
            "nodes[2].ip",
            "192.168.7.122 is outside the cluster network 192.168.0.0/24",
            "fix:",
        ],
    );
    let text = sample_with("192.168.0.121", "192.168.0.1");
    expect_err(
        &text,
        &["nodes[1].ip", "192.168.0.1 is the gateway's address"],
    );
}

#[test]
fn invalid_hostname() {
    let text = sample_with("name = \"pi-worker-3\"", "name = \"Pi_Worker\"");
    let msg = expect_err(&text, &["nodes[3].name", "RFC 1123"]);
    assert!(
        msg.contains(&format!("cluster.toml:{}:", line_of(&text, "Pi_Worker"))),
        "{msg}"
    );
}

#[test]
fn no_server_and_even_servers() {
    let text = sample_with("role = \"server\"", "role = \"agent\"");
    expect_err(&text, &["no node has role = \"server\""]);
    let text = sample_with(
        "name = \"pi-worker-1\"\nip = \"192.168.0.121\"\nrole = \"agent\"",
        "name = \"pi-worker-1\"\nip = \"192.168.0.121\"\nrole = \"server\"",
    );
    expect_err(&text, &["2 servers", "odd number", "use 1 or 3 servers"]);
}

#[test]
fn malformed_ssh_key() {
    let text = sample_with(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAY6kRfOp9z+7vh4YP9lIZNJ7Ul58UKL/YKalSULXWUA example@picluster",
        "ssh-ed25519 AAAA… me@laptop",
    );
    let msg = expect_err(
        &text,
        &[
            "access.ssh_authorized_keys[0]",
            "base64",
            "cat ~/.ssh/id_ed25519.pub",
        ],
    );
    assert!(
        msg.contains(&format!("cluster.toml:{}:", line_of(&text, "AAAA…"))),
        "{msg}"
    );
}

#[test]
fn several_problems_are_reported_together() {
    let text = sample_with("192.168.0.123", "192.168.0.121").replacen(
        "name = \"pi-worker-2\"",
        "name = \"-bad\"",
        1,
    );
    let msg = expect_err(&text, &["2 problems found", "nodes[2].name", "nodes[3].ip"]);
    assert!(msg.find("nodes[2].name").unwrap() < msg.find("nodes[3].ip").unwrap());
}

#[test]
fn bad_values_elsewhere() {
    expect_err(
        &sample_with("v1.33.5+k3s1", "1.33"),
        &["cluster.k3s_version", "v1.33.5+k3s1"],
    );
    expect_err(
        &sample_with("prefix = 24", "prefix = 33"),
        &["network.prefix"],
    );
    expect_err(
        &sample_with("gateway = \"192.168.0.1\"", "gateway = \"192.168.0.0\""),
        &["network.gateway", "network or broadcast"],
    );
    expect_err(
        &sample_with("role = \"server\"", "role = \"master\""),
        &["nodes[0].role", "\"master\" is not a role"],
    );
    expect_err(
        &sample_with("media = \"nvme\"", "media = \"usb\""),
        &["nodes[0].media"],
    );
    expect_err(
        &sample_with(
            "base = \"raspios-bookworm-arm64-lite\"",
            "base = \"ubuntu\"",
        ),
        &[
            "image.base",
            "not in the image catalogue",
            "raspios-bookworm-arm64-lite",
        ],
    );
    expect_err(
        &sample_with("user = \"pi\"", "user = \"root\""),
        &["access.user", "system account"],
    );
    expect_err(
        &sample_with("# password_hash = \"$6$…\"", "password_hash = \"hunter2\""),
        &["access.password_hash", "openssl passwd -6"],
    );
    expect_err(
        &sample_with(
            "\"picluster.io/workload\" = \"control\"",
            "\"bad key\" = \"control\"",
        ),
        &["nodes[0].labels.bad key"],
    );
    expect_err(
        &sample_with(
            "# extra_kernel_args = []",
            "extra_kernel_args = [\"init=/boot/firstboot.sh\"]",
        ),
        &["image.extra_kernel_args[0]", "firstboot"],
    );
    expect_err(
        &sample_with("components = [\"postgresql\"", "components = [\"trinity\""),
        &[
            "platform.components[0]",
            "\"trinity\" is not a data-platform component",
        ],
    );
}

#[test]
fn syntax_error_names_the_line() {
    let text = sample_with("prefix = 24", "prefix = ");
    let msg = parse(&text).unwrap_err();
    assert!(
        msg.starts_with(&format!("cluster.toml:{}:", line_of(&text, "prefix ="))),
        "{msg}"
    );
}

#[test]
fn url_image_with_pin() {
    let text = sample_with(
        "base = \"raspios-bookworm-arm64-lite\"",
        "url = \"https://mirror.lan/x.img.xz\"\nsha256 = \"E6A69B5A5A8CD4AFC0E9DBDC8404F6FED7C93E0D1796F438E7C780E0EAC2D482\"",
    );
    let c = parse(&text).unwrap();
    match c.image.source {
        BaseSource::Url { url, sha256 } => {
            assert_eq!(url, "https://mirror.lan/x.img.xz");
            assert_eq!(
                sha256.unwrap(),
                "e6a69b5a5a8cd4afc0e9dbdc8404f6fed7c93e0d1796f438e7c780e0eac2d482"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_http_sources_need_pinned_digests() {
    // Over http:// a man in the middle can swap a file and the checksum list
    // or .sha256 beside it alike: only a digest in the cluster file (or in
    // images/) makes such a download safe.
    let text = sample_with(
        "# k3s_mirror = \"https://mirror.lan/k3s\"",
        "k3s_mirror = \"http://mirror.lan/k3s\"",
    )
    .replacen(
        "k3s_version = \"v1.33.5+k3s1\"",
        "k3s_version = \"v1.33.4+k3s1\"",
        1,
    );
    let msg = expect_err(
        &text,
        &[
            "cluster.k3s_mirror",
            "plain http://",
            "v1.33.4+k3s1 has no pinned k3s_sha256",
            "fix: use an https:// mirror, or pin",
        ],
    );
    assert!(
        msg.contains(&format!(
            "cluster.toml:{}:",
            line_of(&text, "k3s_mirror = \"http")
        )),
        "{msg}"
    );
    let pinned = text.replacen(
        "k3s_mirror = \"http://mirror.lan/k3s\"",
        &format!(
            "k3s_mirror = \"http://mirror.lan/k3s\"\nk3s_sha256 = \"{}\"",
            "ab".repeat(32)
        ),
        1,
    );
    assert_eq!(
        parse(&pinned).unwrap().k3s.binary_sha256,
        Some("ab".repeat(32))
    );
    // airgap needs the archive pinned too.
    expect_err(
        &pinned.replacen("# airgap = false", "airgap = true", 1),
        &[
            "cluster.k3s_mirror",
            "k3s_airgap_sha256 (the air-gap archive)",
        ],
    );
    // The version images/k3s.toml pins needs nothing more for the binary.
    let c = parse(&sample_with(
        "# k3s_mirror = \"https://mirror.lan/k3s\"",
        "k3s_mirror = \"http://mirror.lan/k3s\"",
    ))
    .unwrap();
    assert_eq!(
        c.k3s.binary_sha256.as_deref(),
        Some("21d032b2ca1bb2696c352eb0ff0c2d20bb06214b8c0a71b03494f958039ff06b")
    );
    expect_err(
        &sample_with(
            "k3s_version = \"v1.33.5+k3s1\"",
            "k3s_version = \"v1.33.5+k3s1\"\nk3s_sha256 = \"xyz\"",
        ),
        &["cluster.k3s_sha256"],
    );

    let base = sample_with(
        "base = \"raspios-bookworm-arm64-lite\"",
        "url = \"http://mirror.lan/pios.img.xz\"",
    );
    let msg = expect_err(
        &base,
        &[
            "image.url",
            "plain http://",
            "no `sha256` pins it",
            "fix: use an https:// URL",
        ],
    );
    assert!(
        msg.contains(&format!("cluster.toml:{}:", line_of(&base, "url = \"http"))),
        "{msg}"
    );
    let ok = base.replacen(
        "url = \"http://mirror.lan/pios.img.xz\"",
        &format!(
            "url = \"http://mirror.lan/pios.img.xz\"\nsha256 = \"{}\"",
            "cd".repeat(32)
        ),
        1,
    );
    assert!(parse(&ok).is_ok());
    assert!(
        parse(&sample_with(
            "base = \"raspios-bookworm-arm64-lite\"",
            "url = \"https://mirror.lan/pios.img.xz\"",
        ))
        .is_ok()
    );
}

/// The message names the file, the line of `needle`, the field and a fix.
fn expect_at(text: &str, needle: &str, field: &str, wanted: &[&str]) -> String {
    let msg = expect_err(text, wanted);
    let line = line_of(text, needle);
    assert!(
        msg.contains(&format!("cluster.toml:{line}:")),
        "no line {line}:\n{msg}"
    );
    assert!(msg.contains(&format!("{field}: ")), "no {field}:\n{msg}");
    assert!(msg.contains("\n  fix: "), "no fix:\n{msg}");
    msg
}

#[test]
fn kubelet_refused_labels_are_errors_with_the_kubectl_fix() {
    // kubernetes v1.33 cmd/kubelet/app/options/options.go ValidateKubeletFlags:
    // the kubelet does not start with such a label on --node-labels.
    for key in [
        "node-role.kubernetes.io/worker",
        "node-role.kubernetes.io/storage",
        "app.kubernetes.io/name",
        "example.k8s.io/x",
    ] {
        let text = sample_with(
            "\"picluster.io/workload\" = \"control\"",
            &format!("\"{key}\" = \"true\""),
        );
        let msg = expect_at(
            &text,
            key,
            &format!("nodes[0].labels.{key}"),
            &[
                "--node-labels",
                &format!("kubectl label node pi-master {key}=true"),
            ],
        );
        assert_eq!(msg.matches("fix:").count(), 1, "{msg}");
    }
    for key in [
        "node.kubernetes.io/pool",
        "topology.kubernetes.io/zone",
        "picluster.io/workload",
    ] {
        let text = sample_with(
            "\"picluster.io/workload\" = \"control\"",
            &format!("\"{key}\" = \"a\""),
        );
        parse(&text).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

#[test]
fn api_endpoint_must_reach_a_server() {
    let agent = sample_with(
        "# api_endpoint = \"192.168.0.120\"",
        "api_endpoint = \"192.168.0.121\"",
    );
    expect_at(
        &agent,
        "api_endpoint",
        "cluster.api_endpoint",
        &["192.168.0.121 is the address of agent pi-worker-1"],
    );
    let nobody = sample_with(
        "# api_endpoint = \"192.168.0.120\"",
        "api_endpoint = \"192.168.0.99\"",
    );
    expect_at(
        &nobody,
        "api_endpoint",
        "cluster.api_endpoint",
        &["not the address of any server"],
    );
    let numeric = sample_with(
        "# api_endpoint = \"192.168.0.120\"",
        "api_endpoint = \"999.1.1.1\"",
    );
    expect_at(
        &numeric,
        "api_endpoint",
        "cluster.api_endpoint",
        &["\"999.1.1.1\" is not a valid IPv4 address"],
    );
    let dns = sample_with(
        "# api_endpoint = \"192.168.0.120\"",
        "api_endpoint = \"k3s.lan\"",
    );
    assert_eq!(parse(&dns).unwrap().api_endpoint, "k3s.lan");
}

#[test]
fn system_accounts_are_refused_as_the_admin_user() {
    // Debian base-passwd 3.6 passwd.master/group.master, plus package accounts.
    for user in [
        "www-data",
        "proxy",
        "root",
        "systemd-timesync",
        "sshd",
        "gpio",
    ] {
        let text = sample_with("user = \"pi\"", &format!("user = \"{user}\""));
        expect_at(
            &text,
            &format!("user = \"{user}\""),
            "access.user",
            &["system account or group"],
        );
    }
    // adduser's NAME_REGEX wants a leading letter, which also keeps out `_apt`.
    let text = sample_with("user = \"pi\"", "user = \"_apt\"");
    expect_at(
        &text,
        "user = \"_apt\"",
        "access.user",
        &["not a valid user name"],
    );
}

#[test]
fn kernel_args_stage1_depends_on_are_refused() {
    for (arg, why) in [
        ("\\\"", "holds a '\"'"),
        ("systemd.unit=rescue.target", "sets systemd.unit"),
        ("systemd.run=/bin/sh", "sets systemd.run"),
        ("init=/bin/sh", "sets init"),
        ("root=/dev/sda2", "sets root"),
        ("console=tty1", "already on Raspberry Pi OS's command line"),
    ] {
        let text = sample_with(
            "# extra_kernel_args = []",
            &format!("extra_kernel_args = [\"{arg}\"]"),
        );
        expect_at(
            &text,
            "extra_kernel_args =",
            "image.extra_kernel_args[0]",
            &[why],
        );
    }
    let ok = sample_with(
        "# extra_kernel_args = []",
        "extra_kernel_args = [\"usbcore.autosuspend=-1\", \"console=ttyAMA10,115200\"]",
    );
    parse(&ok).unwrap();
}

#[test]
fn malformed_crypt_hashes_are_refused() {
    for hash in ["$6$$", "$6$abc$!!!!", "$y$j9T$$", "$5$salt$short"] {
        let text = sample_with(
            "# password_hash = \"$6$…\"",
            &format!("password_hash = \"{hash}\""),
        );
        expect_at(
            &text,
            "password_hash =",
            "access.password_hash",
            &["malformed crypt hash", "openssl passwd -6"],
        );
    }
}

#[test]
fn the_sample_key_parses_but_plan_and_build_refuse_it() {
    let c = parse(SAMPLE_CLUSTER).unwrap();
    let msg = c.refuse_sample_key().unwrap_err().to_string();
    let line = line_of(SAMPLE_CLUSTER, "example@picluster");
    assert!(
        msg.starts_with(&format!("cluster.toml:{line}:"))
            && msg.contains("access.ssh_authorized_keys: this is the example key")
            && msg.contains("fix: put your own public key here"),
        "{msg}"
    );
    let own = sample_with(
        picluster_profiles::SAMPLE_SSH_KEY,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAY6kRfOp9z+7vh4YP9lIZNJ7Ul58UKL/YKalSULXWUA me@laptop",
    );
    parse(&own).unwrap().refuse_sample_key().unwrap();
}

/// The sample turned into agents joining a control plane described elsewhere.
fn join_cluster() -> String {
    sample_with(
        "# api_endpoint = \"192.168.0.120\"",
        "join = \"https://k3s.lan:6443\"",
    )
    .replacen("role = \"server\"", "role = \"agent\"", 1)
}

#[test]
fn join_allows_agents_only_files() {
    let c = parse(&join_cluster()).unwrap();
    assert_eq!(c.join.as_deref(), Some("https://k3s.lan:6443"));
    assert_eq!(c.api_endpoint, "k3s.lan");
    assert!(c.nodes.iter().all(|n| n.role == Role::Agent && !n.init));
    assert_eq!(
        c.registration_urls("pi-worker-1"),
        vec!["https://k3s.lan:6443".to_string()]
    );
    let bad = join_cluster().replace("https://k3s.lan:6443", "k3s.lan");
    expect_at(
        &bad,
        "join =",
        "cluster.join",
        &["not an https://host:port URL"],
    );
}

#[test]
fn registration_tries_every_server_in_order() {
    let text = SAMPLE_CLUSTER
        .replacen(
            "name = \"pi-worker-1\"\nip = \"192.168.0.121\"\nrole = \"agent\"",
            "name = \"pi-worker-1\"\nip = \"192.168.0.121\"\nrole = \"server\"",
            1,
        )
        .replacen(
            "name = \"pi-worker-2\"\nip = \"192.168.0.122\"\nrole = \"agent\"",
            "name = \"pi-worker-2\"\nip = \"192.168.0.122\"\nrole = \"server\"",
            1,
        );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.registration_urls("pi-worker-3"),
        [
            "https://192.168.0.120:6443",
            "https://192.168.0.121:6443",
            "https://192.168.0.122:6443"
        ]
    );
    assert_eq!(
        c.registration_urls("pi-worker-1"),
        ["https://192.168.0.120:6443", "https://192.168.0.122:6443"]
    );
}

fn render_inputs() -> picluster_profiles::render::RenderInputs {
    picluster_profiles::render::RenderInputs {
        built_at: 0,
        picluster_version: "0".into(),
        k3s_binary: picluster_profiles::bundle::BootAsset {
            file: "k3s-arm64".into(),
            sha256: "0".repeat(64),
            size: 1,
        },
        k3s_airgap: None,
    }
}

fn config_yaml(s: &picluster_profiles::NodeSecrets) -> String {
    s.files
        .iter()
        .find(|f| f.path == "/etc/rancher/k3s/config.yaml")
        .expect("config.yaml rendered")
        .content
        .clone()
}

#[test]
fn a_join_cluster_renders_agents_pointing_at_the_join_url_with_the_join_token() {
    use picluster_profiles::render::render_node;
    let c = parse(&join_cluster()).unwrap();
    let mut secrets = picluster_profiles::Secrets::generate().unwrap();
    secrets.fill_platform(&c.platform).unwrap();
    // Without the join token nothing renders, and the message says how to add it.
    let err = render_node(&c, &secrets, &c.nodes[0], &render_inputs())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("./secrets.toml: join_token: pi-master (agent) joins the cluster at https://k3s.lan:6443")
            && err.contains("fix: save the existing cluster's agent token")
            && err.contains("--join-token FILE"),
        "{err}"
    );
    let token = format!("K10{}::node:0123456789abcdef", "c".repeat(64));
    assert_eq!(secrets.set_join_token(&token), Ok("join_token"));
    for node in &c.nodes {
        let (bundle, s) = render_node(&c, &secrets, node, &render_inputs()).unwrap();
        let y = config_yaml(&s);
        assert!(
            y.contains(&format!("token: \"{token}\"\n")),
            "{}: {y}",
            node.name
        );
        assert!(y.contains("server: \"https://k3s.lan:6443\"\n"), "{y}");
        assert!(
            !y.contains("cluster-init") && !y.contains("agent-token"),
            "{y}"
        );
        assert!(!y.contains(&secrets.k3s_token) && !y.contains(&secrets.k3s_agent_token));
        assert_eq!(bundle.node.server_url, "https://k3s.lan:6443");
        assert_eq!(bundle.node.registration_urls, ["https://k3s.lan:6443"]);
    }
}

#[test]
fn servers_join_an_existing_cluster_only_with_its_server_token() {
    use picluster_profiles::render::render_node;
    let text = sample_with(
        "# api_endpoint = \"192.168.0.120\"",
        "join = \"https://10.0.0.5:6443\"",
    );
    let c = parse(&text).unwrap();
    assert!(c.nodes.iter().all(|n| !n.init));
    let mut secrets = picluster_profiles::Secrets::generate().unwrap();
    secrets.fill_platform(&c.platform).unwrap();
    secrets.set_join_token("agent-plain-token").unwrap();
    let err = render_node(&c, &secrets, &c.nodes[0], &render_inputs())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("join_server_token: pi-master (server) joins")
            && err.contains("/var/lib/rancher/k3s/server/token"),
        "{err}"
    );
    let server = format!("K10{}::server:s3cret", "d".repeat(64));
    secrets.set_join_token(&server).unwrap();
    let (_, s) = render_node(&c, &secrets, &c.nodes[0], &render_inputs()).unwrap();
    let y = config_yaml(&s);
    assert!(
        y.contains(&format!(
            "token: \"{server}\"\nserver: \"https://10.0.0.5:6443\"\n"
        )),
        "{y}"
    );
    let (_, s) = render_node(&c, &secrets, &c.nodes[1], &render_inputs()).unwrap();
    let y = config_yaml(&s);
    assert!(
        y.contains("token: \"agent-plain-token\"\n") && !y.contains("s3cret"),
        "{y}"
    );
}

#[test]
fn a_name_the_base_image_uses_below_uid_1000_is_refused() {
    let text = sample_with("user = \"pi\"", "user = \"alice\"");
    let c = parse(&text).unwrap();
    // As the builder reads them from the image's /etc/passwd and /etc/group.
    let system = [("root".to_string(), 0), ("alice".to_string(), 998)];
    let msg = c
        .refuse_base_account(&system, "Debian GNU/Linux 12 (bookworm)")
        .unwrap_err()
        .to_string();
    let line = line_of(&text, "user = \"alice\"");
    assert!(
        msg.starts_with(&format!("cluster.toml:{line}:"))
            && msg.contains("access.user: \"alice\" is a system account or group (id 998)")
            && msg.contains("fix: choose a personal administrator name"),
        "{msg}"
    );
    c.refuse_base_account(&system[..1], "x").unwrap();
}

#[test]
fn teardown_scripts_are_rendered_per_role_and_pass_bash_n_and_shellcheck() {
    use picluster_profiles::render::render_node;
    let c = parse(SAMPLE_CLUSTER).unwrap();
    let mut secrets = picluster_profiles::Secrets::generate().unwrap();
    secrets.fill_platform(&c.platform).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (node, uninstall) in [
        ("pi-master", "/usr/local/bin/k3s-uninstall.sh"),
        ("pi-worker-1", "/usr/local/bin/k3s-agent-uninstall.sh"),
    ] {
        let n = c.node(node).unwrap();
        let (bundle, _) = render_node(&c, &secrets, n, &render_inputs()).unwrap();
        for path in ["/usr/local/bin/k3s-killall.sh", uninstall] {
            let f = bundle
                .files
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("{node}: no {path}"));
            assert_eq!(f.mode.0, 0o755);
            assert_eq!(f.phase, picluster_profiles::Phase::BeforeK3s);
            assert!(!f.content.contains("{{"), "{path}: placeholder left");
            let file = dir
                .path()
                .join(format!("{node}-{}", path.rsplit('/').next().unwrap()));
            std::fs::write(&file, &f.content).unwrap();
            let out = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "bash -n {path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            match std::process::Command::new("shellcheck")
                .args(["-s", "sh"])
                .arg(&file)
                .output()
            {
                Ok(out) => assert!(
                    out.status.success(),
                    "shellcheck {path}:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                ),
                Err(e) => {
                    panic!("shellcheck is needed for this test (apt-get install shellcheck): {e}")
                }
            }
        }
        let service = if node == "pi-master" {
            "k3s"
        } else {
            "k3s-agent"
        };
        let un = &bundle
            .files
            .iter()
            .find(|f| f.path == uninstall)
            .unwrap()
            .content;
        assert!(
            un.contains(&format!("systemctl disable {service}.service\n")),
            "{un}"
        );
        assert!(un.contains("/usr/local/bin/k3s-killall.sh\n"));
    }
}

fn stand_in_pki() -> picluster_profiles::pki::ClusterPki {
    picluster_profiles::pki::ClusterPki {
        files: picluster_profiles::pki::file_names()
            .into_iter()
            .map(|n| (n.clone(), format!("stand-in {n}\n")))
            .collect(),
    }
}

#[test]
fn with_the_cluster_cas_every_token_pins_them_and_only_the_first_server_carries_them() {
    use picluster_profiles::render::render_node;
    // Three servers: the other two join, and get the CAs from the cluster.
    let text = SAMPLE_CLUSTER.replacen("role = \"agent\"", "role = \"server\"", 2);
    let c = parse(&text).unwrap();
    let mut secrets = picluster_profiles::Secrets::generate().unwrap();
    secrets.fill_platform(&c.platform).unwrap();
    secrets.pki = Some(stand_in_pki());
    let hash = secrets.pki.as_ref().unwrap().ca_hash();
    for node in &c.nodes {
        let (_, s) = render_node(&c, &secrets, node, &render_inputs()).unwrap();
        let y = config_yaml(&s);
        let tls: Vec<&str> = s
            .files
            .iter()
            .filter(|f| f.path.starts_with("/var/lib/rancher/k3s/server/tls/"))
            .map(|f| f.path.as_str())
            .collect();
        let want = match node.role {
            picluster_profiles::Role::Server => {
                format!("token: \"K10{hash}::server:{}\"\n", secrets.k3s_token)
            }
            picluster_profiles::Role::Agent => {
                format!("token: \"K10{hash}::node:{}\"\n", secrets.k3s_agent_token)
            }
        };
        assert!(y.contains(&want), "{}: {y}", node.name);
        if node.role == picluster_profiles::Role::Server {
            assert!(
                y.contains(&format!(
                    "agent-token: \"K10{hash}::node:{}\"\n",
                    secrets.k3s_agent_token
                )),
                "{y}"
            );
        }
        assert_eq!(tls.len(), if node.init { 11 } else { 0 }, "{}", node.name);
    }
}

#[test]
fn a_join_cluster_never_carries_cas_or_pins_its_own_hash() {
    use picluster_profiles::render::render_node;
    let c = parse(&join_cluster()).unwrap();
    let mut secrets = picluster_profiles::Secrets::generate().unwrap();
    secrets.fill_platform(&c.platform).unwrap();
    // A pki/ left over from before `join` was set plays no part.
    secrets.pki = Some(stand_in_pki());
    secrets.set_join_token("plain-join-token").unwrap();
    for node in &c.nodes {
        let (_, s) = render_node(&c, &secrets, node, &render_inputs()).unwrap();
        assert!(config_yaml(&s).contains("token: \"plain-join-token\"\n"));
        assert!(
            s.files
                .iter()
                .all(|f| !f.path.contains("/server/tls/") && !f.content.contains("stand-in")),
            "{}",
            node.name
        );
    }
}
