#!/usr/bin/env bash
# One command from a fresh checkout to node images:
#
#   builder/quickstart.sh [DIR] [-- BUILD ARGS…]      (default DIR: ./my-cluster)
#
# 1. adds the aarch64 Rust target and builds the node agent and the picluster CLI (release);
# 2. `picluster init DIR` unless DIR/cluster.toml exists (the four-node sample, your
#    ~/.ssh/id_*.pub, fresh secrets in DIR/secrets.toml, mode 0600, the cluster's CAs
#    in DIR/pki); `picluster secrets` adds what an older DIR lacks;
# 3. `picluster build -c DIR/cluster.toml --out DIR/images [BUILD ARGS…]`, which downloads
#    and verifies the pinned Raspberry Pi OS image and K3s release (cached for next time).
#    Offline, pass a local image: builder/quickstart.sh my-cluster -- --base ~/pios.img.xz
#
# Edit DIR/cluster.toml (IPs, gateway, nodes) and run it again to rebuild.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=my-cluster
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  dir=$1
  shift
fi
if [ $# -gt 0 ]; then
  if [ "$1" != "--" ]; then
    echo "usage: builder/quickstart.sh [DIR] [-- BUILD ARGS…]" >&2
    exit 2
  fi
  shift
fi

have_release() { [ -x "$repo/target/release/picluster" ] && [ -f "$repo/target/aarch64-unknown-linux-musl/release/picluster-node" ]; }
if have_release; then
  echo "== building picluster and the node agent (release; up to date in seconds)"
else
  echo "== building picluster and the node agent (release): about 10 minutes on 2 cores the first time"
fi
echo "   then the build downloads the Raspberry Pi OS image (~450 MB) and K3s (~70 MB) once, unless"
echo "   given --base; without internet: builder/quickstart.sh $dir -- --base /path/to/raspios.img.xz"
rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
(cd "$repo" && cargo build --release -p picluster-node --target aarch64-unknown-linux-musl \
  && cargo build --release -p picluster)
picluster="$repo/target/release/picluster"
export PICLUSTER_AGENT="$repo/target/aarch64-unknown-linux-musl/release/picluster-node"

[ -f "$dir/cluster.toml" ] || "$picluster" init "$dir"
"$picluster" secrets -c "$dir/cluster.toml"
"$picluster" plan -c "$dir/cluster.toml" >/dev/null
"$picluster" build -c "$dir/cluster.toml" --out "$dir/images" "$@"
echo "images are in $dir/images; see README.md \"Flashing\" to write them to cards"
echo "then: picluster status -c $dir/cluster.toml --watch; kubectl --kubeconfig $dir/images/kubeconfig get nodes"
