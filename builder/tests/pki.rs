//! The cluster's CAs and admin kubeconfig, checked with openssl.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn openssl(args: &[&str], files: &[&Path]) -> String {
    let mut c = Command::new("openssl");
    c.args(args).args(files);
    let out = c.output().expect("openssl is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{c:?}: {text}");
    text
}

/// The CA files K3s reads from server/tls (k3s v1.33
/// pkg/daemons/control/deps/deps.go, CreateRuntimeCertFiles).
const CAS: &[&str] = &[
    "server-ca",
    "client-ca",
    "request-header-ca",
    "etcd/peer-ca",
    "etcd/server-ca",
];

#[test]
fn init_makes_self_signed_p256_cas_k3s_accepts_private_and_kept() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    init_with_key(&cache, d.path());
    let pki = d.path().join("pki");
    assert_eq!(mode(&pki), 0o700);
    assert_eq!(mode(&pki.join("etcd")), 0o700);
    for ca in CAS {
        let crt = pki.join(format!("{ca}.crt"));
        let key = pki.join(format!("{ca}.key"));
        assert_eq!(mode(&key), 0o600, "{ca}.key");
        assert_eq!(mode(&crt), 0o600, "{ca}.crt");
        let ok = openssl(&["verify", "-CAfile"], &[&crt, &crt]);
        assert!(ok.contains(": OK"), "{ok}");
        let text = openssl(&["x509", "-noout", "-text", "-in"], &[&crt]);
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("Certificate Sign"), "{text}");
        // One certificate per file: K3s then hashes the file (hashCA).
        let pem = std::fs::read_to_string(&crt).unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1);
        // Ten years, like K3s's own CAs (docs.k3s.io, Certificate Management).
        let end = openssl(
            &["x509", "-noout", "-checkend", "311040000", "-in"],
            &[&crt],
        );
        assert!(end.contains("will not expire"), "{end}");
        // SEC1 P-256, as K3s writes its CA keys (LoadOrGenerateKeyFile).
        let k = std::fs::read_to_string(&key).unwrap();
        assert!(k.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{ca}");
        let kt = openssl(&["ec", "-noout", "-text", "-in"], &[&key]);
        assert!(kt.contains("prime256v1"), "{kt}");
        // The key belongs to the certificate.
        let a = openssl(&["x509", "-noout", "-pubkey", "-in"], &[&crt]);
        let b = openssl(&["ec", "-pubout", "-in"], &[&key]);
        assert!(b.contains(a.trim()), "{ca}: key and certificate differ");
    }
    let service = pki.join("service.key");
    assert_eq!(mode(&service), 0o600);
    // RSA 2048, as K3s makes it (dynamiclistener cert.NewPrivateKey).
    let text = openssl(&["rsa", "-check", "-noout", "-text", "-in"], &[&service]);
    assert!(
        text.contains("Private-Key: (2048 bit") && text.contains("RSA key ok"),
        "{text}"
    );

    // Never overwritten: `secrets` leaves an existing PKI alone.
    let before = std::fs::read(pki.join("server-ca.crt")).unwrap();
    let out = run(picluster(&cache)
        .arg("secrets")
        .arg("-c")
        .arg(d.path().join("cluster.toml")));
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(std::fs::read(pki.join("server-ca.crt")).unwrap(), before);
    let ignored = std::fs::read_to_string(d.path().join(".gitignore")).unwrap();
    for pattern in ["pki/", "kubeconfig"] {
        assert!(ignored.lines().any(|l| l == pattern), "{ignored}");
    }
}

