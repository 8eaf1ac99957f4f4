//! `[image]`: the base image and what picluster adds to its boot files.

use serde::Serialize;

use super::convert::Builder;
use crate::catalog;
use crate::checks;
use crate::schema::RawImage;

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BaseSource {
    /// A catalogue entry, pinned by digest.
    Catalog(catalog::CatalogImage),
    /// A URL or path; without `sha256` the sibling `.sha256` file is trusted.
    Url { url: String, sha256: Option<String> },
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageSettings {
    pub source: BaseSource,
    pub pi5_4k_pages: bool,
    pub extra_kernel_args: Vec<String>,
    pub extra_config_txt: Vec<String>,
}

/// Raspberry Pi OS's own consoles on `cmdline.txt` (DESIGN.md).
const PIOS_CONSOLES: &[&str] = &["console=serial0,115200", "console=tty1"];

impl Builder<'_, '_> {
    pub(super) fn image(&mut self, img: Option<&RawImage>) -> Option<ImageSettings> {
        let default_source = || {
            BaseSource::Catalog(
                catalog::find(catalog::DEFAULT_BASE).expect("default base is in the catalogue"),
            )
        };
        let Some(img) = img else {
            return Some(ImageSettings {
                source: default_source(),
                pi5_4k_pages: true,
                extra_kernel_args: Vec::new(),
                extra_config_txt: Vec::new(),
            });
        };
        let mut ok = true;
        let sha256 = img.sha256.as_ref().and_then(|s| {
            let v = s.get_ref().to_ascii_lowercase();
            self.check(s, "image.sha256", checks::sha256_hex(&v), None)
                .then_some(v)
        });
        if img.sha256.is_some() && sha256.is_none() {
            ok = false;
        }
        let source = match (&img.base, &img.url) {
            (Some(b), Some(_)) => {
                self.bad(
                    b,
                    "image.base",
                    "give either `base` or `url`, not both".into(),
                    Some("remove one of the two keys"),
                );
                None
            }
            (Some(b), None) => match catalog::find(b.get_ref()) {
                Some(entry) => {
                    if let Some(s) = &img.sha256 {
                        self.bad(
                            s,
                            "image.sha256",
                            "`sha256` pins a `url`; catalogue images are pinned already".into(),
                            Some("remove `sha256`, or use `url` instead of `base`"),
                        );
                    }
                    Some(BaseSource::Catalog(entry))
                }
                None => {
                    let names: Vec<String> =
                        catalog::images().into_iter().map(|i| i.name).collect();
                    self.bad(
                        b,
                        "image.base",
                        format!(
                            "\"{}\" is not in the image catalogue (images/catalog.toml)",
                            b.get_ref()
                        ),
                        Some(&format!(
                            "use one of: {}; or give `url` (and optionally `sha256`)",
                            names.join(", ")
                        )),
                    );
                    None
                }
            },
            (None, Some(u)) => {
                let url = u.get_ref();
                if url.trim().is_empty() {
                    self.bad(
                        u,
                        "image.url",
                        "is empty".into(),
                        Some("give an https:// URL, a file:// URL or a path to a .img.xz"),
                    );
                    None
                } else if url.starts_with("http://") && sha256.is_none() {
                    // The sibling .sha256 would come over the same unprotected
                    // connection as the image: it proves nothing.
                    self.bad(
                        u,
                        "image.url",
                        "a plain http:// download can be swapped on the way, and no `sha256` pins it".into(),
                        Some("use an https:// URL, or add `sha256 = \"…\"` (the digest Raspberry Pi publishes beside the image) under [image]"),
                    );
                    None
                } else {
                    Some(BaseSource::Url {
                        url: url.clone(),
                        sha256: sha256.clone(),
                    })
                }
            }
            (None, None) => Some(default_source()),
        };
        let mut extra_kernel_args = Vec::new();
        for (i, a) in img.extra_kernel_args.iter().enumerate() {
            // Raspberry Pi OS's own consoles (DESIGN.md, cmdline.txt) and the
            // arguments given before this one.
            let mut existing: Vec<&str> = PIOS_CONSOLES.to_vec();
            existing.extend(extra_kernel_args.iter().map(String::as_str));
            if self.check(
                a,
                &format!("image.extra_kernel_args[{i}]"),
                checks::kernel_arg(a.get_ref(), &existing),
                Some("give one plain argument such as usbcore.autosuspend=-1; picluster sets root, init, systemd.*, cgroup and console arguments itself"),
            ) {
                extra_kernel_args.push(a.get_ref().clone());
            } else {
                ok = false;
            }
        }
        let mut extra_config_txt = Vec::new();
        for (i, l) in img.extra_config_txt.iter().enumerate() {
            let v = l.get_ref();
            if v.contains('\n') {
                self.bad(
                    l,
                    &format!("image.extra_config_txt[{i}]"),
                    "holds a line break".into(),
                    Some("give one config.txt line per list entry"),
                );
                ok = false;
            } else {
                extra_config_txt.push(v.clone());
            }
        }
        (ok && source.is_some()).then(|| ImageSettings {
            source: source.expect("checked"),
            pi5_4k_pages: img.pi5_4k_pages.unwrap_or(true),
            extra_kernel_args,
            extra_config_txt,
        })
    }
}
