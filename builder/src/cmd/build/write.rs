//! Writing a build's outputs: raw images (the root partition read once and
//! written to every image) or compressed artefacts (the shared part
//! compressed once), each with its bmap, staged and published together with
//! `SHA256SUMS` and `build.json`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use picluster_profiles::Node;
use picluster_profiles::render;

use super::{BuildRecord, IMAGE_MODE, Output, Prepared, file_name};
use crate::assemble;
use crate::atomic::{self, Staged};
use crate::bootfiles;
use crate::compress::{self, Compress};
use crate::digest;
use crate::progress;

/// A node's image as its own head plus the cached base (see [`Prepared::node_head`]).
pub struct NodeHead {
    /// Holds the image's bytes before `split`.
    pub head: Staged,
    /// Holds them from `split` on.
    pub base: File,
    pub split: u64,
    pub bmap: crate::bmap::Bmap,
}

impl Prepared {
    /// Build `nodes` into `out`: every file staged, then published together.
    pub fn build(&self, out: &Path, nodes: &[&Node], how: Compress) -> Result<Vec<Output>> {
        fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let lock_path = out.join(".picluster-build.lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("cannot write in {}", out.display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another picluster build is writing to {}; wait for it to finish",
                out.display()
            );
        }
        remove_stale_staging(out);
        check_space(out, &self.obtained.raw, nodes.len(), how)?;
        let base = File::open(&self.obtained.raw)
            .with_context(|| format!("cannot open {}", self.obtained.raw.display()))?;
        let (staged, outputs) = if how == Compress::None {
            self.build_raw(out, &base, nodes)?
        } else {
            self.build_compressed(out, &base, nodes, how)?
        };

        // All nodes built: publish together.
        for s in staged {
            let dest = s.dest().to_path_buf();
            s.commit()
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
        write_sums(out, &outputs)?;
        let record = BuildRecord {
            picluster_version: env!("CARGO_PKG_VERSION"),
            source_date_epoch: self.epoch,
            inputs: &self.record,
            outputs: &outputs,
        };
        let mut json = serde_json::to_vec_pretty(&record)?;
        json.push(b'\n');
        atomic::write(&out.join("build.json"), &json, 0o644).context("cannot write build.json")?;
        // The lock file stays: unlinking it while another build waits on it
        // would let a third lock a new file while the second holds the old.
        drop(lock);
        Ok(outputs)
    }

    /// Raw images: each node's head patched, then the shared root partition
    /// read once, written to every image and hashed with it.
    fn build_raw(
        &self,
        out: &Path,
        base: &File,
        nodes: &[&Node],
    ) -> Result<(Vec<Staged>, Vec<Output>)> {
        // Everything before the root partition differs per node; the rest is the base's.
        let split = self.base.root.start;
        let mut raws = Vec::new();
        let mut reflinked = Vec::new();
        for node in nodes {
            let raw = Staged::new(&out.join(format!("{}.img", node.name)))?;
            raw.set_mode(IMAGE_MODE)?;
            let shared = assemble::start_image(base, raw.file(), split)
                .context("cannot copy the base image")
                .and_then(|shared| self.patch_head(raw.file(), node).map(|()| shared))
                .with_context(|| format!("cannot build the image of {}", node.name))?;
            raws.push(raw);
            reflinked.push(shared);
        }
        let t = Instant::now();
        let len = base.metadata()?.len();
        let bar = progress::bytes(len - split, "root filesystems");
        let images: Vec<assemble::Image> = raws
            .iter()
            .zip(&reflinked)
            .map(|(r, &reflinked)| assemble::Image {
                file: r.file(),
                reflinked,
            })
            .collect();
        let digests = assemble::finish_images(base, split, &images, true, &bar)
            .context("cannot write the root partitions")?;
        bar.finish_and_clear();
        progress::step(format!(
            "root filesystem: {} into {} image(s) in {:.1}s",
            if reflinked.iter().all(|r| *r) {
                "shared (reflink)"
            } else {
                "copied"
            },
            nodes.len(),
            t.elapsed().as_secs_f64()
        ));
        let mut staged = Vec::new();
        let mut outputs = Vec::new();
        for ((node, raw), digest) in nodes.iter().zip(raws).zip(digests) {
            let name = format!("{}.img", node.name);
            let image_size = raw.file().metadata()?.len();
            let bmap = self
                .write_bmap(out, &name, &raw)
                .with_context(|| format!("cannot build the image of {}", node.name))?;
            let sha256 = digest.expect("raw images are hashed while written");
            outputs.push(self.output(
                node,
                name,
                Compress::None,
                image_size,
                image_size,
                sha256,
                &bmap,
            ));
            staged.extend([raw, bmap]);
        }
        Ok((staged, outputs))
    }

