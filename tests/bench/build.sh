#!/usr/bin/env bash
# Benchmark: a 4-node build from a ~1.6 GiB-in-use Raspberry Pi OS-shaped image,
# picluster (cold and warm cache) against the naive flow, measured in one run.
#
#   tests/bench/build.sh [--fs xfs] [WORKDIR]     (default WORKDIR: target/bench-build)
#
# With --fs xfs (root, xfsprogs) the outputs and the cache live on a loop-mounted
# XFS with reflinks, as on a workstation with XFS or btrfs: node images then share
# the base's blocks instead of copying them.
#
# Naive baseline, per node: `xz -dc base.img.xz > node.img`, then mtools edits
# of the boot partition (cmdline.txt, config.txt, ssh, the agent, k3s-arm64, the
# bundle files), which is what a careful shell script would do.
# Cold: picluster with an empty cache (decompresses the base once).
# Warm: picluster again (the decompressed base is cached).
# The fixture (2.6 GiB raw, ~1.5 GiB of real program data, xz -T0 -6) is built
# once and reused; building it takes several minutes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
fs=ext4
if [ "${1:-}" = "--fs" ]; then fs=$2; shift 2; fi
work=${1:-$repo/target/bench-build}
mkdir -p "$work"
cd "$work"
if [ "$fs" = xfs ]; then
  command -v mkfs.xfs >/dev/null || { echo "build.sh: --fs xfs needs mkfs.xfs (apt-get install xfsprogs)" >&2; exit 1; }
  mkdir -p xfs
  mountpoint -q xfs || {
    rm -f xfs.img && truncate -s 40G xfs.img && mkfs.xfs -q -m reflink=1 xfs.img && mount -o loop xfs.img xfs
  }
  trap 'umount "$work/xfs" 2>/dev/null; rm -f "$work/xfs.img"' EXIT
  data=$work/xfs
else
  data=$work
fi
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

echo "== fixture"
if [ ! -f fixture/base.img.xz ]; then
  mkdir -p fixture
  "$repo/tests/fixtures/make-base-image.sh" fixture/base.img --root-mib 600 --fill-mib 1500 --xz
fi
used=$(du -B1 fixture/base.img | cut -f1)
echo "base.img: $(stat -c %s fixture/base.img) bytes, $used in use; base.img.xz: $(stat -c %s fixture/base.img.xz) bytes"
xz -lv fixture/base.img.xz | awk '/Streams|Blocks/ {print "  xz " $0}' | head -2

# shellcheck source=./cluster.sh
. "$repo/tests/bench/cluster.sh"
export PICLUSTER_CACHE_DIR="$data/cache"

echo "== naive: xz -dc + mtools, per node"
naive=$data/naive out=$data/out ref=$data/ref
rm -rf "$naive" && mkdir "$naive"
# The files a node's boot partition receives, from picluster's own rendering.
"$picluster" -q build -c cluster/cluster.toml --base fixture/base.img.xz --out "$ref" --node pi-worker-1 >/dev/null
start_p1=$(sfdisk -J fixture/base.img | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"]*512)')
export MTOOLS_SKIP_CHECK=1
mkdir -p files
for f in cmdline.txt config.txt ssh picluster-node.json picluster-secrets.json; do
  mcopy -o -i "$ref/pi-worker-1.img@@$start_p1" "::/$f" "files/$f"
done
t0=$(now)
for node in pi-master pi-worker-1 pi-worker-2 pi-worker-3; do
  xz -dc fixture/base.img.xz > "$naive/$node.img"
  img="$naive/$node.img@@$start_p1"
  mcopy -o -i "$img" files/cmdline.txt files/config.txt files/ssh files/picluster-node.json files/picluster-secrets.json ::/
  mcopy -o -i "$img" "$PICLUSTER_AGENT" ::/picluster-node
  mcopy -o -i "$img" "mirror/$ver/k3s-arm64" ::/k3s-arm64
done
sync -f "$naive"
t_naive=$(secs "$t0" "$(now)")
echo "naive: ${t_naive}s"
rm -rf "$naive" "$ref"

echo "== picluster, cold cache"
rm -rf "$PICLUSTER_CACHE_DIR" "$out"
t0=$(now)
"$picluster" build -c cluster/cluster.toml --base fixture/base.img.xz --out "$out" >/dev/null
sync -f "$out"
t_cold=$(secs "$t0" "$(now)")
echo "cold: ${t_cold}s"

echo "== picluster, warm cache"
rm -rf "$out"
t0=$(now)
"$picluster" build -c cluster/cluster.toml --base fixture/base.img.xz --out "$out" >/dev/null
sync -f "$out"
t_warm=$(secs "$t0" "$(now)")
echo "warm: ${t_warm}s"
(cd "$out" && sha256sum -c --quiet SHA256SUMS)

python3 - "$t_naive" "$t_cold" "$t_warm" "$fs" <<'PY'
import sys
naive, cold, warm = map(float, sys.argv[1:4])
print(f"\n4-node build, 2.6 GiB image (~1.6 GiB in use), outputs on {sys.argv[4]}:")
print(f"  naive (xz -dc + mtools) {naive:7.1f} s   1.0x")
print(f"  picluster, cold cache   {cold:7.1f} s   {naive/cold:4.1f}x faster (target >= 3x)")
print(f"  picluster, warm cache   {warm:7.1f} s   {naive/warm:4.1f}x faster (target >= 10x)")
PY
