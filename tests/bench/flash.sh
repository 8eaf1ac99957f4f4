#!/usr/bin/env bash
# Benchmark `picluster flash` against `dd bs=4M conv=fsync` and `bmaptool copy`
# on a loop device, with a Raspberry Pi OS-sized fixture (~2.6 GiB raw,
# ~1.6 GiB in use). Needs root, losetup, bmaptool (bmap-tools) and a
# picluster binary with the `flash` subcommand.
#
#   tests/bench/flash.sh [--fill-mib N] [--root-mib N] [--runs N]
#
# Environment: PICLUSTER (default target/release/picluster, built if missing),
# BENCH_DIR (default target/bench; the fixture is made once and kept there).
#
# Bytes written come from the loop device's /sys/block/loopN/stat (sectors
# written), counted the same way for every tool. Every run starts from a fresh
# sparse backing file, with the page cache dropped and the image read back in.
# The tools run in turn, --runs rounds (default 3); each tool's fastest round
# is reported, which filters out noise from other work on the machine.
set -euo pipefail

fill_mib=1500 root_mib=600 runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --fill-mib) fill_mib=$2; shift 2 ;;
    --root-mib) root_mib=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "flash.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$repo/target/bench}
pic=${PICLUSTER:-$repo/target/release/picluster}
[ "$(id -u)" = 0 ] || { echo "flash.sh: needs root (loop devices)" >&2; exit 1; }
for t in losetup bmaptool dd python3 cargo; do
  command -v "$t" >/dev/null || { echo "flash.sh: $t is missing" >&2; exit 1; }
done
(cd "$repo" && cargo build -q --release -p picluster --example write_bmap)
[ -x "$pic" ] || (cd "$repo" && cargo build -q --release -p picluster)
"$pic" flash --help >/dev/null 2>&1 || { echo "flash.sh: $pic has no flash subcommand" >&2; exit 1; }

mkdir -p "$bench"
img="$bench/pi-${fill_mib}-${root_mib}.img"
if [ ! -f "$img.done" ]; then
  echo "making the fixture $img (once)..." >&2
  bash "$repo/tests/fixtures/make-base-image.sh" "$img" --fill-mib "$fill_mib" --root-mib "$root_mib"
  touch "$img.done"
fi
size=$(stat -c %s "$img")
# Our bmap (what `picluster build` writes) and bmaptool's own (FIEMAP of the
# sparse file), made outside the timed runs.
"$repo/target/release/examples/write_bmap" "$img" "$bench/ours.bmap" >/dev/null
bmaptool -q create -o "$bench/theirs.bmap" "$img"
mapped=$(python3 - "$bench/ours.bmap" <<'PY'
import sys, re
t = open(sys.argv[1]).read()
bs = int(re.search(r"<BlockSize>\s*(\d+)", t).group(1))
n = int(re.search(r"<MappedBlocksCount>\s*(\d+)", t).group(1))
print(bs * n)
PY
)

card="$bench/card.img"
loop=
cleanup() {
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  rm -f "$card"
}
trap cleanup EXIT

fresh_card() {
  if [ -n "$loop" ]; then losetup -d "$loop"; fi
  rm -f "$card"
  truncate -s "$size" "$card"
  sync
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$img" > /dev/null
  loop=$(losetup -f --show "$card")
}
sectors_written() { awk '{print $7}' "/sys/block/$(basename "$loop")/stat"; }

run_dd() { dd if="$img" of="$loop" bs=4M conv=fsync status=none; }
run_bmaptool_theirs() { bmaptool -q copy --bmap "$bench/theirs.bmap" "$img" "$loop"; }
run_bmaptool_ours() { bmaptool -q copy --bmap "$bench/ours.bmap" "$img" "$loop"; }
run_pic_noverify() { "$pic" flash --yes --no-verify "$img" "$loop"; }
run_pic_verify() { "$pic" flash --yes "$img" "$loop"; }

declare -A wall bytes
measure() { # name
  local name=$1 s0 t0 t1
  fresh_card
  s0=$(sectors_written)
  t0=$(date +%s.%N)
  "run_$name" >"$bench/$name.log" 2>&1 || { cat "$bench/$name.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  local w b
  w=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  b=$(( ($(sectors_written) - s0) * 512 ))
  printf '  %-18s %8.2f s  %7d MiB written\n' "$name" "$w" $(( b >> 20 )) >&2
  if [ -z "${wall[$name]:-}" ] || python3 -c "import sys; sys.exit(0 if $w < ${wall[$name]} else 1)"; then
    wall[$name]=$w
  fi
  bytes[$name]=$b
}

echo "image $img: $((size >> 20)) MiB, $((mapped >> 20)) MiB mapped" >&2
for r in $(seq "$runs"); do
  echo "round $r of $runs" >&2
  for t in dd bmaptool_theirs bmaptool_ours pic_noverify pic_verify; do measure "$t"; done
done

python3 - "$size" "$mapped" \
  "${wall[dd]}" "${bytes[dd]}" \
  "${wall[bmaptool_theirs]}" "${bytes[bmaptool_theirs]}" \
  "${wall[bmaptool_ours]}" "${bytes[bmaptool_ours]}" \
  "${wall[pic_noverify]}" "${bytes[pic_noverify]}" \
  "${wall[pic_verify]}" "${bytes[pic_verify]}" <<'PY'
import sys
a = sys.argv[1:]
size, mapped = int(a[0]), int(a[1])
rows = ["dd bs=4M conv=fsync", "bmaptool copy (its bmap)", "bmaptool copy (our bmap)",
        "picluster flash --no-verify", "picluster flash (verify)"]
vals = [(float(a[2 + 2 * i]), int(a[3 + 2 * i])) for i in range(5)]
mib = lambda b: b / 2**20
print(f"image {mib(size):.0f} MiB, mapped {mib(mapped):.0f} MiB ({100 * mapped / size:.0f}%)")
print(f"fastest of the rounds; load average {open('/proc/loadavg').read().split()[0]} at the end")
print(f"{'tool':30} {'wall s':>8} {'MiB written':>12} {'wall/dd':>8}")
for r, (w, b) in zip(rows, vals):
    print(f"{r:30} {w:8.2f} {mib(b):12.0f} {w / vals[0][0]:8.2f}")
pw, pb = vals[3]
print(f"picluster bytes written / mapped bytes = {pb / mapped:.4f}  (target <= 1.02)")
print(f"picluster wall / dd wall (no verify)   = {pw / vals[0][0]:.2f}  (target <= 0.70)")
print(f"picluster wall / bmaptool wall         = {pw / vals[1][0]:.2f} (its bmap), {pw / vals[2][0]:.2f} (our bmap)")
PY
