#!/usr/bin/env bash
# Benchmark: compressed CI artefacts for 4 nodes, on the fixture of build.sh
# (2.6 GiB Raspberry Pi OS-shaped image, ~1.6 GiB in use), measured in one run.
#
#   tests/bench/compress.sh [WORKDIR]        (default WORKDIR: target/bench-build)
#
# For each of xz, gz and zst: picluster with 1 node and with 4 nodes (empty
# compressed-piece cache), and 4 nodes again (pieces cached); against
#  (a) per-node compression as it was before pieces: picluster built from
#      BASELINE_REV (default 54a1198, the commit before this work; xz and gz only,
#      it had no zst), and
#  (b) the naive flow: `xz -T0 -6 node.img` for each raw node image.
# Sizes: each artefact against the whole raw image compressed at once by the
# system tool with the same settings (`xz -T0 -6`, `gzip -6`, `zstd -12 -T0`).
# Each time is until the data is on disk (`sync`). Takes ~70 min on 2 cores (and
# ~10 min once to build the baseline).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$repo/target/bench-build}
baseline_rev=${BASELINE_REV:-54a1198}
fill_mib=${BENCH_FILL_MIB:-1500}
mkdir -p "$work"
cd "$work"
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
for t in xz gzip zstd sfdisk; do
  command -v "$t" >/dev/null || { echo "compress.sh: needs $t (apt-get install xz-utils gzip zstd fdisk)" >&2; exit 1; }
done

echo "== fixture"
fixture=fixture
[ "$fill_mib" = 1500 ] || fixture=fixture-$fill_mib
if [ ! -f "$fixture"/base.img.xz ]; then
  mkdir -p "$fixture"
  "$repo/tests/fixtures/make-base-image.sh" "$fixture"/base.img --root-mib 600 --fill-mib "$fill_mib" --xz
fi
echo "base.img: $(stat -c %s "$fixture"/base.img) bytes, $(du -B1 "$fixture"/base.img | cut -f1) in use"

# shellcheck source=./cluster.sh
. "$repo/tests/bench/cluster.sh"
bl=$repo/target/bench-baseline-$baseline_rev
if [ ! -x "$bl/bin/picluster" ] || [ ! -x "$bl/bin/picluster-node" ]; then
  # With its own agent: a picluster embeds only an agent built from its sources.
  echo "building picluster and its agent at $baseline_rev for the per-node baseline (once)"
  rm -rf "$bl" && mkdir -p "$bl"
  git -C "$repo" worktree add --detach "$bl/src" "$baseline_rev" >/dev/null
  (cd "$bl/src" && CARGO_TARGET_DIR="$bl/target" cargo build -q --release -p picluster \
    && CARGO_TARGET_DIR="$bl/target" cargo build -q --release -p picluster-node --target aarch64-unknown-linux-musl)
  mkdir -p "$bl/bin" && cp "$bl/target/release/picluster" "$bl/target/aarch64-unknown-linux-musl/release/picluster-node" "$bl/bin/"
  git -C "$repo" worktree remove --force "$bl/src"
  rm -rf "$bl/target"
fi
before="$bl/bin/picluster"
export PICLUSTER_CACHE_DIR="$work/cache"
base=$fixture/base.img.xz
one=(--node pi-master)
results=$work/compress-results.txt
: > "$results"
timed() { # name, command...: run, sync, record seconds
  local name=$1; shift
  local t0; t0=$(now)
  "$@" >/dev/null
  sync -f "$work"
  local t; t=$(secs "$t0" "$(now)")
  echo "$name $t" | tee -a "$results"
}

# Warm the decompressed base (and the rootfs map) so that every timing below is
# compression only. The baseline keeps its own cache: its rootfs-map format differs.
"$picluster" -q build -c cluster/cluster.toml --base "$base" --out raw >/dev/null
PICLUSTER_CACHE_DIR="$work/cache-before" PICLUSTER_AGENT="$bl/bin/picluster-node" "$before" -q build -c cluster/cluster.toml --base "$base" --out raw-before "${one[@]}" >/dev/null
rm -rf raw-before
echo "== (b) naive: xz -T0 -6 per raw node image"
rm -rf naive && mkdir naive
t0=$(now)
for n in pi-master pi-worker-1 pi-worker-2 pi-worker-3; do
  xz -T0 -6 -c raw/$n.img > naive/$n.img.xz
