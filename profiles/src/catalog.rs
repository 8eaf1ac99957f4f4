//! The pinned base-image catalogue (`images/catalog.toml`), compiled in so the
//! CLI works wherever it is installed.

use serde::{Deserialize, Serialize};

const CATALOG_TOML: &str = include_str!("../../images/catalog.toml");

/// The catalogue entry used when a cluster file has no `[image]` table.
pub const DEFAULT_BASE: &str = "raspios-bookworm-arm64-lite";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CatalogImage {
    pub name: String,
    pub description: String,
    pub url: String,
    pub sha256: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_parses_and_pins_every_image() {
        let all = images();
        assert!(all.iter().any(|i| i.name == DEFAULT_BASE));
        for i in all {
            assert!(crate::checks::sha256_hex(&i.sha256).is_ok(), "{}", i.name);
            assert!(i.url.starts_with("https://") && i.url.ends_with(".img.xz"));
            assert!(i.url.contains("bookworm-arm64-lite"), "{}", i.name);
        }
    }
}
