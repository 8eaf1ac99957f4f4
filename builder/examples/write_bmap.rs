//! Write IMAGE.bmap for a raw image (bmaptool format 2.0), as `picluster
//! build` does beside each node image. Used by tests/bench/flash.sh.
//!
//!   cargo run --release -p picluster --example write_bmap -- IMAGE [OUT.bmap]

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let Some(image) = args.next() else {
        eprintln!("usage: write_bmap IMAGE [OUT.bmap]");
        std::process::exit(2);
    };
    let out = args
        .next()
        .unwrap_or_else(|| PathBuf::from(format!("{}.bmap", image.display())));
    let result = picluster::bmap::Bmap::for_image(&image).and_then(|b| {
        b.write_to(&out)?;
        Ok(b)
    });
    match result {
        Ok(b) => println!(
            "{}: {} of {} bytes mapped",
            out.display(),
            b.mapped_bytes(),
            b.image_size
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