    /// Compressed artefacts: the base's tail compressed once (or found in
    /// the cache), each node's head compressed and joined to it. No raw node
    /// image is written.
    fn build_compressed(
        &self,
        out: &Path,
        base: &File,
        nodes: &[&Node],
        how: Compress,
    ) -> Result<(Vec<Staged>, Vec<Output>)> {
        let split = self.base.root.start;
        let len = base.metadata()?.len();
        let stats = compress::Stats::default();
        let threads = compress::threads();
        let t = Instant::now();
        let bar = progress::bytes(len - split, "compress shared root filesystem");
        let enc = compress::Encoder {
            how,
            threads,
            stats: &stats,
            bar: &bar,
        };
        let key = compress::TailKey {
            base_sha256: self.obtained.source_sha256.clone(),
            start: split,
            end: len,
        };
        let tail = compress::Tail::load_or_make(self.cache.root(), &key, base, &enc)
            .context("cannot compress the base image's root partition")?;
        bar.finish_and_clear();
        progress::step(format!(
            "root filesystem: {} {} ({}) in {:.1}s",
            if tail.hit {
                "compressed earlier, from the cache:"
            } else {
                "compressed once for every node:"
            },
            progress::size(tail.compressed_len),
            how.suffix().trim_start_matches(".img."),
            t.elapsed().as_secs_f64()
        ));
        let tail_pieces = (len - split).div_ceil(compress::PIECE);
        let mut staged = Vec::new();
        let mut outputs = Vec::new();
        for node in nodes {
            let name = format!("{}{}", node.name, how.suffix());
            let (files, output) = self
                .compressed_node(out, base, node, &name, how, &tail, &stats, threads)
                .with_context(|| format!("cannot build the image of {}", node.name))?;
            progress::step(format!(
                "{}: {} ({})",
                node.name,
                output.file,
                progress::size(output.size)
            ));
            staged.extend(files);
            outputs.push(output);
        }
        progress::step(format!(
            "compression: {} piece(s) of {} compressed, {} reused, {} from the cache",
            stats.encoded(),
            progress::size(compress::PIECE),
            stats.reused(),
            if tail.hit { tail_pieces } else { 0 },
        ));
        Ok((staged, outputs))
    }

    #[allow(clippy::too_many_arguments)]
    fn compressed_node(
        &self,
        out: &Path,
        base: &File,
        node: &Node,
        name: &str,
        how: Compress,
        tail: &compress::Tail,
        stats: &compress::Stats,
        threads: usize,
    ) -> Result<(Vec<Staged>, Output)> {
        let split = self.base.root.start;
        let image_size = base.metadata()?.len();
        let head = self.head_file(out, base, node)?;
        let bmap = self.write_bmap(out, name, &head)?;
        let artefact = Staged::new(&out.join(name))?;
        artefact.set_mode(IMAGE_MODE)?;
        let bar = progress::bytes(split, format!("compress {}", node.name));
        let enc = compress::Encoder {
            how,
            threads,
            stats,
            bar: &bar,
        };
        let (sha256, size) =
            compress::write_artefact(&enc, head.file(), split, tail, artefact.file())
                .with_context(|| format!("cannot compress {name}"))?;
        bar.finish_and_clear();
        drop(head); // removes the head file
        let output = self.output(node, name.to_string(), how, size, image_size, sha256, &bmap);
        Ok((vec![artefact, bmap], output))
    }

    /// The node's head (partition table, patched boot partition) in a sparse
    /// temporary file in `dir`, as long as the image: its bmap reads the head,
    /// and its root partition is never written. Removed when dropped.
    fn head_file(&self, dir: &Path, base: &File, node: &Node) -> Result<Staged> {
        let head = Staged::new(&dir.join(format!("{}.head", node.name)))?;
        head.set_mode(IMAGE_MODE)?;
        head.file().set_len(base.metadata()?.len())?;
        crate::copy::sparse_copy_range(base, head.file(), 0, self.base.root.start)
            .context("cannot copy the base image")?;
        self.patch_head(head.file(), node)?;
        Ok(head)
    }

