//! Syntax checks for the values a cluster file carries. Each returns a sentence
//! saying what is wrong, ready to be wrapped in a [`crate::error::Problem`].

use base64::Engine;

/// RFC 1123 host name label, lower case (Kubernetes node names must be lower case).
pub fn hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "\"{name}\" must be 1 to 63 characters long (RFC 1123 host name)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "\"{name}\" contains {c:?}; a host name may only hold lower-case letters, digits and '-' (RFC 1123)"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "\"{name}\" must start and end with a letter or digit (RFC 1123)"
        ));
    }
    Ok(())
}

/// Accounts and groups a Raspberry Pi OS Bookworm image already has, or that
/// Debian packages create: Debian base-passwd 3.6 `passwd.master` and
/// `group.master` (the static uid/gid 0-99 range), the names Debian packages on
/// Pi OS Lite add in adduser's system range (100-999, `/etc/adduser.conf`
/// FIRST_SYSTEM_UID/LAST_SYSTEM_UID), and the groups Raspberry Pi OS adds for its
/// hardware. Taking one over would hand the administrator's keys and sudo to a
/// service account (nologin shell, home such as /bin).
pub const SYSTEM_NAMES: &[&str] = &[
    // base-passwd passwd.master
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    // base-passwd group.master
    "adm",
    "tty",
    "disk",
    "kmem",
    "dialout",
    "fax",
    "voice",
    "cdrom",
    "floppy",
    "tape",
    "sudo",
    "audio",
    "dip",
    "operator",
    "src",
    "shadow",
    "utmp",
    "video",
    "sasl",
    "plugdev",
    "staff",
    "users",
    "nogroup",
    // created by packages of Raspberry Pi OS Lite (adduser's system range)
    "messagebus",
    "sshd",
    "avahi",
    "polkitd",
    "systemd-journal",
    "input",
    "render",
    "sgx",
    "kvm",
    "netdev",
    "lpadmin",
    "ssl-cert",
    "crontab",
    "spi",
    "i2c",
    "gpio",
    "bluetooth",
    "rdma",
    "dnsmasq",
    "tss",
    "ntp",
    "rtkit",
    "pulse",
    "pipewire",
    "lightdm",
    "colord",
    "saned",
    "statd",
    "tcpdump",
    "uuidd",
    "rpc",
];

/// A Linux account name for the administrator: what adduser's default
/// NAME_REGEX accepts (Debian adduser, `/etc/adduser.conf`), and none of the
/// system accounts and groups above (`systemd-*` and `_*` are system names by
/// Debian convention, e.g. `_apt`).
pub fn username(name: &str) -> Result<(), String> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_first || !ok_rest || name.len() > 32 {
        return Err(format!(
            "\"{name}\" is not a valid user name: start with a lower-case letter, then up to 31 lower-case letters, digits, '_' or '-'"
        ));
    }
    if SYSTEM_NAMES.contains(&name) || name.starts_with("systemd-") {
        return Err(format!(
            "\"{name}\" is a Debian system account or group on Raspberry Pi OS"
        ));
    }
    Ok(())
}

const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// An OpenSSH public key line: `<type> <base64 blob> [comment]`, where the blob
/// decodes and names the same type.
pub fn ssh_public_key(line: &str) -> Result<(), String> {
    // `-----BEGIN OPENSSH PRIVATE KEY-----` (and the PEM forms): the wrong
    // half of the pair, and one that must never go into a cluster file.
    if line.contains("PRIVATE KEY-----") {
        return Err(
            "this is a private key, which must never leave your machine; give its public half, the .pub file (e.g. ~/.ssh/id_ed25519.pub)"
                .to_string(),
        );
    }
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(
            "not an OpenSSH public key; expected \"<type> <base64> [comment]\" as in ~/.ssh/id_ed25519.pub"
                .to_string(),
        );
    };
    if line.contains('\n') {
        return Err("holds a line break; give one key per list entry".to_string());
    }
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!(
            "unknown key type \"{kind}\"; expected one of {}",
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("the key data is not valid base64 ({e}); copy the whole .pub line"))?;
    let embedded = bytes
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| bytes.get(4..4 + n));
    if embedded != Some(kind.as_bytes()) {
        return Err(format!(
            "the key data does not hold a {kind} key (truncated or mangled); copy the whole .pub line"
        ));
    }
    Ok(())
}

const CRYPT_ALPHABET: &str = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn crypt_chars(s: &str) -> bool {
    s.chars().all(|c| CRYPT_ALPHABET.contains(c))
}

