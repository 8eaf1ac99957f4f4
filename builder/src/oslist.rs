//! Raspberry Pi's official image list, the JSON Raspberry Pi Imager reads
//! (`os_list_imagingutility_v4.json`; its shape is rpi-imager's
//! doc/json-schema/os-list-schema.json): the Raspberry Pi OS Lite arm64
//! releases it offers, found by following `subitems` and `subitems_url`.
//!
//! The list only informs: a build never reads it, it uses pinned digests.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Where Raspberry Pi Imager reads the list.
pub const OFFICIAL: &str = "https://downloads.raspberrypi.com/os_list_imagingutility_v4.json";

/// Bounds against a hostile or looping list: documents followed, nesting.
const MAX_DOCUMENTS: usize = 64;
const MAX_DEPTH: usize = 4;

#[derive(Debug, Deserialize)]
struct Document {
    /// Read entry by entry: one malformed entry is skipped, not fatal.
    #[serde(default)]
    os_list: Vec<serde_json::Value>,
}

/// One entry of `os_list` or of an item's `subitems`. Fields picluster does
/// not use (icon, website, capabilities, …) are ignored.
#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    name: String,
    url: Option<String>,
    extract_size: Option<u64>,
    extract_sha256: Option<String>,
    image_download_size: Option<u64>,
    image_download_sha256: Option<String>,
    release_date: Option<String>,
    init_format: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    subitems: Vec<serde_json::Value>,
    subitems_url: Option<String>,
}

/// A Raspberry Pi OS Lite arm64 release as the list describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// Debian codename, from the file name (`bookworm`, `trixie`).
    pub codename: String,
    /// `YYYY-MM-DD`, from the file name.
    pub date: String,
    pub name: String,
    pub url: String,
    /// SHA-256 of the download: the list's `image_download_sha256`, which
    /// Raspberry Pi's own entries leave out (recorded copy of the 2025-11-24
    /// list), else the `.sha256` file beside the image (see [`sibling_sha256`]).
    pub sha256: Option<String>,
    pub download_size: Option<u64>,
    pub extract_size: Option<u64>,
    pub extract_sha256: Option<String>,
    pub release_date: Option<String>,
    /// How the image configures first boot (`systemd`, `cloudinit-rpi`, …).
    pub init_format: Option<String>,
    pub devices: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OsListError {
    #[error("{url} is not an image list: {message}")]
    Parse { url: String, message: String },
    #[error("{url} leads to more than {MAX_DOCUMENTS} lists (subitems_url); stopped there")]
    TooMany { url: String },
    /// The reader's own error names the URL.
    #[error(transparent)]
    Get(Box<dyn std::error::Error + Send + Sync>),
}

/// The date and codename of a Raspberry Pi OS Lite arm64 image, from its
/// file name `YYYY-MM-DD-raspios-<codename>-arm64-lite.img.xz` (the naming
/// of downloads.raspberrypi.com since 2021).
pub fn lite_arm64(url: &str) -> Option<(String, String)> {
    let file = url.rsplit('/').next()?;
    let rest = file.strip_suffix("-arm64-lite.img.xz")?;
    let (date, codename) = rest.split_at_checked(10)?;
    let codename = codename.strip_prefix("-raspios-")?;
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let name_ok = !codename.is_empty() && codename.bytes().all(|b| b.is_ascii_lowercase());
    (date_ok && name_ok).then(|| (date.to_string(), codename.to_string()))
}

fn is_sha256(s: &str) -> bool {
    picluster_profiles::checks::sha256_hex(s).is_ok()
}

/// A digest field of the list, if it is one, in lower case.
fn listed_sha256(field: Option<&str>) -> Option<String> {
    field.filter(|s| is_sha256(s)).map(str::to_ascii_lowercase)
}

/// A `subitems_url` relative to the list that names it.
fn resolve(base: &str, rel: &str) -> String {
    if rel.contains("://") {
        return rel.to_string();
    }
    if rel.starts_with('/') {
        return match origin(base) {
            Some(o) => format!("{}{rel}", o.trim_end_matches('/')),
            None => rel.to_string(),
        };
    }
    match base.rfind('/') {
        Some(i) => format!("{}/{rel}", &base[..i]),
        None => rel.to_string(),
    }
}

/// What the lists reachable from one root hold.
#[derive(Debug, Default)]
pub struct Found {
    /// Lite arm64 releases, newest first.
    pub releases: Vec<Release>,
    /// Entries that are not shaped like the schema's (skipped).
    pub skipped: usize,
}

