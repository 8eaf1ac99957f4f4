//! `picluster flash IMAGE DEVICE`: write an image to an SD card or NVMe drive,
//! only the blocks that matter, read back and verified, never to the wrong
//! disk.
//!
//! Order of work (each step only if the one before succeeded):
//! 1. Check DEVICE: a whole-disk block device (a regular file only with
//!    `--allow-regular-file`), not holding `/`, `/boot`, `/boot/firmware`,
//!    `/boot/efi` or swap, no partition mounted or held (`holders/`), and
//!    open it `O_EXCL`; then no smaller than the image.
//! 2. Decide what to write (see [`source`]): a bmap's ranges, the ranges
//!    computed from a raw image's filesystems, or a compressed image whole.
//! 3. Show the disk (model, size, transport, removable, partitions) and ask
//!    for `yes` unless `--yes`; without a terminal and without `--yes`, stop.
//! 4. Zero the first MiB (and an old backup GPT) and sync: from here on an
//!    interrupted flash leaves a disk with no partition table, which no
//!    firmware will try to boot.
//! 5. Write the mapped ranges except the first MiB, sync, and read them back
//!    (O_DIRECT) comparing SHA-256 per range.
//! 6. Write the first MiB, sync, verify it, and ask the kernel to re-read the
//!    partition table (BLKRRPART, retried).
//!
//! Exit codes ([`exit_code`]): 0 done; 1 error (I/O, bad image or bmap);
//! 2 usage; 3 target refused by a safety check; 4 not confirmed;
//! 5 verification failed.

mod buf;
pub mod device;
pub mod discard;
pub mod signatures;
pub mod source;
pub mod verify;
pub mod writer;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use crate::decompress::Compression;
use crate::partition;
use crate::progress;

/// Failures with their own exit code; everything else exits 1.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// A safety check refused the target (exit 3).
    #[error("refusing to flash: {0}")]
    Refused(String),
    /// The user did not confirm, or could not be asked (exit 4).
    #[error("{0}")]
    NotConfirmed(String),
    /// Read-back differs from what was written (exit 5).
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// Ctrl-C (exit 130): the message says how to finish.
    #[error("{0}")]
    Interrupted(String),
    /// The command line does not say what to flash where (exit 2, like clap's).
    #[error("{0}")]
    Usage(String),
}

impl FlashError {
    pub fn exit_code(&self) -> i32 {
        match self {
            FlashError::Refused(_) => 3,
            FlashError::NotConfirmed(_) => 4,
            FlashError::Mismatch(_) => 5,
            FlashError::Interrupted(_) => 130,
            FlashError::Usage(_) => 2,
        }
    }

    /// Stopped by Ctrl-C while writing `device`.
    pub fn interrupted(device: &Path) -> FlashError {
        FlashError::Interrupted(format!(
            "interrupted (Ctrl-C): {} was left without a partition table, so it will not boot half-written; run the same command again to flash it",
            device.display()
        ))
    }
}

/// The process exit code for an error returned by [`run`] or [`run_image`].
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if crate::interrupt::caused(err) {
        return 130;
    }
    err.chain()
        .find_map(|e| e.downcast_ref::<FlashError>())
        .map_or(1, FlashError::exit_code)
}

pub const AFTER_HELP: &str = "\
Only the blocks in use are written (from IMAGE.bmap if present, else computed from the \
image's FAT and ext4 allocation maps; a compressed image without a bmap is written whole). \
The first MiB, holding the partition table, is written last, so an interrupted flash \
leaves a card that does not boot half-written.

Disks carrying an LVM, RAID, LUKS or ZFS signature are refused unless --force. \
--discard tells the card the blocks the image does not use are free (or zeroes \
them), so no old data stays readable there.

Exit codes: 0 done, 1 error, 2 usage, 3 target refused by a safety check, \
4 not confirmed, 5 verification failed, 130 interrupted (Ctrl-C).";

/// Options shared by every way of naming the image (`IMAGE` or `--node`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FlashOptions {
    /// Do not ask for confirmation (needed when not run from a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Skip reading the device back after writing
    #[arg(long)]
    pub no_verify: bool,
    /// Block map to use instead of IMAGE.bmap beside the image
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,
    /// Flash even a disk that carries LVM, RAID, LUKS or ZFS data
    #[arg(long)]
    pub force: bool,
    /// Discard (or zero) every block the image does not use, so the card
    /// keeps no old data in its free space
    #[arg(long)]
    pub discard: bool,
    /// Allow DEVICE to be an existing regular file (for tests; skips the
    /// block-device checks)
    #[arg(long)]
    pub allow_regular_file: bool,
}

