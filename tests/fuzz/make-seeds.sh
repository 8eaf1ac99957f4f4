#!/usr/bin/env bash
# Seed corpora for the fuzz targets, made with the real tools (nothing binary
# is committed): sfdisk tables, mkfs.vfat and mkfs.ext4 filesystems with files
# from mtools / mkfs.ext4 -d, bmaptool's own bmap, the sample cluster file and
# the bundles picluster_profiles renders for it.
#
#   tests/fuzz/make-seeds.sh        (writes tests/fuzz/corpus/<target>/)
#
# Disk images are stored in the compact form the targets decode
# (src/lib.rs: a size, then the non-zero 512-byte runs), so a 40 MiB FAT32
# volume is a seed of a few KiB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="$here/corpus"
work=$(mktemp -d "${TMPDIR:-/tmp}/picluster-seeds.XXXXXX")
trap 'rm -rf "$work"' EXIT
for tool in sfdisk mkfs.vfat mkfs.ext4 mcopy mmd bmaptool python3; do
  command -v "$tool" >/dev/null || { echo "make-seeds.sh: $tool is missing" >&2; exit 1; }
done
mkdir -p "$out"/{partition_table,usedblocks_fat,usedblocks_ext4,bootfs,bmap,cluster_file,bundle}

# compact IMG SEED: the image as size + non-zero runs (see src/lib.rs).
compact() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
kib = (len(data) + 1023) // 1024
out = [struct.pack('<I', kib - 1)]
i = 0
while i < len(data):
    if not any(data[i:i + 512]):
        i += 512
        continue
    j = i
    while j < len(data) and any(data[j:j + 512]) and j - i < 65024:
        j += 512
    chunk = data[i:j]
    out.append(struct.pack('<IH', i, len(chunk)) + chunk)
    i = j
open(sys.argv[2], 'wb').write(b''.join(out))
PY
}

# reseal-gpt IMG: entry size 256 in both headers, CRC32s recomputed (UEFI 2.10 §5.3.2).
gpt256() {
  python3 - "$1" <<'PY'
import struct, sys, zlib
f = open(sys.argv[1], 'r+b')
f.seek(0, 2); last = f.tell() // 512 - 1
for lba in (1, last):
    f.seek(lba * 512); h = bytearray(f.read(92))
    elba, = struct.unpack_from('<Q', h, 72)
    f.seek(elba * 512); old = f.read(128 * 128)
    new = b''.join(old[i * 128:(i + 1) * 128] + bytes(128) for i in range(64))
    f.seek(elba * 512); f.write(new)
    struct.pack_into('<III', h, 80, 64, 256, zlib.crc32(new))
    struct.pack_into('<I', h, 16, 0)
    struct.pack_into('<I', h, 16, zlib.crc32(bytes(h)))
    f.seek(lba * 512); f.write(h)
PY
}

files="$work/files"
mkdir -p "$files/overlays"
printf 'console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait quiet\n' > "$files/cmdline.txt"
cp "$repo/tests/fixtures/pios-config.txt" "$files/config.txt"
printf 'dtoverlay\n' > "$files/overlays/README"
head -c 5000 /dev/urandom > "$files/kernel8.img"

# --- partition tables
t="$work/t.img"
truncate -s 0 "$t"; truncate -s 64M "$t"
printf 'label: dos\nlabel-id: 0x6c586e13\nstart=16384, size=65536, type=c\nstart=81920, type=83\n' | sfdisk -q "$t" >/dev/null
compact "$t" "$out/partition_table/dos-pios"
truncate -s 0 "$t"; truncate -s 8M "$t"
printf 'label: gpt\nstart=2048, size=4096, name=boot, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=6144, name=root\n' | sfdisk -q "$t" >/dev/null
compact "$t" "$out/partition_table/gpt"
gpt256 "$t"
compact "$t" "$out/partition_table/gpt-entries-256"
truncate -s 0 "$t"; truncate -s 4M "$t"
printf 'label: dos\nstart=2048, size=2048, type=5\nstart=4096, type=83\n' | sfdisk -q "$t" >/dev/null
compact "$t" "$out/partition_table/dos-extended"

# --- FAT: FAT12, FAT16, FAT32 (the boot partition's layout, smaller)
for spec in "fat12:2M:12:1" "fat16:16M:16:4" "fat32:40M:32:1"; do
  IFS=: read -r name size bits spc <<<"$spec"
  v="$work/$name.img"
  truncate -s "$size" "$v"
  mkfs.vfat -F "$bits" -s "$spc" -n BOOTFS "$v" >/dev/null
  mcopy -i "$v" "$files/cmdline.txt" "$files/config.txt" "$files/kernel8.img" ::/
  mmd -i "$v" ::/overlays
  mcopy -i "$v" "$files/overlays/README" ::/overlays/
  compact "$v" "$out/usedblocks_fat/$name"
  [ "$bits" = 32 ] && compact "$v" "$out/bootfs/$name"
done
# A DOS disk with that FAT32 as p1, as the images hold it.
d="$work/disk.img"
truncate -s 48M "$d"
printf 'label: dos\nstart=2048, size=81920, type=c\n' | sfdisk -q "$d" >/dev/null
dd if="$work/fat32.img" of="$d" bs=1M seek=1 conv=notrunc,sparse status=none
compact "$d" "$out/usedblocks_fat/disk-fat32"

# --- ext4 (1 KiB and 4 KiB blocks, with and without 64bit/metadata_csum)
root="$work/root"
mkdir -p "$root/etc" "$root/usr/bin"
printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n' > "$root/etc/os-release"
head -c 64 /bin/true > "$root/usr/bin/env"
for spec in "small:2M:1024:^has_journal" "csum:8M:4096:64bit,metadata_csum" "plain:4M:4096:^64bit,^metadata_csum,^has_journal"; do
  IFS=: read -r name size bs feat <<<"$spec"
  e="$work/$name.ext4"
  truncate -s 0 "$e"; truncate -s "$size" "$e"
  mkfs.ext4 -q -F -b "$bs" -O "$feat" -N 64 -d "$root" "$e"
  compact "$e" "$out/usedblocks_ext4/$name"
done

# --- bmap: bmaptool's own, for an image holding both filesystems
b="$work/b.img"
truncate -s 24M "$b"
dd if="$work/fat16.img" of="$b" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/small.ext4" of="$b" bs=1M seek=18 conv=notrunc,sparse status=none
bmaptool -q create -o "$out/bmap/bmaptool.bmap" "$b"

# --- cluster file and bundles
cp "$repo/profiles/examples/cluster.toml" "$out/cluster_file/example.toml"
(cd "$here" && cargo run -q --release -p bundle-seeds -- "$repo/profiles/examples/cluster.toml" "$out/bundle")

du -sh "$out"/* | sed "s|$out/||"
