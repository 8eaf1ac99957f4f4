//! `picluster images [--refresh] [--json]`: the pinned base images, and with
//! `--refresh` the Raspberry Pi OS Lite arm64 releases Raspberry Pi's image
//! list offers beyond them, with the lines that pin one.

use anyhow::{Context, Result};
use picluster_profiles::catalog::{self, CatalogImage};
use serde::Serialize;

use crate::cache::Cache;
use crate::fetch::{FetchError, Fetcher, Location};
use crate::oslist::{self, Release};

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Also read Raspberry Pi's image list and show the releases newer than the pins.
    #[arg(long)]
    pub refresh: bool,
    /// The image list to read (a URL or a file).
    #[arg(long, value_name = "URL", default_value = oslist::OFFICIAL)]
    pub list: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// What `images --json` prints; `schema_version` rises when a field changes
/// meaning or goes away.
#[derive(Debug, Serialize)]
pub struct Images {
    pub schema_version: u32,
    pub pinned: Vec<Pinned>,
    /// With `--refresh`.
    pub refreshed: Option<Refreshed>,
}

#[derive(Debug, Serialize)]
pub struct Pinned {
    pub name: String,
    pub codename: Option<String>,
    pub date: Option<String>,
    pub default: bool,
    pub url: String,
    pub sha256: String,
    pub description: String,
}

#[derive(Debug, Serialize)]
pub struct Refreshed {
    pub list: String,
    /// Every Lite arm64 release the list offers, newest first.
    pub releases: Vec<Release>,
    /// Releases newer than the newest pin of their codename (or of a
    /// codename not pinned at all).
    pub newer: Vec<Release>,
    /// Pinned URLs the list gives another digest for.
    pub disagree: Vec<Disagreement>,
    /// Digests that could not be read.
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Disagreement {
    pub name: String,
    pub pinned: String,
    pub listed: String,
}

/// A list that cannot be reached gets the offline hint for this command
/// (the download hint of [`FetchError::Unreachable`] is about base images).
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(
        "{url}: {message}\n  This will not get better by retrying. Offline? `picluster images` without --refresh lists the pins, and --list FILE reads a saved copy of the list"
    )]
    Unreachable { url: String, message: String },
    #[error(transparent)]
    Fetch(FetchError),
}

impl From<FetchError> for ListError {
    fn from(e: FetchError) -> ListError {
        match e {
            FetchError::Unreachable { url, message } => ListError::Unreachable { url, message },
            other => ListError::Fetch(other),
        }
    }
}

pub fn run(args: &ImagesArgs) -> Result<()> {
    let pinned = pinned(&catalog::images());
    let refreshed = if args.refresh {
        let fetcher = Fetcher::new(Cache::from_env()?)?;
        let found = oslist::releases(&args.list, |url| {
            fetcher.text(&Location::parse(url)).map_err(ListError::from)
        })
        .context("cannot read Raspberry Pi's image list")?;
        let mut refreshed = compare(&args.list, &pinned, found.releases);
        if found.skipped > 0 {
            refreshed.notes.push(format!(
                "skipped {} list entr{} not shaped like an image entry",
                found.skipped,
                if found.skipped == 1 { "y" } else { "ies" }
            ));
        }
        // The list leaves the download digest out of Raspberry Pi's own
        // entries: read the `.sha256` beside each image worth pinning.
        for r in refreshed.newer.iter_mut().filter(|r| r.sha256.is_none()) {
            let sibling = format!("{}.sha256", r.url);
            match fetcher.text(&Location::parse(&sibling)) {
                Ok(t) => {
                    r.sha256 = oslist::sibling_sha256(&r.url, &t);
                    if r.sha256.is_none() {
                        refreshed
                            .notes
                            .push(format!("{sibling} holds no digest for this image"));
                    }
                }
                // The error names the URL itself.
                Err(e) => refreshed.notes.push(format!("{:#}", anyhow::Error::new(e))),
            }
        }
        Some(refreshed)
    } else {
        None
    };
    let out = Images {
        schema_version: 1,
        pinned,
        refreshed,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", text(&out));
    }
    Ok(())
}

fn pinned(images: &[CatalogImage]) -> Vec<Pinned> {
    images
        .iter()
        .map(|i| {
            let release = oslist::lite_arm64(&i.url);
            Pinned {
                name: i.name.clone(),
                date: release.as_ref().map(|r| r.0.clone()),
                codename: release.map(|r| r.1),
                default: i.name == catalog::DEFAULT_BASE,
                url: i.url.clone(),
                sha256: i.sha256.clone(),
                description: i.description.clone(),
            }
        })
        .collect()
}

