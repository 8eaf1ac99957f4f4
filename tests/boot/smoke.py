"""Smoke mode of the boot test: boot the plain fixture, without picluster.

It proves the fixture, the first-boot stand-ins, the runner and SSH
forwarding. A user is set up the way Raspberry Pi's own tools do it on each
release: Bookworm reads `ssh` and `userconf.txt` from the boot partition
(sshswitch, userconf-pi); Trixie reads cloud-init user-data, as Raspberry Pi
Imager 2.x writes it (rpi-imager v2.0.11.1 `generateCloudInitUserData`:
a `users` entry with keys, `runcmd` enabling ssh, `ds=nocloud;i=<id>` on
cmdline.txt). On Trixie that also proves the fixture's cloud-init is live, so
the full mode's "cloud-init never ran" means picluster turned it off.

Standard library only.
"""

from __future__ import annotations

import secrets as pysecrets
import shutil
import subprocess
import sys
from pathlib import Path

import qemu_pi
from harness import (Checks, Ssh, TestFailure, build_fixture, ext4_write, failure_context, grow_card, report,
                     run, sparse_copy, step, summary)
from qemu_pi import BootError, MachineConfig, PiMachine
from releases import RELEASES, check_os_first_boot, check_trixie_growth

USER = "tester"
SMOKE_HOSTNAME = "smoke-trixie"


def prepare_bookworm(image: Path, pubkey: bytes) -> str:
    """`ssh` and `userconf.txt` on the boot partition, a key for uid 1000."""
    password = pysecrets.token_hex(8)
    pw_hash = run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True).stdout.strip()
    qemu_pi.write_boot_file(image, "ssh", b"")
    qemu_pi.write_boot_file(image, "userconf.txt", f"{USER}:{pw_hash}\n".encode())
    ext4_write(image, "/home/pi/.ssh/authorized_keys", pubkey, 0o600, 1000, 1000)
    return pw_hash


def prepare_trixie(image: Path, pubkey: bytes) -> None:
    """cloud-init seed files as Imager 2.x writes them for a user with a key.

    `bootcmd` stands in for Raspberry Pi OS's own cloud-init, whose
    `add_user` (users_groups, in the init stage) runs userconf-pi's
    `rename-user`, which retires the first-boot user wizard (cloud-init 25.2+
    cloudinit/distros/raspberry_pi_os.py; Debian's cloud-init 25.1 has no such
    distro). It must happen in the init stage: cloud-final, which runs
    `runcmd`, is `After=multi-user.target` (cloud-init 25.1.4
    systemd/cloud-final.service.tmpl), and the waiting wizard holds that target.
    """
    instance = f"rpi-imager-{pysecrets.randbelow(10**12)}"
    qemu_pi.write_boot_file(image, "meta-data", f"instance-id: {instance}\n".encode())
    qemu_pi.write_boot_file(image, "user-data", f"""#cloud-config
manage_resolv_conf: false
hostname: {SMOKE_HOSTNAME}
manage_etc_hosts: true
users:
  - name: {USER}
    groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,input,render,sudo
    shell: /bin/bash
    lock_passwd: true
    sudo: ALL=(ALL) NOPASSWD:ALL
    ssh_authorized_keys:
      - {pubkey.decode().strip()}
ssh_pwauth: false
bootcmd:
  - [systemctl, disable, --now, userconfig]
runcmd:
  - [systemctl, enable, --now, ssh]
""".encode())
    cmdline = qemu_pi.read_boot_file(image, "cmdline.txt").decode().strip()
    qemu_pi.write_boot_file(image, "cmdline.txt", f"{cmdline} ds=nocloud;i={instance}\n".encode())


def check_bookworm(ssh: Ssh, checks: Checks, pw_hash: str) -> None:
    cmdline = ssh.out("cat /boot/firmware/cmdline.txt").split()
    checks.ok("quiet" not in cmdline, "firstboot removed quiet")
    checks.equal(ssh.out("id -u"), "1000", f"userconf renamed uid 1000 to {USER}")
    checks.ok(ssh.run("getent passwd pi", check=False).returncode != 0, "no user pi is left")
    checks.equal(ssh.out("sudo -n id -u"), "0", "sudo works without a password (010_pi-nopasswd followed the rename)")
    checks.equal(ssh.out(f"sudo getent shadow {USER} | cut -d: -f2"), pw_hash, "userconf set the password hash")
    checks.ok(ssh.run("test ! -e /boot/firmware/ssh && test ! -e /boot/firmware/userconf.txt", check=False).returncode == 0,
              "sshswitch and userconf deleted their files")
    checks.equal(ssh.out("systemctl is-enabled ssh"), "enabled", "sshswitch enabled ssh")
    checks.equal(ssh.run("systemctl is-enabled userconfig", check=False).stdout.strip(), "disabled", "the user wizard retired itself")


