//! Reading the ext4 root filesystem of a base image, read-only, with
//! ext4-view: which OS release it is and which CPU its programs are for.
//! picluster never writes the root partition.

use std::collections::BTreeMap;
use std::fs::File;

use serde::Serialize;

use crate::partition::Extent;
use crate::region::RegionReader;

/// What the rootfs says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct RootfsInfo {
    /// `/etc/os-release` as key → value (quotes removed).
    pub os_release: BTreeMap<String, String>,
    /// CPU architecture of the userland, from the ELF header of a core program.
    pub arch: String,
    /// The program the architecture was read from.
    pub arch_probe: String,
    pub label: String,
    /// Accounts and groups of the image below id 1000 (Debian's system range,
    /// adduser's LAST_SYSTEM_UID 999), from `/etc/passwd` and `/etc/group`:
    /// the administrator must not take one over.
    pub system_names: Vec<(String, u32)>,
    /// cloud-init is installed (`/etc/cloud/cloud.cfg`, the file the Debian
    /// package ships).
    pub cloud_init: bool,
}

impl RootfsInfo {
    pub fn id(&self) -> &str {
        self.os_release.get("ID").map_or("", String::as_str)
    }
    pub fn codename(&self) -> &str {
        self.os_release
            .get("VERSION_CODENAME")
            .map_or("", String::as_str)
    }
    pub fn pretty_name(&self) -> &str {
        self.os_release
            .get("PRETTY_NAME")
            .map_or("unknown", String::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("the root partition is not a readable ext4 filesystem: {0}")]
    NotExt4(String),
    #[error("the root filesystem has no /etc/os-release (or /usr/lib/os-release): {0}")]
    NoOsRelease(String),
    #[error(
        "no core program (/usr/bin/env, /bin/sh, /usr/bin/dpkg) could be read to tell the CPU architecture"
    )]
    NoProgram,
}

/// Programs whose ELF header tells the userland's architecture.
const ARCH_PROBES: &[&str] = &["/usr/bin/env", "/bin/sh", "/usr/bin/dpkg", "/usr/bin/ls"];

/// os-release is a few hundred bytes; a crafted inode size must not become
/// an allocation (ext4-view's `read_to_string` allocates the size up front).
const MAX_OS_RELEASE: u64 = 64 << 10;

pub fn inspect(file: &File, extent: Extent) -> Result<RootfsInfo, RootfsError> {
    crate::usedblocks::check_ext_superblock(file, extent).map_err(RootfsError::NotExt4)?;
    let reader =
        RegionReader::new(file, extent).map_err(|e| RootfsError::NotExt4(e.to_string()))?;
    let fs =
        ext4_view::Ext4::load(Box::new(reader)).map_err(|e| RootfsError::NotExt4(e.to_string()))?;
    let text = read_small(&fs, "/etc/os-release")
        .or_else(|first| read_small(&fs, "/usr/lib/os-release").map_err(|_| first))
        .map_err(RootfsError::NoOsRelease)?;
    let os_release = parse_os_release(&text);
    let mut found = None;
    for probe in ARCH_PROBES {
        if let Ok(mut f) =
            resolve(&fs, probe).and_then(|p| fs.open(p.as_str()).map_err(|e| e.to_string()))
        {
            let mut head = [0u8; 20];
            if std::io::Read::read_exact(&mut f, &mut head).is_ok() {
                found = Some((elf_arch(&head), probe.to_string()));
                break;
            }
        }
    }
    let (arch, arch_probe) = found.ok_or(RootfsError::NoProgram)?;
    let mut system_names = Vec::new();
    for file in ["/etc/passwd", "/etc/group"] {
        if let Ok(text) = fs.read_to_string(file) {
            for entry in system_ids(&text) {
                if !system_names.iter().any(|(n, _)| *n == entry.0) {
                    system_names.push(entry);
                }
            }
        }
    }
    let cloud_init = resolve(&fs, "/etc/cloud/cloud.cfg")
        .ok()
        .and_then(|p| fs.exists(p.as_str()).ok())
        .unwrap_or(false);
    Ok(RootfsInfo {
        os_release,
        arch,
        arch_probe,
        label: fs.label().to_str().unwrap_or_default().to_string(),
        system_names,
        cloud_init,
    })
}

