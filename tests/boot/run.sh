#!/bin/bash
# picluster QEMU boot test: the one opt-in command (see tests/boot/README.md).
#
#   tests/boot/run.sh            full test: picluster build, boot each node, check the agent's work
#   tests/boot/run.sh --smoke    boot the plain fixture only (no picluster needed)
#   tests/boot/run.sh --help     all options
#
# Installs the Debian packages it needs when run as root on Debian/Ubuntu, and
# registers qemu-user for arm64 binaries (the fixture is built under emulation).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

# command -> Debian package
declare -A need=(
    [qemu-system-aarch64]=qemu-system-arm
    [qemu-aarch64-static]=qemu-user-static
    [update-binfmts]=binfmt-support
    [mmdebstrap]=mmdebstrap
    # mmdebstrap refuses a foreign architecture without it ("install arch-test").
    [arch-test]=arch-test
    [mtype]=mtools
    [mkfs.vfat]=dosfstools
    [fsck.vfat]=dosfstools
    [mke2fs]=e2fsprogs
    [debugfs]=e2fsprogs
    [sfdisk]=fdisk
    [ssh]=openssh-client
    [ssh-keygen]=openssh-client
    [openssl]=openssl
    [cpio]=cpio
    [python3]=python3
)
missing=()
for cmd in "${!need[@]}"; do
    command -v "$cmd" > /dev/null || missing+=("${need[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "boot test: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
    else
        echo "boot test: missing tools; install the Debian packages: ${missing[*]}" >&2
        exit 2
    fi
fi

# Running arm64 programs while building the fixture needs binfmt_misc.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    if [ "$(id -u)" = 0 ]; then
        [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        update-binfmts --enable qemu-aarch64
    else
        echo "boot test: arm64 binaries cannot run here: as root run 'update-binfmts --enable qemu-aarch64'" >&2
        exit 2
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "boot test: building the fixture needs root (mmdebstrap, chroot); run as root" >&2
    exit 2
fi

exec python3 "$here/boottest.py" "$@"