def check_trixie(ssh: Ssh, checks: Checks) -> None:
    status = ssh.run("cloud-init status --long", check=False).stdout
    checks.ok("status: done" in status, "cloud-init ran from the boot partition's seed", status.strip().replace("\n", "; "))
    checks.equal(ssh.out("hostname"), SMOKE_HOSTNAME, "cloud-init set the hostname from user-data")
    checks.ok(ssh.out("getent passwd pi | cut -d: -f3,7") == "1000:/usr/sbin/nologin",
              "pi is uid 1000 with a nologin shell (pi-gen 4b9cd15c, image 2026-04-13 on)")
    checks.ok(ssh.run("sudo test -e /etc/sudoers.d/010_pi-nopasswd", check=False).returncode != 0,
              "no 010_pi-nopasswd (pi-gen c020178c)")
    checks.equal(ssh.out("sudo -n id -u"), "0", "cloud-init's sudo rule for the user works")
    checks.equal(ssh.out("systemctl is-enabled ssh"), "enabled", "user-data's runcmd enabled ssh")


def smoke(args) -> int:
    release = RELEASES[args.release]
    fixture = build_fixture(args.cache, release.name)
    work = args.workdir / f"smoke-{release.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    checks = Checks()

    step(f"prepare: copy the fixture, set up {USER} with a key as Raspberry Pi's tools do on {release.name}")
    image = work / "disk.img"
    sparse_copy(fixture / "base.img", image)
    if release.grow_mib:
        grow_card(image, release.grow_mib)
    key = work / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boottest-smoke", "-f", str(key)])
    pubkey = key.with_suffix(".pub").read_bytes()
    pw_hash = prepare_bookworm(image, pubkey) if release.name == "bookworm" else prepare_trixie(image, pubkey)
    old_id = qemu_pi.disk_id(image)

    machine = PiMachine(MachineConfig(
        image=image, kernel=fixture / "vmlinuz", initrd=fixture / "initrd.img", workdir=work,
        boot_timeout=args.boot_timeout, settle=args.settle, max_boots=4,
    ))
    ssh = Ssh(key, USER, machine.cfg.ssh_port, work)
    try:
        step("boot until steady")
        boots = machine.boot_until_steady()
        checks.equal([b.stage for b in boots], release.smoke_boots(), "boots: the OS first boot, then steady")
        if release.first_boot_reboots:
            checks.equal(boots[0].outcome, "reboot", "the first boot ends in a reboot")
        waited = ssh.wait(300)
        print(f"  SSH login {waited:.0f} s after the steady state")

        step("checks on the running system")
        check_os_first_boot(ssh, checks, "smoke", release, old_id)
        if release.name == "bookworm":
            check_bookworm(ssh, checks, pw_hash)
        else:
            check_trixie(ssh, checks)
            check_trixie_growth(ssh, checks, "smoke")
        checks.equal(ssh.out("systemctl is-active multi-user.target"), "active", "boot reached multi-user.target")
        checks.equal(ssh.out("uname -m"), "aarch64", "aarch64 kernel and userland")
        checks.ok("eth0" in ssh.out("ip -o link show"), "the Ethernet interface is eth0")
        checks.ok("memory" in ssh.out("cat /sys/fs/cgroup/cgroup.controllers"), "cgroup v2 with the memory controller")
        state = "sudo sha256sum /etc/ssh/ssh_host_ed25519_key.pub /boot/firmware/cmdline.txt /etc/fstab /etc/passwd /etc/hostname /etc/hosts"
        before = ssh.out(state)

        step("power cycle: poweroff, boot again")
        ssh.run("sudo systemctl poweroff", check=False, timeout=60)
        machine.wait_for_exit(300)
        boots = machine.boot_until_steady()
        checks.equal([b.stage for b in boots], ["normal"], "after a power cycle: one normal boot, no reboot")
        ssh.wait(300)
        after = ssh.out(state)
        checks.equal(after, before, "a power cycle changes nothing (host key, cmdline.txt, fstab, passwd, hostname, hosts)")
        ssh.run("sudo systemctl poweroff", check=False, timeout=60)
        machine.wait_for_exit(300)
    except (BootError, TestFailure, subprocess.TimeoutExpired) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        failure_context(machine, ssh, ["cloud-init-local", "cloud-init-main", "cloud-final"] if release.name == "trixie" else [])
        machine.kill()
        report("smoke", machine)
        return 1
    finally:
        machine.kill()
    report("smoke", machine)
    return summary(checks)
