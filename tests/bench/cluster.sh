# Sourced by the build benchmarks: the release tools, a K3s mirror with a
# stand-in k3s-arm64 of the real one's size, and a cluster made by `init`.
# Needs $repo and $work; sets $picluster, PICLUSTER_AGENT, SOURCE_DATE_EPOCH.
# shellcheck shell=bash disable=SC2154
echo "== tools"
(cd "$repo" && cargo build -q --release -p picluster-node --target aarch64-unknown-linux-musl && cargo build -q --release -p picluster)
picluster="$repo/target/release/picluster"
export PICLUSTER_AGENT="$repo/target/aarch64-unknown-linux-musl/release/picluster-node"
ver=v1.33.5+k3s1
if [ ! -f "$work/mirror/$ver/k3s-arm64" ]; then
  mkdir -p "$work/mirror/$ver"
  head -c 73400320 /dev/urandom > "$work/mirror/$ver/k3s-arm64"   # the real one is ~70 MiB
  (cd "$work/mirror/$ver" && sha256sum k3s-arm64 > sha256sum-arm64.txt)
fi
rm -rf "$work/cluster" && "$picluster" -q init "$work/cluster" >/dev/null 2>&1
sed -i "s|^# k3s_mirror = .*|k3s_mirror = \"$work/mirror\"|; s|^components = .*|components = []|" "$work/cluster/cluster.toml"
export SOURCE_DATE_EPOCH=1750000000