/// A crypt(3) hash Raspberry Pi OS's `userconf.txt` and `/etc/shadow` accept,
/// checked by structure (libxcrypt crypt(5)): `$6$`/`$5$` (SHA-crypt, optional
/// `rounds=N$`, salt of 1-16 characters, 86/43-character hash), `$y$`/`$gy$`
/// (yescrypt: parameters, salt, 43-character hash) and `$2b$`/`$2y$` (bcrypt:
/// two-digit cost, 53 characters of salt and hash).
pub fn password_hash(hash: &str) -> Result<(), String> {
    let parts: Vec<&str> = hash.split('$').collect();
    let bad = |what: &str| Err(format!("malformed crypt hash: {what}"));
    if hash.chars().any(|c| c == ':' || c.is_whitespace()) {
        return bad("it holds ':' or white space");
    }
    match parts.as_slice() {
        ["", id @ ("6" | "5"), rest @ ..] => {
            let want = if *id == "6" { 86 } else { 43 };
            let rest = match rest {
                [r, more @ ..] if r.starts_with("rounds=") => {
                    let n = &r["rounds=".len()..];
                    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
                        return bad("rounds= needs a number");
                    }
                    more
                }
                _ => rest,
            };
            let [salt, digest] = rest else {
                return bad(&format!("expected ${id}$[rounds=N$]salt$hash"));
            };
            if salt.is_empty() || salt.len() > 16 {
                return bad("the salt must be 1 to 16 characters");
            }
            if digest.len() != want || !crypt_chars(digest) {
                return bad(&format!(
                    "the hash part must be {want} characters of [./0-9A-Za-z]"
                ));
            }
            Ok(())
        }
        ["", "y" | "gy", params, salt, digest] => {
            if params.is_empty() || !crypt_chars(params) {
                return bad("yescrypt parameters are missing");
            }
            if salt.is_empty() || !crypt_chars(salt) {
                return bad("the salt is empty or holds characters outside [./0-9A-Za-z]");
            }
            if digest.len() != 43 || !crypt_chars(digest) {
                return bad("the hash part must be 43 characters of [./0-9A-Za-z]");
            }
            Ok(())
        }
        ["", "2b" | "2y" | "2a", cost, rest] => {
            let cost_ok =
                cost.len() == 2 && cost.parse::<u8>().is_ok_and(|c| (4..=31).contains(&c));
            if !cost_ok {
                return bad("the bcrypt cost must be two digits, 04 to 31");
            }
            if rest.len() != 53 || !crypt_chars(rest) {
                return bad("bcrypt needs 53 characters of salt and hash from [./0-9A-Za-z]");
            }
            Ok(())
        }
        _ => Err("not a supported crypt hash (expected $6$, $5$, $y$ or $2b$ …)".to_string()),
    }
}

/// A K3s release tag such as `v1.33.5+k3s1` (release candidates allowed).
pub fn k3s_version(v: &str) -> Result<(), String> {
    let err = || {
        format!(
            "\"{v}\" is not a K3s release tag; expected the form v1.33.5+k3s1 (see github.com/k3s-io/k3s/releases)"
        )
    };
    let rest = v.strip_prefix('v').ok_or_else(err)?;
    let (semver, build) = rest.split_once('+').ok_or_else(err)?;
    let core = semver.split_once('-').map_or(semver, |(c, _)| c);
    let nums: Vec<&str> = core.split('.').collect();
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if nums.len() != 3 || !nums.iter().all(|n| numeric(n)) {
        return Err(err());
    }
    match build.strip_prefix("k3s") {
        Some(n) if numeric(n) => Ok(()),
        _ => Err(err()),
    }
}

fn label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| hostname(l).is_ok())
}