#[test]
fn secrets_adds_cas_to_an_existing_cluster_and_says_so_but_not_with_join() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    init_with_key(&cache, d.path());
    let cfg = d.path().join("cluster.toml");
    let pki = d.path().join("pki");
    std::fs::remove_dir_all(&pki).unwrap();
    let secrets = std::fs::read(d.path().join("secrets.toml")).unwrap();
    let out = run(picluster(&cache).arg("secrets").arg("-c").arg(&cfg));
    assert!(
        out.contains("created the cluster's CAs") && out.contains("re-flash"),
        "{out}"
    );
    assert_eq!(mode(&pki), 0o700);
    assert!(pki.join("etcd/server-ca.key").exists());
    assert_eq!(
        std::fs::read(d.path().join("secrets.toml")).unwrap(),
        secrets,
        "the tokens are kept"
    );

    // A cluster that joins another keeps that cluster's CA: no PKI.
    let j = d.path().join("j");
    std::fs::create_dir(&j).unwrap();
    init_with_key(&cache, &j);
    std::fs::remove_dir_all(j.join("pki")).unwrap();
    let text = std::fs::read_to_string(j.join("cluster.toml")).unwrap();
    let text = text.replacen(
        "[cluster]\n",
        "[cluster]\njoin = \"https://k3s.example.net:6443\"\n",
        1,
    );
    std::fs::write(j.join("cluster.toml"), text).unwrap();
    let out = run(picluster(&cache)
        .arg("secrets")
        .arg("-c")
        .arg(j.join("cluster.toml")));
    assert!(!out.contains("CAs"), "{out}");
    assert!(!j.join("pki").exists());
}

/// A `*-data` field of a kubeconfig, decoded.
fn kube_field(text: &str, key: &str) -> String {
    let v = text
        .lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key}: {text}"));
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(v.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kubeconfig_holds_an_admin_certificate_of_the_client_ca_for_the_api_endpoint() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    init_with_key(&cache, d.path());
    let cfg = d.path().join("cluster.toml");
    let out = run(picluster(&cache).arg("kubeconfig").arg("-c").arg(&cfg));
    let path = d.path().join("kubeconfig");
    assert!(out.contains("kubectl --kubeconfig"), "{out}");
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    // The sample's api_endpoint defaults to the first server's address,
    // which is in every server's tls-san.
    assert!(
        text.contains("server: \"https://192.168.0.120:6443\""),
        "{text}"
    );
    let pki = d.path().join("pki");
    assert_eq!(
        kube_field(&text, "certificate-authority-data"),
        std::fs::read_to_string(pki.join("server-ca.crt")).unwrap()
    );
    let crt = d.path().join("admin.crt");
    let key = d.path().join("admin.key");
    std::fs::write(&crt, kube_field(&text, "client-certificate-data")).unwrap();
    std::fs::write(&key, kube_field(&text, "client-key-data")).unwrap();
    let ok = openssl(&["verify", "-CAfile"], &[&pki.join("client-ca.crt"), &crt]);
    assert!(ok.contains(": OK"), "{ok}");
    // Not by the server CA: the API server trusts only the client CA for users.
    let wrong = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(pki.join("server-ca.crt"))
        .arg(&crt)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let subject = openssl(&["x509", "-noout", "-subject", "-in"], &[&crt]);
    assert!(
        subject.contains("O = system:masters") && subject.contains("CN = picluster-admin"),
        "{subject}"
    );
    let usage = openssl(
        &["x509", "-noout", "-ext", "extendedKeyUsage", "-in"],
        &[&crt],
    );
    assert!(usage.contains("TLS Web Client Authentication"), "{usage}");
    // One year (documented in README): valid in 364 days, expired in 366.
    openssl(&["x509", "-noout", "-checkend", "31449600", "-in"], &[&crt]);
    let late = Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "31622400", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    assert!(!late.status.success(), "valid beyond a year");
    let a = openssl(&["x509", "-noout", "-pubkey", "-in"], &[&crt]);
    let b = openssl(&["ec", "-pubout", "-in"], &[&key]);
    assert!(b.contains(a.trim()));

    // Rewritten on request; someone else's file is never overwritten.
    run(picluster(&cache).arg("kubeconfig").arg("-c").arg(&cfg));
    let theirs = d.path().join("theirs");
    std::fs::write(&theirs, "apiVersion: v1\n").unwrap();
    let err = fails(
        picluster(&cache)
            .arg("kubeconfig")
            .arg("-c")
            .arg(&cfg)
            .arg("-o")
            .arg(&theirs),
    );
    assert!(err.contains("not a kubeconfig picluster wrote"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&theirs).unwrap(),
        "apiVersion: v1\n"
    );

    // With `join`, it says why it cannot help.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[cluster]\n",
        "[cluster]\njoin = \"https://k3s.example.net:6443\"\n",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let err = fails(picluster(&cache).arg("kubeconfig").arg("-c").arg(&cfg));
    assert!(
        err.contains("join the cluster at https://k3s.example.net:6443")
            && err.contains("k3s.yaml"),
        "{err}"
    );
}
