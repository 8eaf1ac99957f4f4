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

/// A Linux account name the `useradd` defaults accept.
pub fn username(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_first || !ok_rest || name.len() > 32 {
        return Err(format!(
            "\"{name}\" is not a valid user name: start with a lower-case letter, then up to 31 lower-case letters, digits, '_' or '-'"
        ));
    }
    if matches!(
        name,
        "root" | "daemon" | "bin" | "sys" | "sync" | "nobody" | "systemd-network" | "sshd"
    ) {
        return Err(format!(
            "\"{name}\" is a system account; choose a personal administrator name"
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

/// A crypt(3) hash Raspberry Pi OS's `userconf.txt` and `/etc/shadow` accept.
pub fn password_hash(hash: &str) -> Result<(), String> {
    let fix = "generate one with `openssl passwd -6` or `mkpasswd -m yescrypt`";
    let known = ["$6$", "$5$", "$y$", "$gy$", "$2b$", "$2y$"];
    if !known.iter().any(|p| hash.starts_with(p)) {
        return Err(format!(
            "not a supported crypt hash (expected $6$, $5$, $y$ or $2b$ …); {fix}"
        ));
    }
    if hash.chars().any(|c| c == ':' || c.is_whitespace()) || hash.matches('$').count() < 3 {
        return Err(format!("malformed crypt hash; {fix}"));
    }
    Ok(())
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

/// A kernel command-line argument picluster may add: one token, and never the
/// substring `firstboot` (the Raspberry Pi OS initramfs resizes the root
/// partition whenever `/proc/cmdline` contains it).
pub fn kernel_arg(arg: &str) -> Result<(), String> {
    if arg.is_empty() || arg.chars().any(|c| c.is_whitespace()) {
        return Err(format!(
            "\"{arg}\" must be a single kernel argument without spaces"
        ));
    }
    if arg.contains("firstboot") {
        return Err(format!(
            "\"{arg}\" contains \"firstboot\", which makes the Raspberry Pi OS initramfs resize the root partition on every boot"
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
        assert!(label_key("node-role.kubernetes.io/storage").is_ok());
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
        assert!(kernel_arg("cgroup_enable=memory").is_ok());
        assert!(kernel_arg("foo=/boot/firstboot.sh").is_err());
        assert!(kernel_arg("a b").is_err());
    }

    #[test]
    fn password_hashes() {
        assert!(password_hash("$6$salt$abcdefghijkl").is_ok());
        assert!(password_hash("$y$j9T$salt$hash").is_ok());
        assert!(password_hash("plaintext").is_err());
        assert!(password_hash("$1$salt$md5").is_err());
        assert!(password_hash("$6$a:b$c").is_err());
    }
}
