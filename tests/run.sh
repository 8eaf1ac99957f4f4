#!/usr/bin/env bash
# The full test suite, with its own set-up: on a fresh Debian/Ubuntu machine this
# installs what the tests need (Debian packages, the aarch64 Rust target, Python
# validators), builds the node agent for aarch64, and runs every check CI runs.
#
#   tests/run.sh            everything (what CI runs)
#   tests/run.sh --quick    skip fmt/clippy
#
# Long opt-in suites (not run here): tests/boot/run.sh (QEMU boot test),
# tests/bench/build.sh and tests/bench/flash.sh (benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

say() { printf '\n== %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

say "system packages"
need=()
for pair in mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk mke2fs:e2fsprogs \
            qemu-aarch64-static:qemu-user-static bmaptool:bmap-tools xz:xz-utils zstd:zstd shellcheck:shellcheck \
            ssh-keygen:openssh-client losetup:mount python3:python3 \
            openssl:openssl kubectl:kubernetes-client; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
# The platform self-test's tests start a real PostgreSQL (not on PATH in Debian).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi

say "Rust target aarch64-unknown-linux-musl"
rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl

say "Python validators for the data-platform manifests"
# In a venv under target/: Debian's system Python refuses `pip install`
# (PEP 668), and the tests must not change the machine's Python.
venv="$PWD/target/test-venv"
if [ ! -x "$venv/bin/python3" ]; then
  python3 -c 'import ensurepip, venv' 2>/dev/null || {
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
  }
  python3 -m venv "$venv"
fi
"$venv/bin/python3" -m pip install -q --disable-pip-version-check -r tests/platform/requirements.txt \
  -r tests/cloud-init-requirements.txt
export PATH="$venv/bin:$PATH"

say "cloud-init's schema check (Debian's package, unpacked under target/, not installed)"
# Installing cloud-init would enable it on this machine's next boot; unpacked, it
# only answers `cloud-init schema` for the Trixie seed-file test.
ci="$PWD/target/cloud-init"
if [ ! -x "$ci/bin/cloud-init" ]; then
  rm -rf "$ci" && mkdir -p "$ci/deb" "$ci/bin"
  (cd "$ci/deb" && { apt-get download cloud-init >/dev/null 2>&1 || { as_root apt-get update -qq && apt-get download cloud-init >/dev/null; }; })
  dpkg-deb -x "$ci"/deb/cloud-init_*.deb "$ci/root"
  cat > "$ci/bin/cloud-init" <<WRAP
#!/bin/sh
PYTHONPATH="$ci/root/usr/lib/python3/dist-packages" exec "$venv/bin/python3" -c 'import sys; from cloudinit.cmd import main; sys.exit(main.main())' "\$@"
WRAP
  chmod +x "$ci/bin/cloud-init"
fi
export PATH="$ci/bin:$PATH"

say "node agent (aarch64, static)"
cargo build --release -p picluster-node --target aarch64-unknown-linux-musl
export PICLUSTER_AGENT="$PWD/target/aarch64-unknown-linux-musl/release/picluster-node"

if [ "$quick" = 0 ]; then
  say "format and lints"
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
fi

# Every runner's output is kept so the last line can sum them all.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

say "boot-test self-checks (no QEMU)"
python3 -m unittest discover -s tests/boot -p 'test_*.py' 2>&1 | tee "$logs/unittest.log"

say "tests"
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$logs/cargo.log" || status=$?

# One closing line: cargo's "test result: … N passed; M failed" lines (every
# test binary and the doc tests) plus unittest's "Ran N tests" / "FAILED (…)".
# Inner Python runs that Rust tests start are counted by their Rust test.
awk '
  FILENAME ~ /cargo/ && /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i - 1)
      if ($(i) ~ /^failed;?$/) f += $(i - 1)
    }
  }
  FILENAME ~ /unittest/ && /^Ran [0-9]+ test/ { ran += $2 }
  FILENAME ~ /unittest/ && /^FAILED \(/ {
    n = split($0, parts, /[=,)]/)
    for (i = 2; i <= n; i += 2) if (parts[i] ~ /^[0-9]+$/) uf += parts[i]
  }
  END { printf "%d passed, %d failed\n", p + ran - uf, f + uf }
' "$logs/cargo.log" "$logs/unittest.log"
exit "$status"
