#!/usr/bin/env python3
"""Boot a Raspberry Pi OS-shaped image under qemu-system-aarch64, acting as the
Pi firmware: before every boot, read cmdline.txt from the image's FAT boot
partition and boot the fixture's kernel and initrd with it. `-no-reboot` hands
control back on every guest reboot, so each boot is captured and timed on its
own, and a command line edited by the guest takes effect on the next boot, as
on a Pi.

Used as a library by boottest.py; also a small CLI for looking at a boot by hand:

    qemu_pi.py --fixture DIR [--image IMG] [--workdir DIR] [--guest-ip IP]

Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# The virt machine's first PL011 UART; the Pi firmware likewise turns
# `serial0` into the board's real UART name.
SERIAL_DEVICE = "ttyAMA0"
# (systemd may print status lines right after the prompt, on the same line.)
LOGIN_PROMPT = re.compile(rb"^[A-Za-z0-9.-]+ login: ", re.MULTILINE)
REBOOT_MARK = b"reboot: Restarting system"
POWEROFF_MARK = b"reboot: Power down"
# Console lines after which a boot will neither reboot nor reach a login
# prompt: fail at once instead of waiting for the boot timeout.
STUCK_MARKS = [
    b"Kernel panic - not syncing",
    b"You are in emergency mode",
    b"Failed to start kernel-command-line.service",  # stage 1 failed: run_failure_action=none
    b"Give root password for maintenance",
]


class BootError(Exception):
    """A boot did not go as expected; the message names the boot and its log."""


# ---------------------------------------------------------------- disk image


@dataclasses.dataclass
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str


def partitions(image: Path) -> list[Partition]:
    """The image's partition table, read with sfdisk (never hardcode offsets)."""
    out = subprocess.run(
        ["sfdisk", "--json", str(image)], check=True, capture_output=True, text=True
    ).stdout
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = []
    for i, p in enumerate(table["partitions"], start=1):
        parts.append(Partition(i, int(p["start"]) * sector, int(p["size"]) * sector, p["type"]))
    return parts


def disk_id(image: Path) -> str:
    """The DOS disk identifier, lower-case hex without 0x."""
    out = subprocess.run(
        ["sfdisk", "--disk-id", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return out.lower().removeprefix("0x")


def _mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}


def boot_partition(image: Path) -> Partition:
    parts = partitions(image)
    if not parts:
        raise BootError(f"{image}: no partitions")
    return parts[0]


def read_boot_file(image: Path, name: str) -> bytes:
    """A file from the FAT boot partition (mtools at the partition's offset)."""
    p = boot_partition(image)
    r = subprocess.run(
        ["mtype", "-i", f"{image}@@{p.start}", f"::{name}"],
        capture_output=True,
        env=_mtools_env(),
    )
    if r.returncode != 0:
        raise BootError(f"{image}: cannot read {name} from the boot partition: {r.stderr.decode().strip()}")
    return r.stdout


def write_boot_file(image: Path, name: str, content: bytes) -> None:
    """Put a file on the FAT boot partition (replacing it). Only with the guest off."""
    p = boot_partition(image)
    tmp = image.parent / f".{name}.upload"
    tmp.write_bytes(content)
    try:
        subprocess.run(
            ["mcopy", "-o", "-i", f"{image}@@{p.start}", str(tmp), f"::{name}"],
            check=True,
            capture_output=True,
            env=_mtools_env(),
        )
    finally:
        tmp.unlink()


def list_boot_files(image: Path) -> list[str]:
    p = boot_partition(image)
    out = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{p.start}", "::"],
        check=True,
        capture_output=True,
        text=True,
        env=_mtools_env(),
    ).stdout
    return sorted(line.rsplit("/", 1)[-1] for line in out.split() if line)


def boot_partition_bytes(image: Path) -> bytes:
    """The whole raw FAT partition, for grepping left-over secrets."""
    p = boot_partition(image)
    with open(image, "rb") as f:
        f.seek(p.start)
        return f.read(p.size)


