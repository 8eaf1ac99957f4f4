#!/bin/sh
# picluster: remove K3s from this node ({{SERVICE}}), as K3s's own uninstall
# script does for an install.sh installation. The node keeps its picluster
# identity (hostname, user, network); re-flash it to set it up again.
# Written by picluster, not copied from K3s.
set -u
[ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"

/usr/local/bin/k3s-killall.sh

systemctl disable {{SERVICE}}.service
systemctl reset-failed {{SERVICE}}.service 2>/dev/null
rm -f /etc/systemd/system/{{SERVICE}}.service /etc/systemd/system/{{SERVICE}}.service.env
systemctl daemon-reload

# Keep the binary while another K3s unit remains.
for unit in /etc/systemd/system/k3s*.service; do
    if [ -e "$unit" ]; then
        echo "another K3s unit ($unit) is installed: leaving the K3s binary in place"
        rm -f "$0"
        exit 0
    fi
done

for link in kubectl crictl ctr; do
    [ -L "/usr/local/bin/$link" ] && rm -f "/usr/local/bin/$link"
done

# Directories with mounts are emptied around the mount points.
clean_dir() {
    if ! grep -q " $1" /proc/mounts; then
        rm -rf "$1"
        return
    fi
    for entry in "$1"/*; do
        if [ -d "$entry" ] && grep -q " $entry" /proc/mounts; then
            clean_dir "$entry"
        else
            rm -rf "$entry"
        fi
    done
}

rm -rf /etc/rancher/k3s /run/k3s /run/flannel /var/lib/kubelet
clean_dir /var/lib/rancher/k3s
rm -f /usr/local/bin/k3s /usr/local/bin/k3s-killall.sh
rm -f "$0"