/// A Kubernetes label or taint key: `[prefix/]name`.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !dns_subdomain(p)) || !label_name(name) {
        return Err(format!(
            "\"{key}\" is not a valid Kubernetes label key: [dns-prefix/]name, name up to 63 of [A-Za-z0-9-_.] starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// Label keys the kubelet accepts on `--node-labels` although they are in the
/// `kubernetes.io` namespace: kubernetes v1.33 `pkg/kubelet/apis/well_known_labels.go`
/// (`kubeletLabels`), as printed by the kubelet's refusal.
const KUBELET_LABELS: &[&str] = &[
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Namespaces (and their subdomains) the kubelet lets a node set on itself
/// (`kubeletLabelNamespaces` in the same file).
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn in_domain(namespace: &str, domain: &str) -> bool {
    namespace == domain || namespace.ends_with(&format!(".{domain}"))
}

/// A label K3s passes to the kubelet as `--node-labels` (its `node-label`
/// option). The kubelet refuses to start on any key in the `kubernetes.io` or
/// `k8s.io` namespaces that is not in its allowed set (kubernetes v1.33
/// `cmd/kubelet/app/options/options.go`, `ValidateKubeletFlags`), so such a node
/// would never join. K3s v1.33.5+k3s1 embeds kubernetes v1.33.5.
pub fn node_label_key(key: &str) -> Result<(), String> {
    label_key(key)?;
    let Some((namespace, _)) = key.split_once('/') else {
        return Ok(());
    };
    let restricted = in_domain(namespace, "kubernetes.io") || in_domain(namespace, "k8s.io");
    let allowed = KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|d| in_domain(namespace, d));
    if restricted && !allowed {
        return Err(format!(
            "\"{key}\" is in the kubernetes.io/k8s.io namespace, which the kubelet refuses on --node-labels \
             (only the {} prefixes and {} are allowed): the node would never start",
            KUBELET_LABEL_NAMESPACES.join(" and "),
            KUBELET_LABELS.join(", ")
        ));
    }
    Ok(())
}

/// A Kubernetes label value (may be empty).
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "\"{value}\" is not a valid Kubernetes label value: up to 63 of [A-Za-z0-9-_.] starting and ending alphanumeric"
        ))
    }
}

