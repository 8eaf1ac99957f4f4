//! `picluster flash`: write an image to an SD card or NVMe drive. With
//! `--node NAME` the node's image is reused from the output directory when
//! everything it is made from is unchanged; otherwise it is streamed from the
//! cached base and the node's freshly made boot partition, without writing a
//! full-size image file first.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::build::{Output, Prepared, out_dir, prepare, select_nodes};
use crate::compress::Compress;
use crate::flash::{self, FlashOptions};
use crate::progress;

#[derive(Debug, clap::Args)]
#[command(after_help = flash::AFTER_HELP)]
pub struct FlashCmd {
    /// Build (or reuse) this node's image and flash it; then give only DEVICE.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The cluster file (with --node).
    #[arg(short, long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Where node images are built (with --node) [default: images/ beside the cluster file].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// IMAGE DEVICE, or DEVICE alone with --node. IMAGE may be .img, .img.xz, .img.gz or .img.zst;
    /// DEVICE is a whole disk, e.g. /dev/sdb, /dev/mmcblk0, /dev/nvme0n1.
    #[arg(num_args = 1..=2, required = true, value_name = "IMAGE|DEVICE")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub opts: FlashOptions,
}

pub fn run(args: &FlashCmd) -> Result<()> {
    let (summary, device) = match (&args.node, args.paths.as_slice()) {
        (None, [image, device]) => (flash::run_image(image, device, &args.opts)?, device),
        (Some(node), [device]) => (flash_node(args, node, device)?, device),
        (None, [_]) => return Err(usage("give IMAGE and DEVICE, or --node NAME and DEVICE")),
        (Some(_), _) => {
            return Err(usage(
                "with --node give only the DEVICE (the image is the node's)",
            ));
        }
        _ => unreachable!("clap allows one or two paths"),
    };
    progress::step(format!(
        "{}: wrote {} of {} ({} mapped){}",
        device.display(),
        progress::size(summary.bytes_written),
        progress::size(summary.image_size),
        progress::size(summary.mapped_bytes),
        if summary.verify_time.is_some() {
            ", verified"
        } else {
            ""
        }
    ));
    Ok(())
}

fn usage(msg: &str) -> anyhow::Error {
    flash::FlashError::Usage(format!("{msg}; see `picluster flash --help`")).into()
}

/// Flash the node's raw image in `args.out` when its recorded inputs match;
/// else its head made now (in `args.out`, removed afterwards) and the cached base.
fn flash_node(args: &FlashCmd, name: &str, device: &Path) -> Result<flash::Summary> {
    let prepared = prepare(&args.config, None, None, &[name.to_string()])?;
    let node = *select_nodes(&prepared.cluster, &[name.to_string()])?
        .first()
        .expect("one node selected");
    let out = out_dir(args.out.as_deref(), &args.config);
    let image = out.join(format!("{name}.img"));
    if let Some(o) = reusable(&prepared, &out, node, &image) {
        progress::step(format!(
            "{name}: reusing {} (inputs unchanged since it was built)",
            image.display()
        ));
        debug_assert_eq!(o.file, format!("{name}.img"));
        return flash::run_image(&image, device, &args.opts);
    }
    let made = prepared.node_head(&out, node)?;
    let head = made
        .head
        .file()
        .try_clone()
        .context("cannot reopen the node's boot partition")?;
    let img = flash::source::two_files(Path::new(name), head, made.base, made.split, &made.bmap);
    let summary = flash::run_two_files(img, device, &args.opts);
    drop(made.head); // the temporary head, with the node's secrets, goes now
    summary
}

fn reusable(
    p: &Prepared,
    out: &Path,
    node: &picluster_profiles::Node,
    image: &Path,
) -> Option<Output> {
    #[derive(serde::Deserialize)]
    struct Record {
        outputs: Vec<Output>,
    }
    let text = std::fs::read_to_string(out.join("build.json")).ok()?;
    let record: Record = serde_json::from_str(&text).ok()?;
    let want = p.inputs_sha256(node, Compress::None);
    let o = record.outputs.into_iter().find(|o| {
        o.node == node.name && o.compression == Compress::None && o.inputs_sha256 == want
    })?;
    let len = std::fs::metadata(image).ok()?.len();
    (len == o.size && out.join(&o.bmap).is_file()).then_some(o)
}
