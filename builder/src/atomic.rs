//! Writing files so that readers see the old content or the new, never half:
//! a temporary file in the destination directory, fsync, rename, fsync dir.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name beside its destination.
/// Dropped without [`Staged::commit`], it is removed.
pub struct Staged {
    file: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
}

impl Staged {
    pub fn new(dest: &Path) -> io::Result<Staged> {
        let dir = parent(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)?;
        Ok(Staged {
            file: Some(file),
            dest: dest.to_path_buf(),
        })
    }

    /// Permissions the file will have under its final name.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.file()
            .set_permissions(fs::Permissions::from_mode(mode))
    }

    pub fn file(&self) -> &File {
        self.file.as_ref().expect("not committed").as_file()
    }

    pub fn path(&self) -> &Path {
        self.file.as_ref().expect("not committed").path()
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// fsync, give it its final name, and fsync the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("committed once");
        file.as_file().sync_all()?;
        file.persist(&self.dest).map_err(|e| e.error)?;
        sync_dir(parent(&self.dest))
    }
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replace `dest` with `data` atomically, with the given mode.
pub fn write(dest: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let staged = Staged::new(dest)?;
    staged.set_mode(mode)?;
    staged.file().write_all(data)?;
    staged.commit()
}