# ---------------------------------------------------------------- firmware


def kernel_command_line(cmdline_txt: str) -> str:
    """What the Pi firmware would hand the kernel, for QEMU's virt machine.

    `console=serial0,…` becomes the virt machine's UART. The virt machine has no
    screen, so the serial console is moved last: the last `console=` is
    /dev/console, where systemd and the node agent print, and the serial log is
    all this test can see. cmdline.txt itself is not changed.
    """
    tokens = shlex.split(cmdline_txt.strip(), posix=False)
    serial = []
    rest = []
    for t in tokens:
        if t.startswith("console=serial0") or t.startswith("console=serial1"):
            serial.append("console=" + SERIAL_DEVICE + t[len("console=serial0") :])
        else:
            rest.append(t)
    if not serial:
        serial = [f"console={SERIAL_DEVICE},115200"]
    return " ".join(rest + serial)


def stage_of(cmdline_txt: str) -> str:
    """Which first-boot stage a command line starts, for the report."""
    if "init=/usr/lib/raspberrypi-sys-mods/firstboot" in cmdline_txt:
        return "os-firstboot"
    if "systemd.run=" in cmdline_txt:
        return "agent-stage1"
    # Trixie: the initramfs grows the root partition when it sees `resize`
    # (raspberrypi-sys-mods resize_early) and the boot goes on.
    if "resize" in cmdline_txt.split():
        return "os-firstboot"
    return "normal"


# ---------------------------------------------------------------- machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Boot:
    index: int
    stage: str
    cmdline: str
    log: Path
    started: float
    login_after: float | None = None  # seconds from power-on to the login prompt
    ended_after: float | None = None  # seconds from power-on to QEMU's exit
    outcome: str = "running"  # reboot | poweroff | running | steady | timeout | stuck | crashed | killed

    def describe(self) -> str:
        parts = [f"boot {self.index} ({self.stage}): {self.outcome}"]
        if self.login_after is not None:
            parts.append(f"login prompt after {self.login_after:.0f} s")
        if self.ended_after is not None:
            parts.append(f"ended after {self.ended_after:.0f} s")
        return ", ".join(parts)


@dataclasses.dataclass
class MachineConfig:
    image: Path
    kernel: Path
    initrd: Path
    workdir: Path
    # User-mode network matching the node's static address: the gateway is
    # QEMU's host address. restrict=on: nothing leaves QEMU but the forwarded port.
    net: str = "192.168.0.0/24"
    gateway: str = "192.168.0.1"
    dns: str = "192.168.0.3"
    guest_ip: str | None = None  # None: the DHCP address QEMU hands out (.15)
    ssh_port: int = 0  # 0: pick a free loopback port
    memory_mib: int = 2048
    smp: int = 2
    cpu: str = "cortex-a72"
    boot_timeout: float = 900.0  # per boot: power-on to reboot or login prompt
    settle: float = 60.0  # no reboot this long after the login prompt: steady
    max_boots: int = 6
    qemu: str = "qemu-system-aarch64"


