//! `picluster flash`: write an image to an SD card or NVMe drive. With
//! `--node NAME` the node's image is built first, or reused from the output
//! directory when everything it is made from is unchanged.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cmd::build::{DEFAULT_OUT, Output, Prepared, prepare, select_nodes};
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
    /// Where node images are built (with --node).
    #[arg(long, default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// IMAGE DEVICE, or DEVICE alone with --node. IMAGE may be .img, .img.xz or .img.gz;
    /// DEVICE is a whole disk, e.g. /dev/sdb, /dev/mmcblk0, /dev/nvme0n1.
    #[arg(num_args = 1..=2, required = true, value_name = "IMAGE|DEVICE")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub opts: FlashOptions,
}

pub fn run(args: &FlashCmd) -> Result<()> {
    let (image, device) = match (&args.node, args.paths.as_slice()) {
        (None, [image, device]) => (image.clone(), device.clone()),
        (Some(node), [device]) => (node_image(args, node)?, device.clone()),
        (None, [_]) => return Err(usage("give IMAGE and DEVICE, or --node NAME and DEVICE")),
        (Some(_), _) => {
            return Err(usage(
                "with --node give only the DEVICE (the image is the node's)",
            ));
        }
        _ => unreachable!("clap allows one or two paths"),
    };
    let summary = flash::run_image(&image, &device, &args.opts)?;
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

/// The node's raw image in `args.out`: reused when its recorded inputs match.
fn node_image(args: &FlashCmd, name: &str) -> Result<PathBuf> {
    let prepared = prepare(&args.config, None, None, &[name.to_string()])?;
    let node = *select_nodes(&prepared.cluster, &[name.to_string()])?
        .first()
        .expect("one node selected");
    let image = args.out.join(format!("{name}.img"));
    if let Some(o) = reusable(&prepared, &args.out, node, &image) {
        progress::step(format!(
            "{name}: reusing {} (inputs unchanged since it was built)",
            image.display()
        ));
        debug_assert_eq!(o.file, format!("{name}.img"));
        return Ok(image);
    }
    prepared.build(&args.out, &[node], Compress::None)?;
    Ok(image)
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
