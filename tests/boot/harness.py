"""Shared machinery of the QEMU boot test: assertions, SSH into the guest, the
fixture, image edits and reports. Used by boottest.py (full mode) and smoke.py.

Standard library only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import qemu_pi
from qemu_pi import PiMachine, console_tail

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class TestFailure(Exception):
    pass


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# ---------------------------------------------------------------- checks


class Checks:
    """Collects assertions; each one prints, failures are raised together at the end."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def ok(self, cond: bool, what: str, detail: str = "") -> bool:
        if cond:
            self.passed += 1
            print(f"  ok   {what}")
        else:
            self.failed.append(what + (f": {detail}" if detail else ""))
            print(f"  FAIL {what}" + (f"\n       {detail}" if detail else ""))
        return cond

    def equal(self, got, want, what: str) -> bool:
        return self.ok(got == want, what, f"got {got!r}, want {want!r}")


# ---------------------------------------------------------------- ssh


class Ssh:
    def __init__(self, key: Path, user: str, port: int, workdir: Path):
        self.key, self.user, self.port = key, user, port

    def base(self, extra: list[str] | None = None) -> list[str]:
        return [
            "ssh",
            "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",  # host keys change at the first boot
            "-o", "ConnectTimeout=20",
            "-o", "ServerAliveInterval=15",
            "-o", "LogLevel=ERROR",
            *(extra or []),
        ]

    def run(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = self.base(["-i", str(self.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        cmd += [f"{self.user}@127.0.0.1", command]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise TestFailure(f"ssh {self.user}@guest {command!r} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def out(self, command: str) -> str:
        return self.run(command).stdout.strip()

    def wait(self, timeout: float) -> float:
        """Wait until a key login works; return the seconds it took."""
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            try:
                r = self.run("true", check=False, timeout=60)
                if r.returncode == 0:
                    return time.monotonic() - start
                last = r.stderr.strip()
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
            time.sleep(5)
        raise TestFailure(f"no SSH login as {self.user} with the key within {timeout:.0f} s: {last}")

    def offered_methods(self) -> str:
        """The authentication methods the server offers, from a login without key."""
        cmd = self.base([
            "-o", "BatchMode=yes",
            "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password,keyboard-interactive",
            "-o", "LogLevel=INFO",
        ]) + [f"{self.user}@127.0.0.1", "true"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return "LOGGED-IN-WITHOUT-KEY"
        m = re.search(r"Permission denied \(([^)]*)\)", r.stderr)
        return m.group(1) if m else r.stderr.strip()


# ---------------------------------------------------------------- fixture & images


def build_fixture(cache: Path | None, release: str = "bookworm") -> Path:
    step(f"fixture: build or reuse the Raspberry Pi OS {release}-shaped image")
    start = time.monotonic()
    cmd = [str(HERE / "fixture" / "build.sh"), "--release", release]
    if cache:
        cmd += ["--cache", str(cache)]
    out = run(cmd, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()
    fixture = Path(out[-1])
    print(f"  fixture {fixture} ready in {time.monotonic() - start:.0f} s")
    return fixture


def sparse_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    run(["cp", "--reflink=auto", "--sparse=always", str(src), str(dst)])


def ext4_write(image: Path, path: str, content: bytes, mode: int, uid: int, gid: int,
               dir_mode: int = 0o700) -> None:
    """Write a file into the image's ext4 root partition (debugfs at the partition offset)."""
    root = qemu_pi.partitions(image)[1]
    dev = f"{image}?offset={root.start}"
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(content)
        tmp.flush()
        parent = os.path.dirname(path)
        cmds = [f"mkdir {parent}", f"set_inode_field {parent} mode 040{dir_mode:o}",
                f"set_inode_field {parent} uid {uid}", f"set_inode_field {parent} gid {gid}",
                f"rm {path}", f"write {tmp.name} {path}",
                f"set_inode_field {path} mode 0100{mode:o}",
                f"set_inode_field {path} uid {uid}", f"set_inode_field {path} gid {gid}"]
        with tempfile.NamedTemporaryFile("w") as script:
            script.write("\n".join(cmds) + "\n")
            script.flush()
            r = run(["debugfs", "-w", "-f", script.name, dev], capture_output=True, text=True)
        check = run(["debugfs", "-R", f"cat {path}", dev], capture_output=True)
        if check.stdout != content:
            raise TestFailure(f"debugfs could not write {path} into {image}: {r.stderr}")


# ---------------------------------------------------------------- reporting


def report(title: str, machine: PiMachine) -> None:
    print(f"\n{title}: boot durations (TCG emulation)")
    print(f"  {'boot':<5}{'stage':<15}{'login prompt':>14}{'ended':>10}  outcome")
    for b in machine.boots:
        login = f"{b.login_after:.0f} s" if b.login_after is not None else "-"
        ended = f"{b.ended_after:.0f} s" if b.ended_after is not None else "-"
        print(f"  {b.index:<5}{b.stage:<15}{login:>14}{ended:>10}  {b.outcome}")
    # A stage lasts from power-on to its reboot, or to the login prompt for a
    # boot that stays up (later times include the test's own checks).
    parts = []
    for b in machine.boots:
        d = b.ended_after if b.outcome == "reboot" else b.login_after
        if d is not None:
            parts.append(f"{b.stage} {d:.0f} s")
    print("  per boot (power-on to reboot or login prompt): " + ", ".join(parts))


def failure_context(machine: PiMachine | None, ssh: Ssh | None, agent_units: list[str]) -> None:
    """Print what helps to understand a failure: console lines and, if SSH works, the journal."""
    if machine and machine.boots:
        for b in machine.boots[-2:]:
            print(console_tail(b.log), file=sys.stderr)
    if ssh and machine and machine.running():
        for unit in agent_units:
            try:
                r = ssh.run(f"sudo journalctl -b --no-pager -o cat -u {unit} | tail -n 40", check=False, timeout=60)
                print(f"--- journal of {unit} ---\n{r.stdout.strip()}\n--- end ---", file=sys.stderr)
            except Exception as e:  # best effort only
                print(f"(journal of {unit} unavailable: {e})", file=sys.stderr)



def summary(checks: Checks) -> int:
    print(f"\n{checks.passed} passed, {len(checks.failed)} failed")
    for f in checks.failed:
        print(f"  failed: {f}")
    return 0 if not checks.failed else 1


def fixture_facts(fixture: Path) -> dict[str, str]:
    """fixture.env (written by fixture/image.sh) as a dict."""
    facts = {}
    for line in (fixture / "fixture.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            facts[k] = v
    return facts


def grow_card(image: Path, mib: int) -> None:
    """Make the image file `mib` MiB bigger, as a card larger than the image is."""
    with open(image, "r+b") as f:
        f.truncate(os.path.getsize(image) + mib * 1024 * 1024)