class PiMachine:
    """One emulated Pi: boots repeatedly, as the firmware would, and records each boot."""

    def __init__(self, config: MachineConfig):
        self.cfg = config
        self.cfg.workdir.mkdir(parents=True, exist_ok=True)
        if not self.cfg.ssh_port:
            self.cfg.ssh_port = free_port()
        self.boots: list[Boot] = []
        self.proc: subprocess.Popen | None = None

    # -- one boot

    def _qemu_args(self, append: str, log: Path) -> list[str]:
        c = self.cfg
        guest = c.guest_ip or ""
        netdev = (
            f"user,id=net0,net={c.net},host={c.gateway},dns={c.dns},restrict=on,"
            f"hostfwd=tcp:127.0.0.1:{c.ssh_port}-{guest}:22"
        )
        return [
            c.qemu,
            "-M", "virt",
            "-cpu", c.cpu,
            "-m", str(c.memory_mib),
            "-smp", str(c.smp),
            "-kernel", str(c.kernel),
            "-initrd", str(c.initrd),
            "-append", append,
            "-drive", f"file={c.image},format=raw,if=none,id=disk0,cache=writeback",
            "-device", "virtio-blk-pci,drive=disk0",
            "-netdev", netdev,
            # romfile=: no PXE option ROM (the kernel is booted directly), so
            # ipxe-qemu, which a --no-install-recommends qemu lacks, is not needed.
            "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=",
            # The Pi has a hardware RNG; so does this machine (sshd needs entropy).
            "-device", "virtio-rng-pci",
            "-chardev", f"file,id=serial0,path={log}",
            "-serial", "chardev:serial0",
            "-display", "none",
            "-monitor", "none",
            "-no-reboot",
        ]

    def power_on(self) -> Boot:
        if self.proc and self.proc.poll() is None:
            raise BootError("power_on: the machine is already running")
        cmdline_txt = read_boot_file(self.cfg.image, "cmdline.txt").decode()
        index = len(self.boots) + 1
        log = self.cfg.workdir / f"boot-{index:02d}.log"
        log.write_bytes(b"")
        append = kernel_command_line(cmdline_txt)
        boot = Boot(index, stage_of(cmdline_txt), cmdline_txt.strip(), log, time.monotonic())
        (self.cfg.workdir / f"boot-{index:02d}.cmdline").write_text(append + "\n")
        self.proc = subprocess.Popen(
            self._qemu_args(append, log),
            stdin=subprocess.DEVNULL,
            stdout=open(self.cfg.workdir / f"boot-{index:02d}.qemu.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.boots.append(boot)
        return boot

    def _watch(self, boot: Boot, until_steady: bool) -> str:
        """Follow one boot until it reboots, powers off, or (until_steady) settles."""
        c = self.cfg
        while True:
            now = time.monotonic() - boot.started
            data = boot.log.read_bytes()
            if boot.login_after is None and LOGIN_PROMPT.search(data):
                boot.login_after = now
            rc = self.proc.poll()
            if rc is not None:
                boot.ended_after = now
                data = boot.log.read_bytes()
                if REBOOT_MARK in data:
                    boot.outcome = "reboot"
                elif POWEROFF_MARK in data:
                    boot.outcome = "poweroff"
                else:
                    boot.outcome = "crashed"
                    qlog = (c.workdir / f"boot-{boot.index:02d}.qemu.log").read_text(errors="replace")
                    raise BootError(
                        f"boot {boot.index}: QEMU exited with status {rc} without a guest reboot or "
                        f"power-off\n{qlog.strip()}\n{console_tail(boot.log)}"
                    )
                return boot.outcome
            stuck = next((m for m in STUCK_MARKS if m in data), None)
            if stuck is not None:
                time.sleep(5)  # let the console show what follows
                boot.outcome = "stuck"
                self.kill()
                raise BootError(
                    f"boot {boot.index} ({boot.stage}): the console says \"{stuck.decode()}\" "
                    f"(console log {boot.log})\n{console_tail(boot.log)}"
                )
            if until_steady and boot.login_after is not None and now - boot.login_after >= c.settle:
                boot.outcome = "steady"
                return boot.outcome
            if boot.login_after is None and now > c.boot_timeout:
                boot.outcome = "timeout"
                self.kill()
                raise BootError(
                    f"boot {boot.index} ({boot.stage}): neither a login prompt nor a reboot within "
                    f"{c.boot_timeout:.0f} s (console log {boot.log})\n{console_tail(boot.log)}"
                )
            time.sleep(1)

    # -- whole sequences

    def boot_until_steady(self) -> list[Boot]:
        """Power on, and again after every guest reboot, until a boot reaches its
        login prompt and then requests no reboot for `settle` seconds. The
        machine is left running in that steady state."""
        first = len(self.boots)
        while len(self.boots) - first < self.cfg.max_boots:
            boot = self.power_on()
            print(f"  boot {boot.index} ({boot.stage}) started, console: {boot.log}", flush=True)
            outcome = self._watch(boot, until_steady=True)
            print(f"  {boot.describe()}", flush=True)
            if outcome == "steady":
                return self.boots[first:]
            if outcome == "poweroff":
                raise BootError(
                    f"boot {boot.index} ({boot.stage}): the guest powered off instead of rebooting\n"
                    f"{console_tail(boot.log)}"
                )
        raise BootError(
            f"no steady state after {self.cfg.max_boots} boots: the system keeps rebooting\n"
            f"{console_tail(self.boots[-1].log)}"
        )

    def wait_for_exit(self, timeout: float) -> str:
        """After asking the guest to power off or reboot: wait for QEMU to exit."""
        boot = self.boots[-1]
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                boot.outcome = "killed"
                raise BootError(
                    f"boot {boot.index}: the guest did not shut down within {timeout:.0f} s\n"
                    f"{console_tail(boot.log)}"
                )
            time.sleep(1)
        boot.ended_after = time.monotonic() - boot.started
        data = boot.log.read_bytes()
        boot.outcome = (
            "poweroff" if POWEROFF_MARK in data else "reboot" if REBOOT_MARK in data else "exited"
        )
        return boot.outcome

    def kill(self) -> None:
        """Pull the power."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# ---------------------------------------------------------------- console logs

INTERESTING = re.compile(
    r"(error|fail|warn|denied|refused|panic|oops|emergency|timed out|picluster|k3s|firstboot|"
    r"sshswitch|userconf|reboot|login:)",
    re.IGNORECASE,
)


def console_tail(log: Path, lines: int = 60) -> str:
    """The relevant lines of a console log: notable lines plus the last few."""
    try:
        text = log.read_bytes().decode(errors="replace").replace("\r", "")
    except FileNotFoundError:
        return f"(no console log at {log})"
    all_lines = [l for l in text.split("\n") if l.strip()]
    # Strip ANSI colour codes systemd prints.
    all_lines = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in all_lines]
    notable = [l for l in all_lines[:-15] if INTERESTING.search(l)][-(lines - 15):]
    tail = all_lines[-15:]
    out = [f"--- console {log} (notable lines, then the last {len(tail)}) ---"]
    out += notable
    if notable:
        out.append("  [...]")
    out += tail
    out.append("--- end of console ---")
    return "\n".join(out)


# ---------------------------------------------------------------- CLI


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", type=Path, required=True, help="fixture directory (tests/boot/fixture/build.sh)")
    ap.add_argument("--image", type=Path, help="image to boot (default: a copy of the fixture's base.img)")
    ap.add_argument("--workdir", type=Path, default=Path("target/boot-test/manual"))
    ap.add_argument("--guest-ip", help="the guest's static address (default: DHCP)")
    ap.add_argument("--boot-timeout", type=float, default=900)
    ap.add_argument("--settle", type=float, default=60)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    image = args.image
    if image is None:
        image = args.workdir / "disk.img"
        subprocess.run(["cp", "--sparse=always", str(args.fixture / "base.img"), str(image)], check=True)
    m = PiMachine(
        MachineConfig(
            image=image,
            kernel=args.fixture / "vmlinuz",
            initrd=args.fixture / "initrd.img",
            workdir=args.workdir,
            guest_ip=args.guest_ip,
            boot_timeout=args.boot_timeout,
            settle=args.settle,
        )
    )
    try:
        m.boot_until_steady()
        print(f"steady; SSH is forwarded to 127.0.0.1:{m.cfg.ssh_port}. Ctrl-C powers off.")
        while m.running():
            time.sleep(1)
    except BootError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        m.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
