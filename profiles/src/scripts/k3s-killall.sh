#!/bin/sh
# picluster: stop K3s and everything it started on this node. The K3s units
# use KillMode=process, so stopping a unit leaves the containers running;
# this is how K3s documents tearing them down (what its install.sh provides
# as k3s-killall.sh). Written by picluster, not copied from K3s.
set -u
[ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"

DATA_DIR=/var/lib/rancher/k3s

for unit in /etc/systemd/system/k3s*.service; do
    [ -s "$unit" ] && systemctl stop "$(basename "$unit")"
done

# Every process below the containerd shims K3s ran, children first.
descendants() {
    for child in $(ps -e -o ppid= -o pid= | awk -v p="$1" '$1 == p { print $2 }'); do
        descendants "$child"
        echo "$child"
    done
}
for shim in $(ps -e -o pid= -o args= | awk -v d="$DATA_DIR/data/" 'index($2, d) == 1 && $2 ~ /containerd-shim/ { print $1 }'); do
    # shellcheck disable=SC2046 # one PID per word
    kill -9 $(descendants "$shim") "$shim" 2>/dev/null
done

# Unmount what pods and K3s mounted, deepest first, then remove the mount points.
unmount_below() {
    awk -v p="$1" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r mnt; do
            umount -f "$mnt" && rm -rf "$mnt"
        done
}
unmount_below /run/k3s
unmount_below /var/lib/kubelet/pods
unmount_below /var/lib/kubelet/plugins
unmount_below /run/netns/cni-

ip netns show 2>/dev/null | awk '/^cni-/ { print $1 }' | while read -r ns; do
    ip netns delete "$ns"
done

# Pod network links: the veths on the cni0 bridge, then flannel's devices.
ip -o link show master cni0 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1 |
    while read -r link; do
        ip link delete "$link"
    done
for link in cni0 flannel.1 flannel-v6.1 flannel-wg flannel-wg-v6 kube-ipvs0; do
    ip link show "$link" >/dev/null 2>&1 && ip link delete "$link"
done

rm -rf /var/lib/cni/
# Drop the rules kube-proxy, flannel and the CNI plugins added; keep the rest.
for tables in iptables ip6tables; do
    if command -v "$tables-save" >/dev/null 2>&1; then
        "$tables-save" | grep -v -e KUBE- -e CNI- | grep -iv flannel | "$tables-restore"
    fi
done
exit 0
