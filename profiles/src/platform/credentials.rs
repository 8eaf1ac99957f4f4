//! The data-platform credentials a selection needs: their names in
//! `secrets.toml`'s `[platform]` map and how long each is. `secrets.rs`
//! generates them from this list, the renderers read them by these names.

use super::Platform;
use super::catalog::Component;

/// Keys of `secrets.toml`'s `[platform]` map: snake_case like the file's
/// other keys (older files used `-`; they are still read).
pub mod keys {
    pub const POSTGRESQL_PASSWORD: &str = "postgresql_password";
    pub const S3_ACCESS_KEY: &str = "s3_access_key";
    pub const S3_SECRET_KEY: &str = "s3_secret_key";
    pub const NIFI_PASSWORD: &str = "nifi_password";
    pub const NIFI_SENSITIVE_KEY: &str = "nifi_sensitive_key";
    pub const GRAFANA_ADMIN_PASSWORD: &str = "grafana_admin_password";
    pub const JUPYTER_TOKEN: &str = "jupyter_token";
}

/// The platform secrets a selection needs, with the number of random bytes
/// each is generated from (hex-encoded: twice as many characters).
pub fn secret_specs(platform: &Platform) -> Vec<(&'static str, usize)> {
    let mut out = Vec::new();
    if platform.has(Component::Postgresql) {
        out.push((keys::POSTGRESQL_PASSWORD, 16));
    }
    if platform.object_store().is_some() {
        out.push((keys::S3_ACCESS_KEY, 10));
        out.push((keys::S3_SECRET_KEY, 20));
    }
    if platform.has(Component::Nifi) {
        // NiFi wants at least 12 characters for both.
        out.push((keys::NIFI_PASSWORD, 16));
        out.push((keys::NIFI_SENSITIVE_KEY, 16));
    }
    if platform.has(Component::Monitoring) {
        out.push((keys::GRAFANA_ADMIN_PASSWORD, 16));
    }
    if platform.has(Component::Jupyter) {
        out.push((keys::JUPYTER_TOKEN, 24));
    }
    out
}
