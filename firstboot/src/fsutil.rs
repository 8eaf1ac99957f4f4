//! File operations that survive power loss: atomic replacement (temporary
//! file, fsync, rename, fsync of the directory), verified copies, and scrubbing
//! of secrets (overwrite in place with zeros, fsync, unlink).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Owner and mode of a file the agent writes. `None` leaves them to the
/// filesystem (the FAT boot partition has neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Perms {
    pub fn root(mode: u32) -> Perms {
        Perms {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

fn tmp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".picluster-tmp");
    Ok(path.with_file_name(tmp))
}

/// fsync a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Create `dir` and its missing parents (root-owned, 0755).
pub fn create_dirs(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Create `dir` (parents 0755) and give it exactly `perms`.
pub fn ensure_dir(dir: &Path, perms: Perms) -> Result<()> {
    create_dirs(dir)?;
    std::os::unix::fs::chown(dir, Some(perms.uid), Some(perms.gid))
        .with_context(|| format!("cannot chown {}", dir.display()))?;
    fs::set_permissions(dir, Permissions::from_mode(perms.mode))
        .with_context(|| format!("cannot chmod {}", dir.display()))
}

/// Replace `path` atomically with `data`. The temporary file is created 0600,
/// so a secret is never readable by others, even briefly.
pub fn write_atomic(path: &Path, data: &[u8], perms: Option<Perms>) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    create_dirs(dir)?;
    let tmp = tmp_path(path)?;
    let write = || -> io::Result<()> {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        if let Some(p) = perms {
            std::os::unix::fs::fchown(&f, Some(p.uid), Some(p.gid))?;
            // After chown, which clears set-id bits.
            f.set_permissions(Permissions::from_mode(p.mode))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    sync_dir(dir)
}

/// Overwrite a file with zeros in place, flush it to the medium, then delete
/// it. Returns the number of bytes scrubbed (0 when there was no file).
pub fn scrub(path: &Path) -> Result<u64> {
    let mut f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let len = f
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])
            .with_context(|| format!("cannot overwrite {}", path.display()))?;
        left -= n as u64;
    }
    f.sync_all()
        .with_context(|| format!("cannot flush {}", path.display()))?;
    drop(f);
    fs::remove_file(path).with_context(|| format!("cannot delete {}", path.display()))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(len)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and size of a file.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&h.finalize()), size))
}

/// A copy whose content did not match what the bundle pinned.
#[derive(Debug, thiserror::Error)]
#[error(
    "{source_path} does not match the bundle: its sha256 is {actual} ({actual_size} bytes), \
     the bundle expects {expected} ({expected_size} bytes). Nothing was installed. \
     The card is damaged or the file was replaced: rebuild the image with `picluster build` \
     and flash it again"
)]
pub struct ChecksumMismatch {
    pub source_path: String,
    pub actual: String,
    pub actual_size: u64,
    pub expected: String,
    pub expected_size: u64,
}

/// How [`install_verified`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// `dest` already held the expected content.
    AlreadyThere,
    Copied,
}

/// Copy `src` to `dest` if `dest` does not already hold content with digest
/// `sha256`, hashing while copying; on a mismatch nothing is left behind.
pub fn install_verified(
    src: &Path,
    dest: &Path,
    sha256: &str,
    size: u64,
    perms: Perms,
) -> Result<Installed> {
    let in_place =
        sha256_file(dest).is_ok_and(|(sum, len)| sum.eq_ignore_ascii_case(sha256) && len == size);
    if in_place {
        ensure_perms(dest, perms)?;
        return Ok(Installed::AlreadyThere);
    }
    let mut input = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    create_dirs(dir)?;
    let tmp = tmp_path(dest)?;
    let _ = fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1024 * 1024];
        let mut len = 0u64;
        loop {
            let n = input
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", src.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            len += n as u64;
        }
        let actual = hex(&h.finalize());
        if !actual.eq_ignore_ascii_case(sha256) || len != size {
            return Err(ChecksumMismatch {
                source_path: src.display().to_string(),
                actual,
                actual_size: len,
                expected: sha256.to_string(),
                expected_size: size,
            }
            .into());
        }
        std::os::unix::fs::fchown(&out, Some(perms.uid), Some(perms.gid))
            .with_context(|| format!("cannot chown {}", tmp.display()))?;
        out.set_permissions(Permissions::from_mode(perms.mode))
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        out.sync_all()
            .with_context(|| format!("cannot flush {}", tmp.display()))?;
        fs::rename(&tmp, dest)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)?;
    Ok(Installed::Copied)
}

/// Give an existing file exactly `perms`.
pub fn ensure_perms(path: &Path, perms: Perms) -> Result<()> {
    std::os::unix::fs::chown(path, Some(perms.uid), Some(perms.gid))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    fs::set_permissions(path, Permissions::from_mode(perms.mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Read a file that may be missing.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret");
        write_atomic(&path, b"one", Some(Perms::root(0o600))).unwrap();
        write_atomic(&path, b"two", Some(Perms::root(0o640))).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["secret"]);
        assert_eq!(
            fs::metadata(dir.path().join("a")).unwrap().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn scrub_zeroes_the_bytes_before_unlinking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(&path, b"token-abc").unwrap();
        // A second name for the same inode shows what the file held at the end.
        let witness = dir.path().join("witness");
        fs::hard_link(&path, &witness).unwrap();
        assert_eq!(scrub(&path).unwrap(), 9);
        assert!(!path.exists());
        assert_eq!(fs::read(&witness).unwrap(), vec![0u8; 9]);
        assert_eq!(scrub(&path).unwrap(), 0);
    }

    #[test]
    fn verified_install_refuses_a_mismatch_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k3s-arm64");
        fs::write(&src, b"binary").unwrap();
        let (sum, size) = sha256_file(&src).unwrap();
        let dest = dir.path().join("bin/k3s");
        let err =
            install_verified(&src, &dest, &"0".repeat(64), size, Perms::root(0o755)).unwrap_err();
        let mismatch = err.downcast_ref::<ChecksumMismatch>().unwrap();
        assert_eq!(mismatch.actual, sum);
        assert!(err.to_string().contains("Nothing was installed"));
        assert_eq!(fs::read_dir(dir.path().join("bin")).unwrap().count(), 0);

        let ok = install_verified(&src, &dest, &sum, size, Perms::root(0o755)).unwrap();
        assert_eq!(ok, Installed::Copied);
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o755);
        let again = install_verified(&src, &dest, &sum, size, Perms::root(0o755)).unwrap();
        assert_eq!(again, Installed::AlreadyThere);
    }
}
