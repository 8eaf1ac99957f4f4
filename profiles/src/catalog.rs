//! The pinned base-image catalogue (`images/catalog.toml`), compiled in so the
//! CLI works wherever it is installed.

use serde::{Deserialize, Serialize};

const CATALOG_TOML: &str = include_str!("../../images/catalog.toml");
const K3S_TOML: &str = include_str!("../../images/k3s.toml");

/// The catalogue entry used when a cluster file has no `[image]` table.
pub const DEFAULT_BASE: &str = "raspios-bookworm-arm64-lite";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CatalogImage {
    pub name: String,
    pub description: String,
    pub url: String,
    pub sha256: String,
    /// Size and SHA-256 of the decompressed image, where confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_sha256: Option<String>,
}

#[derive(Deserialize)]
struct Catalog {
    image: Vec<CatalogImage>,
}

/// Every pinned image, in catalogue order.
pub fn images() -> Vec<CatalogImage> {
    toml::from_str::<Catalog>(CATALOG_TOML)
        .expect("images/catalog.toml is checked by a unit test")
        .image
}

/// The pinned image called `name`.
pub fn find(name: &str) -> Option<CatalogImage> {
    images().into_iter().find(|i| i.name == name)
}

/// Pinned digests of one K3s release's arm64 assets (`images/k3s.toml`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct K3sPin {
    pub version: String,
    pub k3s_arm64: String,
    #[serde(default)]
    pub airgap_arm64: Option<String>,
}

#[derive(Deserialize)]
struct K3sPins {
    release: Vec<K3sPin>,
}

/// Every pinned K3s release.
pub fn k3s_pins() -> Vec<K3sPin> {
    toml::from_str::<K3sPins>(K3S_TOML)
        .expect("images/k3s.toml is checked by a unit test")
        .release
}

/// The pins for K3s `version`, if it is listed.
pub fn k3s_pin(version: &str) -> Option<K3sPin> {
    k3s_pins().into_iter().find(|p| p.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_parses_and_pins_every_image() {
        let all = images();
        assert!(all.iter().any(|i| i.name == DEFAULT_BASE));
        for i in all {
            assert!(crate::checks::sha256_hex(&i.sha256).is_ok(), "{}", i.name);
            assert!(i.url.starts_with("https://downloads.raspberrypi.com/"));
            assert!(
                i.url.ends_with("-raspios-bookworm-arm64-lite.img.xz")
                    || i.url.ends_with("-raspios-trixie-arm64-lite.img.xz"),
                "{}",
                i.name
            );
            if let Some(x) = &i.extract_sha256 {
                assert!(crate::checks::sha256_hex(x).is_ok(), "{}", i.name);
            }
        }
    }

    #[test]
    fn k3s_pins_parse_and_are_digests() {
        let pins = k3s_pins();
        assert!(!pins.is_empty());
        for p in pins {
            assert!(
                crate::checks::k3s_version(&p.version).is_ok(),
                "{}",
                p.version
            );
            assert!(
                crate::checks::sha256_hex(&p.k3s_arm64).is_ok(),
                "{}",
                p.version
            );
            if let Some(a) = &p.airgap_arm64 {
                assert!(crate::checks::sha256_hex(a).is_ok(), "{}", p.version);
            }
        }
        // The version the sample cluster file and the README pin is pinned here.
        let sample = include_str!("../examples/cluster.toml");
        let pinned = sample
            .lines()
            .find_map(|l| l.trim().strip_prefix("k3s_version = \""))
            .and_then(|r| r.split('"').next())
            .unwrap();
        assert!(
            k3s_pin(pinned).is_some(),
            "{pinned} has no pin in images/k3s.toml"
        );
    }
}