/// Linux's limits on a symlink target (PATH_MAX) and on symlinks followed
/// while resolving one path (MAXSYMLINKS).
const MAX_LINK_TARGET: u64 = 4096;
const MAX_LINK_HOPS: usize = 40;

/// `path` with every symlink in it resolved, one component at a time, so
/// that ext4-view never follows a symlink itself: it reads a long symlink's
/// target whole, into a buffer sized by the inode's length (a crafted 4 GiB
/// "symlink" was found by the usedblocks_ext4 fuzz target). Every path handed
/// to ext4-view here runs through real directories only.
fn resolve(fs: &ext4_view::Ext4, path: &str) -> Result<String, String> {
    let push = |todo: &mut Vec<String>, p: &str| {
        todo.extend(
            p.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .rev()
                .map(str::to_string),
        )
    };
    let mut todo = Vec::new();
    push(&mut todo, path);
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let here = format!(
            "/{}",
            done.iter()
                .chain([&c])
                .cloned()
                .collect::<Vec<_>>()
                .join("/")
        );
        let md = fs
            .symlink_metadata(here.as_str())
            .map_err(|e| format!("{here}: {e}"))?;
        if !md.is_symlink() {
            done.push(c);
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS || md.len() > MAX_LINK_TARGET {
            return Err(format!(
                "{here}: a symlink of {} bytes after {hops} symlinks; the filesystem is corrupt",
                md.len()
            ));
        }
        let target = fs
            .read_link(here.as_str())
            .map_err(|e| format!("{here}: {e}"))?;
        let target = target
            .to_str()
            .map_err(|_| format!("{here}: the symlink target is not UTF-8"))?;
        if target.starts_with('/') {
            done.clear();
        }
        push(&mut todo, target);
    }
    Ok(format!("/{}", done.join("/")))
}

/// A small text file, refused when it is larger than [`MAX_OS_RELEASE`].
fn read_small(fs: &ext4_view::Ext4, path: &str) -> Result<String, String> {
    let resolved = resolve(fs, path)?;
    let path = resolved.as_str();
    let len = fs.metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_OS_RELEASE {
        return Err(format!(
            "{path} is {len} bytes, not a few hundred: the filesystem is corrupt"
        ));
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(fs.open(path).map_err(|e| e.to_string())?, MAX_OS_RELEASE),
        &mut text,
    )
    .map_err(|e| e.to_string())?;
    String::from_utf8(text).map_err(|_| format!("{path} is not UTF-8 text"))
}

pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect()
}

/// `name:x:id:…` lines of a passwd or group file whose id is below 1000.
pub fn system_ids(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.trim();
            let id = f.nth(1)?.trim().parse::<u32>().ok()?;
            (!name.is_empty() && !name.starts_with('#') && id < 1000)
                .then(|| (name.to_string(), id))
        })
        .collect()
}

/// The architecture an ELF header names, in Debian's terms.
pub fn elf_arch(head: &[u8]) -> String {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return "not an ELF program".into();
    }
    let little = head[5] == 1;
    let machine = if little {
        u16::from_le_bytes([head[18], head[19]])
    } else {
        u16::from_be_bytes([head[18], head[19]])
    };
    match (machine, head[4]) {
        (183, 2) => "arm64".into(),
        (40, 1) => "armhf".into(),
        (62, 2) => "amd64".into(),
        (3, 1) => "i386".into(),
        (243, 2) => "riscv64".into(),
        (m, class) => format!("ELF machine {m} ({}-bit)", if class == 2 { 64 } else { 32 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_lose_their_quotes() {
        let m = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n",
        );
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn system_ids_are_those_below_1000() {
        let ids = system_ids(
            "root:x:0:0:root:/root:/bin/bash\nproxy:x:13:13:proxy:/bin:/usr/sbin/nologin\npi:x:1000:1000:,,,:/home/pi:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\nbroken\n",
        );
        assert_eq!(ids, [("root".to_string(), 0), ("proxy".to_string(), 13)]);
    }

    #[test]
    fn elf_machines() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 183;
        assert_eq!(elf_arch(&h), "arm64");
        h[18] = 62;
        assert_eq!(elf_arch(&h), "amd64");
        assert_eq!(elf_arch(b"#!/bin/sh\n0123456789"), "not an ELF program");
    }
}
