"""What differs between the Raspberry Pi OS releases the boot test covers, and
the checks that only one release needs.

Bookworm's first boot is a boot of its own: `init=` runs raspberrypi-sys-mods'
firstboot script, which reboots. Trixie does that work in the initramfs of the
first boot and boots on (pi-gen tag 2026-06-18-raspios-trixie-arm64:
cmdline.txt ends in `resize`, no `init=`; raspberrypi-sys-mods resize_early and
set_partuuid), grows the root filesystem on that boot (rpi-resize.service pulls
in systemd-growfs-root.service), and ships cloud-init seeded from the boot
partition (stage2/04-cloud-init), which picluster turns off.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import re

from harness import Checks, Ssh

# Tokens Raspberry Pi OS ships in cmdline.txt that must survive everything
# (root=PARTUUID= changes value at the OS's first boot).
SHIPPED_ARGS = ["console=serial0,115200", "console=tty1", "rootfstype=ext4", "fsck.repair=yes", "rootwait"]


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    # The OS first boot ends in a reboot of its own (Bookworm's init= script).
    first_boot_reboots: bool
    # The cmdline.txt word that starts the OS first boot; gone after it.
    first_boot_arg: str
    # MiB the test adds to the card before the first boot: Trixie grows the
    # root filesystem into it, which the checks then see.
    grow_mib: int

    def node_boots(self) -> list[str]:
        """The boots a picluster node image goes through until it is steady."""
        return (["os-firstboot"] if self.first_boot_reboots else []) + ["agent-stage1", "normal"]

    def smoke_boots(self) -> list[str]:
        """The boots of the plain fixture until it is steady."""
        return ["os-firstboot", "normal"] if self.first_boot_reboots else ["os-firstboot"]


RELEASES = {
    "bookworm": Release("bookworm", True, "init=/usr/lib/raspberrypi-sys-mods/firstboot", 0),
    "trixie": Release("trixie", False, "resize", 512),
}


def check_os_first_boot(ssh: Ssh, checks: Checks, label: str, release: Release, old_id: str) -> list[str]:
    """What the OS's own first boot did, on either release: its word gone from
    cmdline.txt, a new disk identifier everywhere it is named. Returns the
    running cmdline.txt tokens."""
    cmdline = ssh.out("cat /boot/firmware/cmdline.txt").split()
    checks.ok(release.first_boot_arg not in cmdline, f"{label}: the OS first boot removed {release.first_boot_arg} from cmdline.txt",
              " ".join(cmdline))
    for t in SHIPPED_ARGS:
        checks.ok(t in cmdline, f"{label}: cmdline.txt keeps {t}")
    new_id = ssh.out("sudo sfdisk --disk-id /dev/vda").lower().removeprefix("0x")
    checks.ok(new_id != old_id, f"{label}: the OS first boot gave the disk a new identifier ({old_id} -> {new_id})")
    checks.ok(f"root=PARTUUID={new_id}-02" in cmdline, f"{label}: cmdline.txt root=PARTUUID= follows the new identifier")
    fstab = ssh.out("cat /etc/fstab")
    checks.ok(f"PARTUUID={new_id}-01" in fstab and "/boot/firmware" in fstab, f"{label}: fstab mounts /boot/firmware by the new PARTUUID")
    checks.equal(ssh.out("findmnt -no FSTYPE /boot/firmware"), "vfat", f"{label}: /boot/firmware is mounted (vfat)")
    checks.equal(ssh.out("sed -n 's/^VERSION_CODENAME=//p' /etc/os-release"), release.name, f"{label}: os-release says {release.name}")
    return cmdline


def check_trixie_growth(ssh: Ssh, checks: Checks, label: str) -> None:
    """The root partition reaches the end of the (bigger) card and the ext4
    filesystem fills it: the initramfs grew the partition, systemd-growfs-root
    the filesystem (on a picluster node, during stage 1)."""
    table = json.loads(ssh.out("sudo sfdisk -J /dev/vda"))["partitiontable"]
    disk = int(ssh.out("sudo blockdev --getsz /dev/vda"))
    root = next(p for p in table["partitions"] if p["node"].endswith("2"))
    end = root["start"] + root["size"]
    # sfdisk aligns the end down to its grain (1 MiB = 2048 sectors).
    checks.ok(disk - end < 2048, f"{label}: the root partition reaches the end of the card",
              f"ends at sector {end}, card has {disk}")
    fs = int(ssh.out("findmnt -bno SIZE /"))
    part = root["size"] * 512
    checks.ok(fs > part * 0.95, f"{label}: the root filesystem fills its partition (grown)",
              f"filesystem {fs >> 20} MiB, partition {part >> 20} MiB")
    mid = ssh.out("cat /etc/machine-id")
    checks.ok(re.fullmatch(r"[0-9a-f]{32}", mid) is not None, f"{label}: /etc/machine-id is committed (not 'uninitialized')", mid)
    keys = ssh.out("ls /etc/ssh/ | grep -c '^ssh_host_.*_key$' || true")
    checks.ok(keys not in ("", "0"), f"{label}: SSH host keys exist ({keys})")


def check_cloud_init_off(ssh: Ssh, checks: Checks, name: str, cmdline: list[str]) -> None:
    """picluster turned cloud-init off and it never ran: nothing it would do
    (hostname, users, netplan profiles) can undo the agent's work on a later boot."""
    checks.ok("cloud-init=disabled" in cmdline, f"{name}: cmdline.txt keeps cloud-init=disabled")
    checks.ok(not any(t.startswith("ds=") for t in cmdline), f"{name}: no ds= datasource argument")
    status = ssh.run("cloud-init status --long", check=False).stdout
    checks.ok(re.search(r"^status: disabled", status, re.MULTILINE) is not None,
              f"{name}: cloud-init status says disabled", status.strip().replace("\n", "; "))
    checks.ok(ssh.run("test -e /etc/cloud/cloud-init.disabled", check=False).returncode == 0,
              f"{name}: /etc/cloud/cloud-init.disabled holds it off on every boot")
    checks.ok(ssh.run("test ! -e /var/lib/cloud/instance", check=False).returncode == 0,
              f"{name}: cloud-init never ran (no /var/lib/cloud/instance)")
    # Debian's cloud.cfg default user; cloud-init would have created it.
    checks.ok(ssh.run("getent passwd debian", check=False).returncode != 0, f"{name}: no user from cloud-init's defaults")
    netplan = ssh.out("sudo sh -c 'find /etc/netplan /run/netplan -type f 2>/dev/null; true'")
    checks.equal(netplan, "", f"{name}: no netplan configuration (cloud-init's or anyone's)")
    # NetworkManager 1.52 keeps a profile of its own for `lo` in /run; what
    # must not exist is a second Ethernet profile (netplan writes its own
    # into /run/NetworkManager/system-connections, sdm's Trixie hints).
    conns = ssh.out("sudo nmcli -t -f TYPE,FILENAME connection show").splitlines()
    ethernet = sorted(c.split(":", 1)[1] for c in conns if c.startswith("802-3-ethernet:"))
    checks.equal(ethernet, ["/etc/NetworkManager/system-connections/picluster-eth0.nmconnection"],
                 f"{name}: the agent's keyfile is the only Ethernet profile")
    seed = ssh.out("cat /boot/firmware/user-data")
    checks.ok("picluster" in seed and "users: {}" in seed, f"{name}: the boot partition's user-data is picluster's inert one", seed)