/// Every Lite arm64 release reachable from the list at `root`.
/// `get` reads one document (HTTP, or a file in tests and offline use).
pub fn releases<E>(
    root: &str,
    mut get: impl FnMut(&str) -> Result<String, E>,
) -> Result<Found, OsListError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut queue = VecDeque::from([(root.to_string(), 0usize)]);
    let mut seen = BTreeSet::new();
    let mut found = Found::default();
    let root_origin = origin(root);
    while let Some((url, depth)) = queue.pop_front() {
        if !seen.insert(url.clone()) {
            continue;
        }
        if seen.len() > MAX_DOCUMENTS {
            return Err(OsListError::TooMany { url: root.into() });
        }
        let text = get(&url).map_err(|e| OsListError::Get(Box::new(e)))?;
        let doc: Document = serde_json::from_str(&text).map_err(|e| OsListError::Parse {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let mut stack: Vec<serde_json::Value> = doc.os_list;
        while let Some(value) = stack.pop() {
            let Ok(item) = serde_json::from_value::<Item>(value) else {
                found.skipped += 1;
                continue;
            };
            if let Some(sub) = &item.subitems_url
                && depth < MAX_DEPTH
            {
                queue.push_back((resolve(&url, sub), depth + 1));
            }
            if let Some(r) = release(&item, root_origin)
                && !found.releases.iter().any(|f| f.url == r.url)
            {
                found.releases.push(r);
            }
            stack.extend(item.subitems);
        }
    }
    found
        .releases
        .sort_by(|a, b| b.date.cmp(&a.date).then(a.codename.cmp(&b.codename)));
    Ok(found)
}

/// `scheme://host[:port]/` of an http(s) URL.
fn origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host_end = rest
        .find('/')
        .map_or(url.len(), |i| url.len() - rest.len() + i + 1);
    Some(&url[..host_end])
}

/// Images over https, or from the server that serves the list itself (a
/// local mirror of list and images).
fn release(item: &Item, list_origin: Option<&str>) -> Option<Release> {
    let url = item.url.as_deref()?;
    let same_origin = list_origin.is_some_and(|o| o.ends_with('/') && url.starts_with(o));
    if !url.starts_with("https://") && !same_origin {
        return None;
    }
    let (date, codename) = lite_arm64(url)?;
    Some(Release {
        codename,
        date,
        name: item.name.clone(),
        url: url.to_string(),
        sha256: listed_sha256(item.image_download_sha256.as_deref()),
        download_size: item.image_download_size,
        extract_size: item.extract_size,
        extract_sha256: listed_sha256(item.extract_sha256.as_deref()),
        release_date: item.release_date.clone(),
        init_format: item.init_format.clone(),
        devices: item.devices.clone(),
    })
}

/// The digest in a sha256sum-style `.sha256` file for the image at `url`
/// (`<digest>  <file name>`, as downloads.raspberrypi.com publishes them).
pub fn sibling_sha256(url: &str, text: &str) -> Option<String> {
    let file = url.rsplit('/').next()?;
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        let digest = parts.next()?;
        let name = parts.next().map(|n| n.trim_start_matches('*'));
        (is_sha256(digest) && name.is_none_or(|n| n == file)).then(|| digest.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_date_and_codename() {
        assert_eq!(
            lite_arm64("https://h/x/2025-11-24-raspios-bookworm-arm64-lite.img.xz"),
            Some(("2025-11-24".into(), "bookworm".into()))
        );
        for bad in [
            "https://h/2025-11-24-raspios-bookworm-arm64.img.xz",
            "https://h/2025-11-24-raspios-bookworm-armhf-lite.img.xz",
            "https://h/25-11-24-raspios-bookworm-arm64-lite.img.xz",
            "https://h/2025-11-24-raspios--arm64-lite.img.xz",
            "https://h/2025-11-24-raspios-Book-arm64-lite.img.xz",
            "https://h/2025-11-24-raspios-bookworm-arm64-lite.img.xz.sha256",
            "",
        ] {
            assert_eq!(lite_arm64(bad), None, "{bad}");
        }
    }

    #[test]
    fn sibling_sha256_files_are_read_for_their_own_image_only() {
        let url = "https://h/d/2026-10-06-raspios-trixie-arm64-lite.img.xz";
        let d = "ab".repeat(32);
        let line = format!("{d}  2026-10-06-raspios-trixie-arm64-lite.img.xz\n");
        assert_eq!(sibling_sha256(url, &line), Some(d.clone()));
        assert_eq!(sibling_sha256(url, &d), Some(d.clone()));
        assert_eq!(sibling_sha256(url, &format!("{d}  other.img.xz")), None);
        assert_eq!(sibling_sha256(url, "<html>not found</html>"), None);
    }

    #[test]
    fn origins_end_after_the_host() {
        assert_eq!(
            origin("http://127.0.0.1:8080/a/l.json"),
            Some("http://127.0.0.1:8080/")
        );
        assert_eq!(origin("https://h"), Some("https://h"));
        assert_eq!(origin("/srv/l.json"), None);
    }

    #[test]
    fn relative_subitems_urls_resolve_beside_their_list() {
        assert_eq!(
            resolve("https://h/a/list.json", "sub.json"),
            "https://h/a/sub.json"
        );
        assert_eq!(
            resolve("https://h/a/list.json", "https://o/s.json"),
            "https://o/s.json"
        );
        assert_eq!(
            resolve("https://h/a/list.json", "/b/s.json"),
            "https://h/b/s.json"
        );
        assert_eq!(resolve("/srv/list.json", "/b/s.json"), "/b/s.json");
    }
}
