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
# init refuses the sample's example key: the cluster gets a key of its own.
[ -f "$work/key.pub" ] || ssh-keygen -q -t ed25519 -N "" -C bench -f "$work/key"
rm -rf "$work/cluster" && "$picluster" -q init "$work/cluster" --ssh-key "$work/key.pub" >/dev/null
# The stand-in is pinned by its own digest: images/k3s.toml pins the real binary's.
k3s_sha=$(cut -d' ' -f1 "$work/mirror/$ver/sha256sum-arm64.txt")
sed -i "s|^# k3s_mirror = .*|k3s_mirror = \"$work/mirror\"\nk3s_sha256 = \"$k3s_sha\"|; s|^components = .*|components = []|" "$work/cluster/cluster.toml"
export SOURCE_DATE_EPOCH=1750000000