done
sync -f "$work"
echo "naive-xz-4 $(secs "$t0" "$(now)")" | tee -a "$results"

for fmt in xz gz zst; do
  echo "== $fmt"
  rm -rf "$PICLUSTER_CACHE_DIR/compressed" "out-$fmt-1"
  timed "new-$fmt-1" "$picluster" -q build -c cluster/cluster.toml --base "$base" --out "out-$fmt-1" --compress $fmt "${one[@]}"
  rm -rf "$PICLUSTER_CACHE_DIR/compressed" "out-$fmt"
  timed "new-$fmt-4" "$picluster" -q build -c cluster/cluster.toml --base "$base" --out "out-$fmt" --compress $fmt
  rm -rf "out-$fmt-warm"
  timed "new-$fmt-4-warm" "$picluster" -q build -c cluster/cluster.toml --base "$base" --out "out-$fmt-warm" --compress $fmt
  (cd "out-$fmt" && sha256sum -c --quiet SHA256SUMS)
  cmp "out-$fmt/pi-worker-3.img.$fmt" "out-$fmt-warm/pi-worker-3.img.$fmt"
  if [ "$fmt" != zst ]; then
    rm -rf "before-$fmt"
    timed "before-$fmt-4" env PICLUSTER_CACHE_DIR="$work/cache-before" PICLUSTER_AGENT="$bl/bin/picluster-node" "$before" -q build -c cluster/cluster.toml --base "$base" --out "before-$fmt" --compress $fmt
    rm -rf "before-$fmt"
  fi
  # Sizes against the whole raw image compressed at once.
  for n in pi-master pi-worker-1 pi-worker-2 pi-worker-3; do
    case $fmt in
      xz) whole=$(stat -c %s naive/$n.img.xz) ;;
      gz) [ $n = pi-master ] || continue; whole=$(gzip -6 -c raw/$n.img | wc -c) ;;
      zst) [ $n = pi-master ] || continue; whole=$(zstd -q -12 -T0 -c raw/$n.img | wc -c) ;;
    esac
    echo "size-$fmt-$n $(stat -c %s "out-$fmt/$n.img.$fmt") $whole" | tee -a "$results"
  done
  rm -rf "out-$fmt-1" "out-$fmt-warm"
done

python3 - "$results" <<'PY'
import sys
t, sizes = {}, []
for line in open(sys.argv[1]):
    f = line.split()
    if f[0].startswith("size-"):
        sizes.append((f[0][5:], int(f[1]), int(f[2])))
    else:
        t[f[0]] = float(f[1])
print("\n4-node compressed artefacts, 2.6 GiB image (~1.6 GiB in use), in one run:")
print(f"  (b) naive xz -T0 -6 per node image, 4 nodes: {t['naive-xz-4']:7.1f} s")
for fmt in ["xz", "gz", "zst"]:
    one, four, warm = t[f"new-{fmt}-1"], t[f"new-{fmt}-4"], t[f"new-{fmt}-4-warm"]
    line = f"  {fmt:3}: 1 node {one:6.1f} s, 4 nodes {four:6.1f} s ({four/one:.2f}x of 1, target <= 1.3), cached {warm:6.1f} s"
    if f"before-{fmt}-4" in t:
        a = t[f"before-{fmt}-4"]
        line += f"; (a) per node before: {a:6.1f} s ({a/four:.1f}x slower, target >= 3)"
    if fmt == "xz":
        line += f"; (b) {t['naive-xz-4']/four:.1f}x slower"
    print(line)
for name, ours, whole in sizes:
    print(f"  size {name:18} {ours:>12} B vs whole {whole:>12} B: {100*(ours-whole)/whole:+.2f} % (target within 1 %)")
PY