/// What a flash did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub image_size: u64,
    /// Bytes the plan maps (what a flash must write).
    pub mapped_bytes: u64,
    /// Bytes actually written, including the wipe of the old table.
    pub bytes_written: u64,
    pub write_time: Duration,
    pub verify_time: Option<Duration>,
    /// Whether the kernel re-read the new partition table.
    pub reread: bool,
}

/// Flash `image` to `device`. `picluster flash --node NAME` builds the node's
/// image and calls this with its path.
pub fn run_image(image: &Path, device: &Path, opts: &FlashOptions) -> Result<Summary> {
    run_with(image, device, opts, &device::System::default())
}

/// [`run_image`] against a given view of the system (tests).
pub fn run_with(
    image: &Path,
    device: &Path,
    opts: &FlashOptions,
    sys: &device::System,
) -> Result<Summary> {
    let opened = device::open_target(device, opts.allow_regular_file, sys)?;
    let img = source::open(image, opts.bmap.as_deref())?;
    run_source(img, opened, device, opts)
}

/// Flash an image that is not one file (see [`source::two_files`]).
pub fn run_two_files(img: source::Image, device: &Path, opts: &FlashOptions) -> Result<Summary> {
    let opened = device::open_target(device, opts.allow_regular_file, &device::System::default())?;
    run_source(img, opened, device, opts)
}

fn run_source(
    img: source::Image,
    opened: device::Opened,
    device: &Path,
    opts: &FlashOptions,
) -> Result<Summary> {
    let image = img.path.clone();
    let (dev, dev_size, target) = (&opened.file, opened.size, &opened.target);
    if dev_size < img.min_size {
        return Err(too_small(device, dev_size, &img).into());
    }
    let old = partition::read_table(dev, device, dev_size);
    // A GPT we refuse to read (crafted, corrupt) still has a backup at the
    // end of the disk that must go with it.
    let old_gpt = matches!(&old, Ok(t) if t.kind == partition::TableKind::Gpt)
        || matches!(&old, Err(partition::TableError::Gpt { .. }));
    let old_table = old.ok();
    let held = signatures::scan(dev, dev_size, old_table.as_ref());

    // What is about to happen, and consent.
    let mut err = std::io::stderr().lock();
    match &target.disk {
        Some(d) => {
            let _ = writeln!(
                err,
                "Target {}: {}, {}, {}, {}",
                device.display(),
                d.model,
                progress::size(dev_size),
                d.transport,
                if d.removable {
                    "removable"
                } else {
                    "NOT removable"
                }
            );
            let parts = device::describe_partitions(dev, target, dev_size);
            if parts.is_empty() {
                let _ = writeln!(err, "  no partitions");
            }
            for p in parts {
                let _ = writeln!(err, "  {p}");
            }
            for f in &held {
                let _ = writeln!(err, "  holds {f}");
            }
        }
        None => {
            let _ = writeln!(err, "Target {} (a regular file)", device.display());
        }
    }
    let _ = writeln!(
        err,
        "Image {}: {}{}, {} to write",
        image.display(),
        img.size.map_or_else(
            || format!("at least {}", progress::size(img.min_size)),
            progress::size
        ),
        match img.format {
            Compression::None => String::new(),
            f => format!(" ({})", f.label()),
        },
        progress::size(img.mapped_bytes())
    );
    match &img.plan {
        source::PlanSource::Bmap(b) => {
            let _ = writeln!(err, "  blocks from {}", b.display());
        }
        source::PlanSource::Built => {
            let _ = writeln!(
                err,
                "  made now from the cached base and the node's boot partition (no image file written)"
            );
        }
        source::PlanSource::Computed(parts) => {
            for p in parts {
                let _ = writeln!(err, "  {p}");
            }
        }
        source::PlanSource::Whole => {
            let _ = writeln!(
                err,
                "  no .bmap beside the compressed image: writing every block"
            );
        }
    }
    drop(err);
    let guarded: Vec<String> = held
        .iter()
        .filter(|f| f.kind.guarded())
        .map(|f| f.to_string())
        .collect();
    if !guarded.is_empty() && !opts.force {
        return Err(FlashError::Refused(format!(
            "{} holds {}: data of a volume manager or an encrypted container, rarely a card; if you really mean to destroy it, add --force",
            device.display(),
            guarded.join(", ")
        ))
        .into());
    }
    confirm(device, opts.yes)?;

    let started = Instant::now();
    let mut bytes_written = writer::wipe(dev, device, dev_size, old_gpt)?;
    let wbar = progress::bytes(img.mapped_bytes(), "writing");
    // O_DIRECT where the device (or file system) allows it.
    let direct = device::reopen(&opened, true, nix::libc::O_DIRECT).ok();
    let written = writer::write_body(
        &img,
        dev,
        direct.as_ref(),
        device,
        dev_size,
        !opts.no_verify,
        &wbar,
    )?;
    if let Some(d) = &direct {
        d.sync_data()
            .with_context(|| format!("cannot flush {}", device.display()))?;
    }
    drop(direct);
    dev.sync_data()
        .with_context(|| format!("cannot flush {}", device.display()))?;
    wbar.finish_and_clear();
    bytes_written += written.bytes_written;
    let mut write_time = started.elapsed();

    let mut verify_time = None;
    if !opts.no_verify {
        let t = Instant::now();
        let total: u64 = written.body.iter().map(|u| u.extent.len).sum();
        let vbar = progress::bytes(total, "verifying");
        verify::verify(&opened, &written.body, &vbar)?;
        vbar.finish_and_clear();
        verify_time = Some(t.elapsed());
    }
    if opts.discard {
        let mapped: Vec<partition::Extent> = match &img.ranges {
            Some(r) => r.iter().map(|(e, _)| *e).collect(),
            None => vec![partition::Extent {
                start: 0,
                len: written.image_size,
            }],
        };
        let free = discard::unmapped(&mapped, writer::HEAD, dev_size);
        let total = free.iter().map(|e| e.len).sum();
        let dbar = progress::bytes(total, "discarding");
        let how = discard::discard(dev, device, target.disk.is_some(), &free, &dbar)?;
        dbar.finish_and_clear();
        progress::step(format!(
            "{}: {how} {} the image does not use",
            device.display(),
            progress::size(total)
        ));
    }

    let t = Instant::now();
    bytes_written += writer::write_head(dev, device, &written.head)?;
    write_time += t.elapsed();
    if !opts.no_verify {
        let t = Instant::now();
        verify::verify(&opened, &written.head_units, &ProgressBar::hidden())?;
        verify_time = verify_time.map(|v| v + t.elapsed());
    }
    let reread = if target.disk.is_some() {
        match writer::reread_partitions(dev) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "warning: the kernel did not re-read the partition table of {} ({e}); unplug and replug the card before using it",
                    device.display()
                );
                false
            }
        }
    } else {
        false
    };
    drop(opened);

    let summary = Summary {
        image_size: written.image_size,
        mapped_bytes: img.mapped_bytes(),
        bytes_written,
        write_time,
        verify_time,
        reread,
    };
    eprintln!(
        "Wrote {} of the {} image to {} in {:.1} s ({}/s){}.",
        progress::size(summary.bytes_written),
        progress::size(summary.image_size),
        device.display(),
        write_time.as_secs_f64(),
        progress::size((summary.bytes_written as f64 / write_time.as_secs_f64().max(1e-3)) as u64),
        match verify_time {
            Some(v) => format!("; verified in {:.1} s", v.as_secs_f64()),
            None => "; not verified (--no-verify)".into(),
        }
    );
    Ok(summary)
}