/// A K3s `node-taint`: `key[=value]:Effect`.
pub fn taint(t: &str) -> Result<(), String> {
    let Some((kv, effect)) = t.rsplit_once(':') else {
        return Err(format!(
            "\"{t}\" is not a taint; expected key=value:NoSchedule (or PreferNoSchedule, NoExecute)"
        ));
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "taint effect \"{effect}\" must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    label_key(key)?;
    label_value(value)
}

/// Keys stage 1 or the boot itself depend on: `init=`, `root=` and `rootfstype=`
/// choose what boots, `systemd.unit=` and `systemd.run*` are stage 1's own
/// arguments (stage 1 removes its exact tokens, so an extra one would stay and
/// decide every later boot), and the firmware and picluster already set the
/// console and memory cgroup.
const RESERVED_KERNEL_KEYS: &[&str] = &[
    "init",
    "root",
    "rootfstype",
    "systemd.unit",
    "systemd.run",
    "systemd.run_success_action",
    "systemd.run_failure_action",
    "systemd.default_standard_output",
    "cgroup_enable",
    "cgroup_memory",
    "cgroup_disable",
];

/// A kernel command-line argument picluster may add: one token without quotes,
/// never the substring `firstboot` (the Raspberry Pi OS initramfs resizes the
/// root partition whenever `/proc/cmdline` contains it), and none of the keys
/// stage 1 or the boot depend on. `existing` holds the base cmdline's tokens,
/// for the `console=` duplicate check.
pub fn kernel_arg(arg: &str, existing: &[&str]) -> Result<(), String> {
    if arg.is_empty() || arg.chars().any(|c| c.is_whitespace()) {
        return Err(format!(
            "\"{arg}\" must be a single kernel argument without spaces"
        ));
    }
    if arg.contains('"') {
        return Err(format!(
            "{arg} holds a '\"': the kernel would read everything up to the next quote, stage 1's own arguments included, as one value"
        ));
    }
    if arg.contains("firstboot") {
        return Err(format!(
            "\"{arg}\" contains \"firstboot\", which makes the Raspberry Pi OS initramfs resize the root partition on every boot"
        ));
    }
    let key = arg.split_once('=').map_or(arg, |(k, _)| k);
    if RESERVED_KERNEL_KEYS.contains(&key) || key.starts_with("systemd.run") {
        return Err(format!(
            "\"{arg}\" sets {key}, which picluster's first boot needs for itself"
        ));
    }
    if key == "console" && existing.contains(&arg) {
        return Err(format!(
            "\"{arg}\" is already on Raspberry Pi OS's command line; a duplicate console= moves the boot console"
        ));
    }
    Ok(())
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "\"{s}\" is not a SHA-256 digest (64 hexadecimal characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAY6kRfOp9z+7vh4YP9lIZNJ7Ul58UKL/YKalSULXWUA me@laptop";

    #[test]
    fn hostnames() {
        assert!(hostname("pi-worker-1").is_ok());
        assert!(hostname("Pi").is_err());
        assert!(hostname("-pi").is_err());
        assert!(hostname("pi_1").is_err());
        assert!(hostname(&"a".repeat(64)).is_err());
    }

    #[test]
    fn ssh_keys() {
        assert!(ssh_public_key(ED25519).is_ok());
        assert!(ssh_public_key("ssh-ed25519 AAAA… me@laptop").is_err());
        assert!(
            ssh_public_key(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIAY6kRfOp9z+7vh4YP9lIZNJ7Ul58UKL/YKalSULXWUA"
            )
            .is_err()
        );
        assert!(ssh_public_key("ssh-dss AAAA").is_err());
        assert!(ssh_public_key("justone").is_err());
    }

    #[test]
    fn versions() {
        assert!(k3s_version("v1.33.5+k3s1").is_ok());
        assert!(k3s_version("v1.34.0-rc1+k3s1").is_ok());
        assert!(k3s_version("1.33.5").is_err());
        assert!(k3s_version("v1.33+k3s1").is_err());
    }

    #[test]
    fn labels_and_taints() {
        assert!(label_key("picluster.io/workload").is_ok());
        // Valid syntax, but the kubelet refuses it on --node-labels.
        assert!(label_key("node-role.kubernetes.io/storage").is_ok());
        assert!(node_label_key("node-role.kubernetes.io/storage").is_err());
        assert!(node_label_key("app.k8s.io/x").is_err());
        assert!(node_label_key("node.kubernetes.io/pool").is_ok());
        assert!(node_label_key("x.kubelet.kubernetes.io/y").is_ok());
        assert!(node_label_key("topology.kubernetes.io/zone").is_ok());
        assert!(node_label_key("picluster.io/workload").is_ok());
        assert!(node_label_key("kubernetes.io.example.com/x").is_ok());
        assert!(label_key("bad key").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("-x").is_err());
        assert!(taint("dedicated=db:NoSchedule").is_ok());
        assert!(taint("dedicated:NoExecute").is_ok());
        assert!(taint("dedicated=db").is_err());
        assert!(taint("a=b:Sometimes").is_err());
    }

    #[test]
    fn kernel_args_never_say_firstboot() {
        let base = ["console=serial0,115200", "console=tty1"];
        assert!(kernel_arg("usbcore.autosuspend=-1", &base).is_ok());
        assert!(kernel_arg("console=ttyAMA10", &base).is_ok());
        assert!(kernel_arg("console=tty1", &base).is_err());
        assert!(kernel_arg("foo=/boot/firstboot.sh", &base).is_err());
        assert!(kernel_arg("a b", &base).is_err());
        assert!(kernel_arg("\"", &base).is_err());
        for reserved in [
            "init=/bin/sh",
            "root=/dev/sda2",
            "systemd.unit=rescue.target",
            "systemd.run_whatever=1",
            "cgroup_enable=memory",
        ] {
            assert!(kernel_arg(reserved, &base).is_err(), "{reserved}");
        }
    }

    #[test]
    fn password_hashes() {
        // `openssl passwd -6 -salt saltsalt secret` and `mkpasswd -m yescrypt`.
        let sha512 = format!("$6$saltsalt${}", "a".repeat(86));
        assert!(password_hash(&sha512).is_ok());
        assert!(password_hash(&format!("$6$rounds=5000$saltsalt${}", "a".repeat(86))).is_ok());
        assert!(password_hash(&format!("$5$s${}", "b".repeat(43))).is_ok());
        assert!(password_hash(&format!("$y$j9T$salt${}", "c".repeat(43))).is_ok());
        assert!(password_hash(&format!("$2b$12${}", "d".repeat(53))).is_ok());
        assert!(password_hash("plaintext").is_err());
        assert!(password_hash("$1$salt$md5").is_err());
        assert!(password_hash("$6$a:b$c").is_err());
        assert!(password_hash("$6$$").is_err());
        assert!(password_hash("$6$abc$!!!!").is_err());
        assert!(password_hash(&format!("$6$${}", "a".repeat(86))).is_err());
        assert!(password_hash(&format!("$6$salt${}!", "a".repeat(85))).is_err());
        assert!(password_hash("$y$j9T$$").is_err());
        assert!(password_hash(&format!("$2b$99${}", "d".repeat(53))).is_err());
    }

    #[test]
    fn system_accounts_are_refused() {
        for name in [
            "root",
            "www-data",
            "proxy",
            "nobody",
            "systemd-network",
            "sshd",
            "messagebus",
            "_apt",
            "gpio",
            "nogroup",
        ] {
            assert!(username(name).is_err(), "{name}");
        }
        assert!(username("alice").is_ok());
        assert!(username("pi").is_ok());
    }
}