    /// A node's whole image without writing one: its head in a temporary
    /// file in `dir` and, from the root partition on, the cached base.
    pub fn node_head(&self, dir: &Path, node: &Node) -> Result<NodeHead> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let base = File::open(&self.obtained.raw)
            .with_context(|| format!("cannot open {}", self.obtained.raw.display()))?;
        let head = self
            .head_file(dir, &base, node)
            .with_context(|| format!("cannot build the image of {}", node.name))?;
        let bmap = self
            .root_ranges
            .node_bmap(head.file(), head.path())
            .context("cannot map the image's used blocks")?;
        Ok(NodeHead {
            head,
            base,
            split: self.base.root.start,
            bmap,
        })
    }

    /// Patch the node's boot partition in `image` (which holds the base's head).
    fn patch_head(&self, image: &File, node: &Node) -> Result<()> {
        let (bundle, node_secrets) =
            render::render_node(&self.cluster, &self.secrets, node, &self.render)?;
        let files = bootfiles::boot_files(
            Some(&self.base),
            &self.cluster,
            node,
            &bundle,
            &node_secrets,
            &self.payload,
        );
        bootfiles::write(image, self.base.boot, &files, self.epoch)
            .context("cannot patch the boot partition")
    }

    /// The block map of the raw image `image` holds the head of, named for
    /// the artefact `name` it describes (bmaptool's own lookup): after a build
    /// with another --compress, each artefact still has its own bmap.
    fn write_bmap(&self, out: &Path, name: &str, image: &Staged) -> Result<Staged> {
        let bmap = Staged::new(&out.join(format!("{name}.bmap")))?;
        bmap.set_mode(0o644)?;
        let map = self
            .root_ranges
            .node_bmap(image.file(), image.path())
            .context("cannot map the image's used blocks")?;
        std::io::Write::write_all(&mut bmap.file(), map.to_xml().as_bytes())?;
        Ok(bmap)
    }

    #[allow(clippy::too_many_arguments)]
    fn output(
        &self,
        node: &Node,
        file: String,
        how: Compress,
        size: u64,
        image_size: u64,
        sha256: String,
        bmap: &Staged,
    ) -> Output {
        Output {
            node: node.name.clone(),
            role: node.role.as_str().to_string(),
            compression: how,
            size,
            sha256,
            image_size,
            bmap: file_name(bmap.dest()),
            inputs_sha256: self.inputs_sha256(node, how),
            file,
        }
    }
}

/// Write SHA256SUMS: this build's outputs, plus entries of earlier builds whose
/// files are still there and were not rebuilt now.
fn write_sums(out: &Path, outputs: &[Output]) -> Result<()> {
    let path = out.join("SHA256SUMS");
    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(old) = fs::read_to_string(&path) {
        for line in old.lines() {
            if let Some((d, f)) = line.split_once("  ")
                && out.join(f).is_file()
            {
                sums.insert(f.to_string(), d.to_string());
            }
        }
    }
    for o in outputs {
        sums.insert(o.file.clone(), o.sha256.clone());
        let bmap = digest::file_sha256(&out.join(&o.bmap))
            .with_context(|| format!("cannot read {}", o.bmap))?;
        sums.insert(o.bmap.clone(), bmap.0);
    }
    let text: String = sums.iter().map(|(f, d)| format!("{d}  {f}\n")).collect();
    atomic::write(&path, text.as_bytes(), 0o644).context("cannot write SHA256SUMS")
}

/// Staging files a killed build left (`.<name>.XXXXXX.partial`): with the
/// build lock held no other build is writing them, and each may be gigabytes.
fn remove_stale_staging(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".partial") {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Fail early, before writing gigabytes, when the output filesystem is too small.
/// Raw images each hold what the base holds; compressed builds write a head
/// per node and artefacts smaller than the base's data (a generous bound).
fn check_space(out: &Path, raw: &Path, nodes: usize, how: Compress) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let used = fs::metadata(raw)?.blocks() * 512;
    let need = match how {
        Compress::None => used.saturating_mul(nodes as u64 + 1),
        _ => used.saturating_mul(2),
    };
    let st = rustix::fs::statvfs(out)
        .with_context(|| format!("cannot check free space in {}", out.display()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < need {
        bail!(
            "{} has {} free but {} node image(s) need about {}; free some space or use --out on a larger disk",
            out.display(),
            progress::size(free),
            nodes,
            progress::size(need)
        );
    }
    Ok(())
}