fn too_small(device: &Path, size: u64, img: &source::Image) -> FlashError {
    FlashError::Refused(format!(
        "{} holds {} ({size} bytes) but the image {} needs {} ({} bytes); use a larger card or drive",
        device.display(),
        progress::size(size),
        img.path.display(),
        progress::size(img.min_size),
        img.min_size
    ))
}

/// Ask on the terminal; refuse without one unless `--yes`.
fn confirm(device: &Path, yes: bool) -> Result<(), FlashError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(FlashError::NotConfirmed(format!(
            "not flashing {}: no terminal to confirm on; pass --yes to flash without asking",
            device.display()
        )));
    }
    eprint!(
        "Everything on {} will be overwritten. Type \"yes\" to continue: ",
        device.display()
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(FlashError::NotConfirmed(format!(
            "not flashing {}: not confirmed",
            device.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Interrupted;

    #[test]
    fn ctrl_c_exits_130_wherever_it_was_noticed() {
        let direct = anyhow::Error::from(Interrupted).context("cannot build");
        let in_io = anyhow::Error::from(std::io::Error::other(Interrupted)).context("copying");
        let in_fetch = anyhow::Error::from(crate::fetch::FetchError::from(Interrupted));
        let flash = anyhow::Error::from(FlashError::interrupted(Path::new("/dev/sdz")));
        for e in [direct, in_io, in_fetch, flash] {
            assert_eq!(exit_code(&e), 130, "{e:#}");
        }
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }
}
