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
