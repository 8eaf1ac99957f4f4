//! Compressed artefacts made of pieces: the base's shared bytes compressed
//! once and cached, each node's head compressed on its own, every format a
//! valid single file for the system's own decoders.

mod support;

use std::process::Command;

use support::cluster::{Setup, setup};
use support::*;

const EPOCH: [(&str, &str); 1] = [("SOURCE_DATE_EPOCH", "1750000000")];
/// Piece size of picluster's compressed outputs (builder/src/compress/mod.rs).
const PIECE: u64 = 24 << 20;

fn stderr_of(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{c:?} failed:\n{err}");
    err
}

/// (compressed, reused, from the cache) from the build's compression line.
fn counts(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("compression: "))
        .unwrap_or_else(|| panic!("no compression line in:\n{stderr}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // "compression: N piece(s) of 24.0 MiB compressed, M reused, K from the cache"
    (nums[0], nums[nums.len() - 2], nums[nums.len() - 1])
}

fn root_start(s: &Setup, img: &str) -> u64 {
    let out = run(Command::new("sfdisk").arg("-J").arg(s.path(img)));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .unwrap()
        * 512
}

fn decompressed_sha(tool: &str, file: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{tool} -dc '{}' | sha256sum", file.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} -dc failed");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

#[test]
fn every_format_decodes_to_the_raw_build_and_the_shared_part_is_compressed_once() {
    let s = setup(&["--fill-mib", "40"]);
    let nodes = ["--node", "pi-master", "--node", "pi-worker-1"];
    run(s.build("raw", &nodes).envs(EPOCH));
    let split = root_start(&s, "raw/pi-master.img");
    let len = std::fs::metadata(s.path("raw/pi-master.img"))
        .unwrap()
        .len();
    let head_pieces = split.div_ceil(PIECE);
    let tail_pieces = (len - split).div_ceil(PIECE);

    for (fmt, tool) in [("xz", "xz"), ("gz", "gzip"), ("zst", "zstd")] {
        let out = format!("{fmt}-cold");
        let mut args = nodes.to_vec();
        args.extend(["--compress", fmt]);
        let cold = stderr_of(s.build(&out, &args).envs(EPOCH));
        let (encoded, reused, cached) = counts(&cold);
        // Every piece of the tail and of both heads went through the encoder
        // or was a repeat (zeros); nothing came from the cache.
        assert_eq!(encoded + reused, tail_pieces + 2 * head_pieces, "{cold}");
        assert_eq!(cached, 0, "{cold}");
        assert!(
            encoded < tail_pieces + 2 * head_pieces,
            "repeated pieces are compressed once: {cold}"
        );

        for node in ["pi-master", "pi-worker-1"] {
            let file = s.path(&format!("{out}/{node}.img.{fmt}"));
            run(Command::new(tool).arg("-t").arg(&file));
            assert_eq!(
                decompressed_sha(tool, &file),
                sha256_file(&s.path(&format!("raw/{node}.img"))),
                "{fmt} {node}"
            );
            // `inspect` reads every format (it decompresses to a temporary file).
            let shown = run(s.cmd().arg("inspect").arg(&file));
            assert!(shown.contains("boot partition \"bootfs\""), "{shown}");
            // The bmap describes the raw image the artefact decompresses to.
            assert_eq!(
                std::fs::read(s.path(&format!("{out}/{node}.img.{fmt}.bmap"))).unwrap(),
                std::fs::read(s.path(&format!("raw/{node}.img.bmap"))).unwrap(),
                "{fmt} {node} bmap"
            );
        }
        run(Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(s.path(&out)));
        // bmaptool (bmap-tools 3.6, bmaptools/TransRead.py) pipes .gz/.xz/.zst
        // through gzip (or pigz), xz and zstd, which read every member, block
        // and frame: the copy holds the raw image's mapped blocks.
        let copy = s.path(&format!("{out}/copy.raw"));
        run(Command::new("bmaptool")
            .args(["copy", "--bmap"])
            .arg(s.path(&format!("{out}/pi-master.img.{fmt}.bmap")))
            .arg(s.path(&format!("{out}/pi-master.img.{fmt}")))
            .arg(&copy));
        support::loopdev::cmp_mapped(&s.path("raw/pi-master.img"), &copy);
        std::fs::remove_file(&copy).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(s.path(&out))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial") || n.ends_with(".img"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no raw or head files left: {leftovers:?}"
        );

        // Again, on one thread, into another folder: the tail comes from the
        // cache, only the two heads are compressed, and every byte is the same.
        let warm_out = format!("{fmt}-warm");
        let warm = stderr_of(
            s.build(&warm_out, &args)
                .envs(EPOCH)
                .env("PICLUSTER_THREADS", "1"),
        );
        let (encoded, reused, cached) = counts(&warm);
        assert_eq!(cached, tail_pieces, "{warm}");
        assert_eq!(encoded + reused, 2 * head_pieces, "{warm}");
        for node in ["pi-master", "pi-worker-1"] {
            let name = format!("{node}.img.{fmt}");
            run(Command::new("cmp")
                .arg(s.path(&format!("{out}/{name}")))
                .arg(s.path(&format!("{warm_out}/{name}"))));
        }
        assert_eq!(
            std::fs::read(s.path(&format!("{out}/build.json"))).unwrap(),
            std::fs::read(s.path(&format!("{warm_out}/build.json"))).unwrap()
        );
    }
}

#[test]
fn an_xz_artefact_is_one_stream_whose_blocks_carry_their_sizes() {
    let s = setup(&["--fill-mib", "40"]);
    run(s
        .build("xz", &["--node", "pi-worker-2", "--compress", "xz"])
        .envs(EPOCH));
    let file = s.path("xz/pi-worker-2.img.xz");
    // `xz --robot -lvv`: a "totals" line (streams, blocks, ...) and one
    // "block" line per block whose header flags ("cu": compressed and
    // uncompressed size stored) a threaded decoder needs (xz(1), --robot).
    let out = run(Command::new("xz").args(["--robot", "-lvv"]).arg(&file));
    let totals: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("totals"))
        .unwrap()
        .split('\t')
        .collect();
    assert_eq!(totals[1], "1", "one stream:\n{out}");
    let blocks: Vec<&str> = out.lines().filter(|l| l.starts_with("block")).collect();
    assert!(blocks.len() > 10, "{out}");
    for b in &blocks {
        assert!(b.split('\t').any(|f| f == "cu"), "sizes in the header: {b}");
    }
    // The size against compressing the whole raw image at once with the
    // same settings: the cuts at partition boundaries cost (almost) nothing.
    run(s.build("raw", &["--node", "pi-worker-2"]).envs(EPOCH));
    let whole = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -6 -T2 --block-size={PIECE} -c '{}' | wc -c",
            s.path("raw/pi-worker-2.img").display()
        ))
        .output()
        .unwrap();
    let whole: u64 = String::from_utf8_lossy(&whole.stdout)
        .trim()
        .parse()
        .unwrap();
    let ours = std::fs::metadata(&file).unwrap().len();
    assert!(
        (ours as f64) <= whole as f64 * 1.01 + 4096.0,
        "{ours} bytes vs {whole} for the whole image"
    );
}
