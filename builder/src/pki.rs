//! Making the cluster's certificate authorities and the admin client
//! certificate on the workstation.
//!
//! The layout and loading live in `picluster_profiles::pki` (shared with the
//! node agent); the cryptography lives here only: rcgen (maintained by the
//! rustls project) on aws-lc-rs, which `reqwest`'s rustls already links, so the
//! node agent stays pure Rust and needs no C cross-compiler.
//!
//! Key and certificate choices follow what K3s makes itself (k3s v1.33
//! `pkg/daemons/control/deps/deps.go` with rancher/dynamiclistener `cert`):
//! ECDSA P-256 keys for every CA (`LoadOrGenerateKeyFile`), written as SEC1
//! `EC PRIVATE KEY` PEM (client-go's `keyutil` reads SEC1 for EC keys, not
//! PKCS#8), an RSA 2048 `service.key` (`genServiceAccount` uses
//! dynamiclistener's RSA `NewPrivateKey`), self-signed CA certificates valid
//! 10 years (docs.k3s.io
//! "Certificate Management": K3s's own CAs last 10 years), one certificate
//! per file so the token hash is the hash of the file (see `ca_hash`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use base64::Engine;
use picluster_profiles::pki::{self, CLIENT_CA_CERT, CLIENT_CA_KEY, ClusterPki};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// CA lifetime: 10 years, as K3s's self-signed CAs.
pub const CA_DAYS: i64 = 3650;
/// Admin certificate lifetime: 1 year, as K3s's client certificates; run
/// `picluster kubeconfig` again for a fresh one.
pub const ADMIN_DAYS: i64 = 365;
/// Who the admin certificate authenticates as: CN is the user name,
/// O=system:masters the group the API server grants everything.
pub const ADMIN_CN: &str = "picluster-admin";
pub const ADMIN_GROUP: &str = "system:masters";
/// Certificates start an hour early: workstation and nodes clocks differ.
const BACKDATE: Duration = Duration::hours(1);

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A fresh ECDSA P-256 key: SEC1 PEM, and the same key for rcgen.
fn new_key() -> Result<(String, KeyPair)> {
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| anyhow::anyhow!("cannot generate an ECDSA P-256 key"))?;
    let der = kp
        .private_key()
        .as_der()
        .map_err(|_| anyhow::anyhow!("cannot encode an ECDSA key as SEC1"))?;
    let text = pem("EC PRIVATE KEY", der.as_ref());
    let key = KeyPair::from_pem(&text).context("rcgen cannot read the generated key")?;
    Ok((text, key))
}

fn serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| anyhow::anyhow!("no random bytes for a serial"))?;
    b[0] &= 0x7f; // positive
    Ok(SerialNumber::from_slice(&b))
}

/// Seconds since 1970 by the workstation's clock (certificates are dated by
/// it, never by SOURCE_DATE_EPOCH).
pub fn unix_now() -> Result<i64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs() as i64)
}

fn at(unix: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix).context("the clock is outside the certificate range")
}

/// A complete, new PKI for a cluster. `now` in seconds since 1970.
pub fn generate(now: i64) -> Result<ClusterPki> {
    let start = at(now)?;
    let mut files = BTreeMap::new();
    for (base, cn) in pki::CAS {
        let (key_pem, key) = new_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // K3s names its CAs `<prefix>-ca@<unix time>`; ours say who made them.
        dn.push(DnType::CommonName, format!("{cn}@{now}"));
        dn.push(DnType::OrganizationName, "picluster");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.not_before = start - BACKDATE;
        params.not_after = start + Duration::days(CA_DAYS);
        params.serial_number = Some(serial()?);
        let cert = params
            .self_signed(&key)
            .with_context(|| format!("cannot sign the {base} certificate"))?;
        files.insert(format!("{base}.crt"), cert.pem());
        files.insert(format!("{base}.key"), key_pem);
    }
    // K3s makes service.key with dynamiclistener's `cert.NewPrivateKey`:
    // RSA 2048 (rancher/dynamiclistener cert/cert.go). PKCS#8 PEM, which
    // client-go's keyutil reads for RSA keys (PKCS#1, then PKCS#8).
    let service = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .context("cannot generate the RSA service-account key")?;
    files.insert(pki::SERVICE_KEY.to_string(), service.serialize_pem());
    Ok(ClusterPki { files })
}

/// An admin client certificate and its key (both PEM), signed by the client CA.
pub struct AdminCert {
    pub cert: String,
    pub key: String,
    pub not_after: OffsetDateTime,
}

pub fn issue_admin(pki: &ClusterPki, now: i64) -> Result<AdminCert> {
    let ca_cert = pki
        .get(CLIENT_CA_CERT)
        .context("the PKI has no client-ca.crt")?;
    let ca_key = pki
        .get(CLIENT_CA_KEY)
        .context("the PKI has no client-ca.key")?;
    let ca_key = KeyPair::from_pem(ca_key).context("pki/client-ca.key is not a key rcgen reads")?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key)
        .context("pki/client-ca.crt is not a certificate rcgen reads")?;
    let (key_pem, key) = new_key()?;
    let start = at(now)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ADMIN_GROUP);
    dn.push(DnType::CommonName, ADMIN_CN);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = start - BACKDATE;
    params.not_after = start + Duration::days(ADMIN_DAYS);
    params.serial_number = Some(serial()?);
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the admin certificate")?;
    Ok(AdminCert {
        cert: cert.pem(),
        key: key_pem,
        not_after: params.not_after,
    })
}