pub fn compare(list: &str, pinned: &[Pinned], releases: Vec<Release>) -> Refreshed {
    let newest_pin = |codename: &str| {
        pinned
            .iter()
            .filter(|p| p.codename.as_deref() == Some(codename))
            .filter_map(|p| p.date.clone())
            .max()
    };
    let newer = releases
        .iter()
        .filter(|r| newest_pin(&r.codename).is_none_or(|d| r.date > d))
        .cloned()
        .collect();
    let disagree = pinned
        .iter()
        .filter_map(|p| {
            let r = releases.iter().find(|r| r.url == p.url)?;
            let listed = r.sha256.as_ref()?;
            (*listed != p.sha256).then(|| Disagreement {
                name: p.name.clone(),
                pinned: p.sha256.clone(),
                listed: listed.clone(),
            })
        })
        .collect();
    Refreshed {
        list: list.to_string(),
        releases,
        newer,
        disagree,
        notes: Vec::new(),
    }
}

/// The catalogue entry that would pin `r` (`images/catalog.toml`).
pub fn catalog_entry(r: &Release, sha256: &str) -> String {
    let mut s = format!(
        "[[image]]\nname = \"raspios-{c}-arm64-lite-{d}\"\ndescription = \"Raspberry Pi OS Lite (64-bit), {c}, {d}\"\nurl = \"{u}\"\nsha256 = \"{sha256}\"\n",
        c = r.codename,
        d = r.date,
        u = r.url,
    );
    if let (Some(size), Some(x)) = (r.extract_size, &r.extract_sha256) {
        s.push_str(&format!(
            "extract_size = {size}\nextract_sha256 = \"{x}\"\n"
        ));
    }
    s
}

pub fn text(out: &Images) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "pinned base images (`[image] base = \"NAME\"`):");
    for p in &out.pinned {
        let _ = writeln!(
            s,
            "  {:<40} {:<9} {:<10}{}",
            p.name,
            p.codename.as_deref().unwrap_or("?"),
            p.date.as_deref().unwrap_or("?"),
            if p.default { "  (default)" } else { "" }
        );
    }
    let Some(r) = &out.refreshed else {
        let _ = writeln!(
            s,
            "`picluster images --refresh` reads Raspberry Pi's image list for newer releases."
        );
        return s;
    };
    let _ = writeln!(
        s,
        "\n{}: {} Raspberry Pi OS Lite arm64 release(s)",
        r.list,
        r.releases.len()
    );
    for d in &r.disagree {
        let _ = writeln!(
            s,
            "warning: the list gives {} the digest {}, the pin says {}: check both against a second source",
            d.name, d.listed, d.pinned
        );
    }
    if r.newer.is_empty() {
        let _ = writeln!(s, "nothing newer than the pins.");
        return s;
    }
    let _ = writeln!(s, "newer than the pins:");
    for n in &r.newer {
        let _ = writeln!(
            s,
            "  {:<9} {}  {}{}",
            n.codename,
            n.date,
            n.url,
            n.init_format
                .as_deref()
                .map(|f| format!("  (first boot: {f})"))
                .unwrap_or_default()
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    if r.list.starts_with("http://") {
        let _ = writeln!(
            s,
            "note: the list came over plain http: check these digests against a second source before pinning them."
        );
    }
    for n in &r.newer {
        let Some(sha) = &n.sha256 else { continue };
        let _ = writeln!(
            s,
            "\nto build from {} {}, put in the cluster file's [image] table, in place of `base`:\nurl = \"{}\"\nsha256 = \"{sha}\"\nor add to images/catalog.toml:\n{}",
            n.codename,
            n.date,
            n.url,
            catalog_entry(n, sha)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(codename: &str, date: &str, sha: Option<&str>) -> Release {
        Release {
            codename: codename.into(),
            date: date.into(),
            name: String::new(),
            url: format!("https://h/{date}-raspios-{codename}-arm64-lite.img.xz"),
            sha256: sha.map(str::to_string),
            download_size: None,
            extract_size: None,
            extract_sha256: None,
            release_date: None,
            init_format: None,
            devices: Vec::new(),
        }
    }

    #[test]
    fn newer_is_per_codename_and_a_changed_digest_is_reported() {
        let pins = pinned(&[CatalogImage {
            name: "b".into(),
            description: String::new(),
            url: "https://h/2026-09-15-raspios-bookworm-arm64-lite.img.xz".into(),
            sha256: "aa".repeat(32),
            extract_size: None,
            extract_sha256: None,
        }]);
        let r = compare(
            "l",
            &pins,
            vec![
                release("trixie", "2026-01-01", None),
                release("bookworm", "2026-09-15", Some(&"bb".repeat(32))),
                release("bookworm", "2026-04-13", None),
                release("bookworm", "2026-10-01", None),
            ],
        );
        let newer: Vec<String> = r
            .newer
            .iter()
            .map(|n| format!("{} {}", n.codename, n.date))
            .collect();
        // Trixie has no pin at all: every Trixie release is newer.
        assert_eq!(newer, ["trixie 2026-01-01", "bookworm 2026-10-01"]);
        assert_eq!(r.disagree.len(), 1);
        assert_eq!(r.disagree[0].listed, "bb".repeat(32));
        let entry = catalog_entry(&r.newer[1], &"cc".repeat(32));
        let parsed: toml::Table = toml::from_str(&entry).unwrap();
        assert_eq!(
            parsed["image"][0]["name"].as_str(),
            Some("raspios-bookworm-arm64-lite-2026-10-01")
        );
    }
}
