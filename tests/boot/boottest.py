#!/usr/bin/env python3
"""picluster QEMU boot test (opt-in; run it through tests/boot/run.sh).

Full mode (default): build the workspace, serve a K3s release mirror holding a
stand-in k3s on 127.0.0.1, write a cluster file and secrets with a fresh SSH
key, `picluster build` node images from the Raspberry Pi OS-shaped fixture,
boot each under QEMU as a Pi would boot, and check what the node agent did.

Smoke mode (--smoke, smoke.py): boot the plain fixture, without picluster:
proves the fixture, the first-boot stand-ins, the runner and SSH forwarding.

--release bookworm|trixie picks the Raspberry Pi OS release the fixture is
shaped like (releases.py says what differs).

Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets as pysecrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qemu_pi  # noqa: E402
from harness import (HERE, REPO, Checks, Ssh, TestFailure, build_fixture, ext4_write, failure_context,  # noqa: E402
                     fixture_facts, grow_card, report, run, sparse_copy, step, summary)
from qemu_pi import BootError, MachineConfig, PiMachine  # noqa: E402
from releases import (RELEASES, Release, check_cloud_init_off, check_os_first_boot,  # noqa: E402
                      check_trixie_growth)
from smoke import smoke  # noqa: E402

K3S_VERSION = "v1.33.5+k3s1"
GATEWAY = "192.168.0.1"
CGROUP_ARGS = ["cgroup_enable=memory"]


# ---------------------------------------------------------------- full mode


class Mirror:
    """A K3s release mirror on 127.0.0.1: <version>/k3s-arm64 and sha256sum-arm64.txt."""

    def __init__(self, root: Path):
        handler = lambda *a, **kw: QuietHandler(*a, directory=str(root), **kw)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, fmt, *args):  # keep the test output readable
        QuietHandler.requests.append(fmt % args)


def build_standin(out_dir: Path) -> Path:
    """Compile the stand-in k3s for aarch64 (static musl, linked by rust-lld)."""
    out = out_dir / "k3s-arm64"
    env = {**os.environ, "K3S_STANDIN_VERSION": K3S_VERSION}
    run(["rustc", "--edition", "2021", "--target", "aarch64-unknown-linux-musl", "-C", "linker=rust-lld",
         "-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols", "-o", str(out),
         str(HERE / "k3s-standin" / "k3s_standin.rs")], env=env)
    return out


def make_mirror(work: Path) -> Path:
    root = work / "mirror"
    vdir = root / K3S_VERSION
    vdir.mkdir(parents=True)
    binary = build_standin(vdir)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    (vdir / "sha256sum-arm64.txt").write_text(f"{digest}  k3s-arm64\n")
    return root


def cargo_build() -> tuple[Path, Path]:
    step("build the workspace: picluster (host) and picluster-node (aarch64-unknown-linux-musl)")
    run(["cargo", "build", "--release", "-p", "picluster"], cwd=REPO)
    run(["cargo", "build", "--release", "-p", "picluster-node", "--target", "aarch64-unknown-linux-musl"], cwd=REPO)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "picluster", target / "aarch64-unknown-linux-musl" / "release" / "picluster-node"


def preflight(picluster: Path, agent: Path) -> None:
    """Fail early and clearly while the builder or the agent is not there yet."""
    problems = []
    r = subprocess.run([str(picluster), "build", "--help"], capture_output=True, text=True)
    text = r.stdout + r.stderr
    if r.returncode != 0 or "--base" not in text or "--node" not in text:
        problems.append(
            f"`{picluster} build --help` does not offer --base and --node: `picluster build` "
            "(issue 2) is not implemented yet"
        )
    r = subprocess.run(["qemu-aarch64-static", str(agent), "--help"], capture_output=True, text=True)
    text = r.stdout + r.stderr
    if r.returncode != 0 or "stage1" not in text or "status" not in text:
        problems.append(
            f"`{agent} --help` does not list stage1 and status: the node agent (issue 3) is not "
            "implemented yet"
        )
    if problems:
        raise TestFailure("pre-flight: the boot test needs the builder and the node agent:\n  - "
                          + "\n  - ".join(problems)
                          + "\n  (tests/boot/run.sh --smoke checks the boot infrastructure alone)")


def node_password(node_secret: str, node: str) -> str:
    """As profiles/src/secrets.rs derives it."""
    return hmac.new(node_secret.encode(), b"picluster k3s node password\0" + node.encode(), hashlib.sha256).hexdigest()


NODES = [
    {"name": "bt-server", "ip": "192.168.0.120", "role": "server"},
    {"name": "bt-agent", "ip": "192.168.0.121", "role": "agent"},
]
ADMIN = "picl"


def write_cluster(work: Path, fixture: Path, mirror_url: str, pubkey: str) -> tuple[Path, dict]:
    cluster = work / "cluster.toml"
    base = fixture / "base.img"
    sha = (fixture / "base.img.sha256").read_text().split()[0]
    # The mirror serves the stand-in under the real version, which
    # images/k3s.toml pins to the real binary's digest: the cluster file's
    # own pin (what a user with a private mirror writes) names the stand-in.
    standin = (work / "mirror" / K3S_VERSION / "sha256sum-arm64.txt").read_text().split()[0]
    nodes = "\n".join(
        f'[[nodes]]\nname = "{n["name"]}"\nip = "{n["ip"]}"\nrole = "{n["role"]}"\n'
        + ('labels = { "picluster.io/boottest" = "yes" }\n' if n["role"] == "server" else "")
        for n in NODES
    )
    cluster.write_text(f"""# picluster boot test (tests/boot): written by boottest.py
[cluster]
name = "boottest"
k3s_version = "{K3S_VERSION}"
k3s_mirror = "{mirror_url}"
k3s_sha256 = "{standin}"

[image]
url = "file://{base}"
sha256 = "{sha}"

[network]
prefix = 24
gateway = "{GATEWAY}"
dns = ["{GATEWAY}"]

[access]
user = "{ADMIN}"
ssh_authorized_keys = ["{pubkey}"]

{nodes}
[platform]
components = []
""")
    secrets = {
        "k3s_token": pysecrets.token_hex(32),
        "k3s_agent_token": pysecrets.token_hex(32),
        "node_secret": pysecrets.token_hex(32),
    }
    path = work / "secrets.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write('# picluster boot test secrets (fresh for every run)\n')
        for k, v in secrets.items():
            f.write(f'{k} = "{v}"\n')
    return cluster, secrets


# Steps a stand-in k3s cannot satisfy: they may stay waiting, with a message.
READY_STEP = re.compile(r"ready", re.IGNORECASE)
WAITING = {"waiting", "pending", "retrying", "running", "in-progress", "in_progress"}
# Journal fields that change on every run of a step (ignored by the idempotence check).
VOLATILE = re.compile(r"(time|_at$|^at$|attempt|started|finished|updated|since|until|duration|last_error|error|message|boot)",
                      re.IGNORECASE)


def journal_steps(doc) -> list[dict]:
    """The steps of `picluster-node status --json` (tolerant of the exact shape)."""
    if isinstance(doc, dict):
        for key in ("steps", "journal", "state"):
            if key in doc:
                return journal_steps(doc[key])
        if all(isinstance(v, dict) for v in doc.values()):
            return [{"name": k, **v} for k, v in doc.items()]
    if isinstance(doc, list):
        return [s for s in doc if isinstance(s, dict)]
    return []


def step_name(s: dict) -> str:
    return str(s.get("step") or s.get("name") or s.get("id") or "?")


def step_message(s: dict) -> str:
    return str(s.get("message") or s.get("last_error") or s.get("detail") or s.get("error") or "")


def judge_journal(steps: list[dict], notice: str = "") -> tuple[bool, list[str]]:
    """Every step done; a Ready step the stand-in cannot satisfy may be waiting
    (running) with a clear message in its journal record (the login notice must
    say so too); steps after a waiting Ready step may be pending."""
    problems = []
    if not steps:
        return False, ["the journal lists no steps"]
    waiting_ready = None
    for s in steps:
        name, status = step_name(s), str(s.get("status", "")).lower()
        if status == "done":
            continue
        if waiting_ready is not None and status in ("pending", ""):
            continue  # after Ready: cannot run before the node is Ready
        if READY_STEP.search(name) and status in WAITING:
            message = step_message(s).strip()
            if message and re.search(r"waiting.*ready", notice, re.IGNORECASE):
                waiting_ready = name
                continue
            problems.append(f"{name}: {status}, but " + ("the login notice does not say it is waiting" if message else "its journal record does not say why"))
            continue
        problems.append(f"{name}: {status or 'no status'}" + (f" ({step_message(s)})" if step_message(s) else ""))
    return not problems, problems


def tolerated(steps: list[dict], step: str = "rename-wizard") -> str:
    """What a tolerant stage-1 step found and carried on past ("" when it
    found nothing or is not done)."""
    for s in steps:
        if step_name(s) == step and str(s.get("status", "")).lower() == "done":
            detail = str(s.get("detail") or "")
            return detail.split("found: ", 1)[1] if "found: " in detail else ""
    return ""


def normalise(doc):
    if isinstance(doc, dict):
        # A step still running (Ready, under the stand-in) notes its progress:
        # check count and time waited change by design.
        running = str(doc.get("status", "")).lower() == "running"
        return {k: normalise(v) for k, v in sorted(doc.items())
                if not VOLATILE.search(k) and not (running and k == "detail")}
    if isinstance(doc, list):
        return [normalise(v) for v in doc]
    return doc


STATE_FILES = [
    "/etc/hostname", "/etc/hosts", "/etc/passwd", "/etc/group",
    "/etc/NetworkManager/system-connections/*", "/etc/ssh/sshd_config.d/*", "/etc/sudoers.d/*",
    "/etc/picluster/*", "/etc/rancher/k3s/config.yaml", "/etc/rancher/node/password",
    "/usr/local/bin/k3s", "/usr/local/sbin/picluster-node", "/etc/systemd/system/*.service",
    "/home/*/.ssh/authorized_keys", "/boot/firmware/cmdline.txt", "/boot/firmware/config.txt",
    "/var/lib/k3s-standin/last-args", "/var/lib/k3s-standin/last-config.yaml",
    "/etc/ssh/ssh_host_ed25519_key.pub", "/etc/machine-id", "/etc/fstab", "/boot/firmware/user-data",
]


def state_snapshot(ssh: Ssh, services: list[str]) -> list[str]:
    """Checksums of the state the agent manages, for the idempotence check."""
    files = " ".join(STATE_FILES)
    lines = ssh.out(f"sudo sh -c 'sha256sum {files} 2>/dev/null; true'").splitlines()
    lines += ["boot files: " + ssh.out("ls /boot/firmware | sort | tr '\\n' ' '")]
    for unit in services:
        st = ssh.run(f"systemctl is-enabled {unit}", check=False).stdout.strip()
        lines.append(f"{unit}: {st}")
    journal = ssh.run("sudo cat /var/lib/picluster/state.json", check=False).stdout
    try:
        lines.append("journal: " + json.dumps(normalise(json.loads(journal)), sort_keys=True))
    except json.JSONDecodeError:
        lines.append("journal: unreadable")
    return lines


NOTICE = "/etc/motd.d/picluster"


def wait_for_agent(ssh: Ssh, timeout: float) -> tuple[list[dict], str, str]:
    """Poll `picluster-node status --json` until the journal is settled (or time
    runs out); return its steps, the status table and the node's login notice."""
    deadline = time.monotonic() + timeout
    steps: list[dict] = []
    notice = ""
    while time.monotonic() < deadline:
        r = ssh.run("sudo picluster-node status --json", check=False)
        notice = ssh.run(f"cat {NOTICE} 2>/dev/null", check=False).stdout
        if r.returncode == 0:
            try:
                steps = journal_steps(json.loads(r.stdout))
            except json.JSONDecodeError:
                steps = []
            if judge_journal(steps, notice)[0]:
                break
        time.sleep(15)
    table = ssh.run("sudo picluster-node status", check=False)
    return steps, (table.stdout + table.stderr), notice


def check_node(args, release: Release, node: dict, built: Path, secrets: dict, key: Path, fixture: Path,
               work: Path, checks: Checks) -> PiMachine:
    name, role, ip = node["name"], node["role"], node["ip"]
    service = "k3s" if role == "server" else "k3s-agent"
    nwork = work / name
    nwork.mkdir()
    image = nwork / "disk.img"
    sparse_copy(built, image)
    if release.grow_mib:
        grow_card(image, release.grow_mib)
    old_id = qemu_pi.disk_id(image)

    step(f"{name}: the built image before boot")
    cmdline_txt = qemu_pi.read_boot_file(image, "cmdline.txt").decode()
    for a in CGROUP_ARGS:
        checks.ok(a in cmdline_txt.split(), f"{name}: cmdline.txt gains {a}")
    checks.ok("systemd.run=" in cmdline_txt, f"{name}: cmdline.txt runs the agent's stage 1")
    checks.ok(release.first_boot_arg in cmdline_txt.split(), f"{name}: cmdline.txt keeps the OS's {release.first_boot_arg}")
    if release.name == "trixie":
        checks.ok("cloud-init=disabled" in cmdline_txt.split(), f"{name}: cmdline.txt turns cloud-init off")
    boot_files = qemu_pi.list_boot_files(image)
    for f in ("ssh", "picluster-node", "picluster-node.json", "picluster-secrets.json", "k3s-arm64"):
        checks.ok(f in boot_files, f"{name}: boot partition holds {f}")
    node_secrets = json.loads(qemu_pi.read_boot_file(image, "picluster-secrets.json"))
    expected_config = next((f["content"] for f in node_secrets["files"] if f["path"] == "/etc/rancher/k3s/config.yaml"), None)
    checks.ok(expected_config is not None, f"{name}: the bundle carries config.yaml")
    secret_values = {
        "k3s_token": secrets["k3s_token"],
        "k3s_agent_token": secrets["k3s_agent_token"],
        "node_secret": secrets["node_secret"],
        "node password": node_password(secrets["node_secret"], name),
    }
    fat = qemu_pi.boot_partition_bytes(image)
    own_token = secrets["k3s_token"] if role == "server" else secrets["k3s_agent_token"]
    checks.ok(own_token.encode() in fat, f"{name}: its join token is on the boot partition before boot (so the scrub check means something)")
    if role == "agent":
        checks.ok(secrets["k3s_token"].encode() not in fat, f"{name}: an agent's image never carries the server token")
        checks.ok(re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", fat) is None, f"{name}: an agent's image carries no private key")

    machine = PiMachine(MachineConfig(
        image=image, kernel=fixture / "vmlinuz", initrd=fixture / "initrd.img", workdir=nwork,
        guest_ip=ip, boot_timeout=args.boot_timeout, settle=args.settle, max_boots=args.max_boots,
    ))
    ssh = Ssh(key, ADMIN, machine.cfg.ssh_port, nwork)
    try:
        step(f"{name}: boot until steady (each boot ~2-4 min under emulation)")
        boots = machine.boot_until_steady()
        checks.equal([b.stage for b in boots], release.node_boots(), f"{name}: boots: " + ", ".join(release.node_boots()))
        waited = ssh.wait(300)
        print(f"  SSH login as {ADMIN} {waited:.0f} s after the steady state")

        step(f"{name}: access and identity")
        checks.equal(ssh.out("id -un"), ADMIN, f"{name}: SSH login with the cluster file's key as {ADMIN}")
        methods = ssh.offered_methods()
        checks.ok("password" not in methods and "keyboard-interactive" not in methods and methods != "LOGGED-IN-WITHOUT-KEY",
                  f"{name}: password login is refused (server offers: {methods})")
        sshd = ssh.out("sudo sshd -T").lower().splitlines()
        checks.ok("passwordauthentication no" in sshd, f"{name}: sshd has PasswordAuthentication no")
        checks.equal(ssh.out("hostname"), name, f"{name}: hostname")
        addr = ssh.out("ip -4 -o addr show dev eth0")
        checks.ok(f"inet {ip}/24" in addr, f"{name}: eth0 has {ip}/24", addr)
        route = ssh.out("ip route show default")
        checks.ok(f"via {GATEWAY} dev eth0" in route, f"{name}: default route via {GATEWAY}", route)
        keyfiles = ssh.out("sudo stat -c '%a %U %n' /etc/NetworkManager/system-connections/*")
        checks.ok(all(l.startswith("600 root") for l in keyfiles.splitlines()), f"{name}: NetworkManager keyfiles are root 0600", keyfiles)
        akeys = ssh.out("stat -c '%a %U' ~/.ssh ~/.ssh/authorized_keys")
        checks.equal(akeys.splitlines(), [f"700 {ADMIN}", f"600 {ADMIN}"], f"{name}: ~/.ssh 0700, authorized_keys 0600, owned by {ADMIN}")

        checks.equal(ssh.out(f"getent passwd {ADMIN} | cut -d: -f7"), "/bin/bash", f"{name}: {ADMIN} has a login shell")
        checks.equal(ssh.out("sudo -n id -u"), "0", f"{name}: {ADMIN} has sudo without a password (picluster's own rule)")

        step(f"{name}: boot configuration")
        cmdline = check_os_first_boot(ssh, checks, name, release, old_id)
        for a in CGROUP_ARGS:
            checks.ok(a in cmdline, f"{name}: cmdline.txt holds {a}")
        checks.ok(not any(t.startswith("systemd.") for t in cmdline), f"{name}: no systemd.* argument left", " ".join(cmdline))
        checks.ok(not any(t.startswith("init=") for t in cmdline), f"{name}: no init= left")
        checks.ok("memory" in ssh.out("cat /sys/fs/cgroup/cgroup.controllers"), f"{name}: memory cgroup controller enabled")
        checks.equal(ssh.out("systemctl is-active multi-user.target"), "active", f"{name}: boot reached multi-user.target (the user wizard is out of the way)")
        checks.ok(ssh.run("test ! -e /boot/firmware/picluster-secrets.json", check=False).returncode == 0,
                  f"{name}: picluster-secrets.json is gone from the boot partition")
        if release.name == "trixie":
            check_trixie_growth(ssh, checks, name)
            check_cloud_init_off(ssh, checks, name, cmdline)

        step(f"{name}: K3s stand-in and the agent's journal")
        steps, table, notice = wait_for_agent(ssh, args.agent_timeout)
        print("  picluster-node status:\n    " + table.strip().replace("\n", "\n    "))
        print(f"  {NOTICE}:\n    " + notice.strip().replace("\n", "\n    "))
        settled, problems = judge_journal(steps, notice)
        checks.ok(settled, f"{name}: every journal step done, Ready waiting with a message", "; ".join(problems))
        checks.equal(ssh.out(f"systemctl is-active {service}"), "active", f"{name}: {service}.service is active (Type=notify: the stand-in said READY=1)")
        checks.equal(ssh.out("sudo cat /var/lib/k3s-standin/last-args").split(), [role], f"{name}: k3s ran as `k3s {role}`")
        config = ssh.out("sudo cat /var/lib/k3s-standin/last-config.yaml") + "\n"
        checks.equal(config.strip(), (expected_config or "").strip(), f"{name}: k3s read the config.yaml the bundle carried")
        checks.equal(ssh.out("sudo stat -c '%a %U' /etc/rancher/k3s/config.yaml"), "600 root", f"{name}: config.yaml is root 0600")
        if role == "server":
            checks.ok("cluster-init: true" in config, f"{name}: first server has cluster-init: true")
            checks.ok(f'token: "K10{secrets["ca_hash"]}::server:{secrets["k3s_token"]}"' in config,
                      f"{name}: server config has the server token, pinning the shipped CA")
            tls = ssh.out("sudo cat /var/lib/k3s-standin/last-tls").splitlines()
            want = sorted(f"600 {n}" for n in ("server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key",
                                               "request-header-ca.crt", "request-header-ca.key", "etcd/peer-ca.crt",
                                               "etcd/peer-ca.key", "etcd/server-ca.crt", "etcd/server-ca.key",
                                               "service.key"))
            checks.equal(tls, want, f"{name}: the CA files were in server/tls, 0600, when k3s started")
            shipped = ssh.out("sudo sha256sum /var/lib/rancher/k3s/server/tls/server-ca.crt").split()[0]
            checks.equal(shipped, secrets["ca_hash"], f"{name}: the server CA k3s found is the one the token pins")
            checks.ok("picluster.io/boottest=yes" in config, f"{name}: node label rendered")
        else:
            checks.ok('server: "https://192.168.0.120:6443"' in config, f"{name}: agent joins https://192.168.0.120:6443")
            checks.ok(f'token: "K10{secrets["ca_hash"]}::node:{secrets["k3s_agent_token"]}"' in config,
                      f"{name}: agent config has the agent token, pinning the cluster CA")
            checks.equal(ssh.out("sudo cat /var/lib/k3s-standin/last-tls"), "", f"{name}: an agent has no CA file")
            checks.ok(secrets["k3s_token"] not in config, f"{name}: agent config lacks the server token")
        checks.ok(f'node-name: "{name}"' in config and f'node-ip: "{ip}"' in config, f"{name}: node-name and node-ip")
        checks.equal(ssh.out("sudo cat /etc/rancher/node/password"), secret_values["node password"], f"{name}: stable node password")

        step(f"{name}: power cycle (idempotence)")
        units = ["picluster-node", service, "ssh", "userconfig"]
        before = state_snapshot(ssh, units)
        ssh.run("sudo systemctl poweroff", check=False, timeout=60)
        machine.wait_for_exit(300)
        fat = qemu_pi.boot_partition_bytes(image)
        for what, value in secret_values.items():
            checks.ok(value.encode() not in fat, f"{name}: {what} is not anywhere in the raw boot partition")
        boots = machine.boot_until_steady()
        checks.equal([b.stage for b in boots], ["normal"], f"{name}: a power cycle boots once, no reboot")
        ssh.wait(300)
        checks.equal(ssh.out("hostname"), name, f"{name}: the hostname survives a power cycle")
        wait_for_agent(ssh, args.agent_timeout)
        after = state_snapshot(ssh, units)
        changed = [l for l in after if l not in before] + [f"(gone) {l}" for l in before if l not in after]
        checks.ok(not changed, f"{name}: a second power cycle changes nothing", "; ".join(changed))
        ssh.run("sudo systemctl poweroff", check=False, timeout=60)
        machine.wait_for_exit(300)
    except (BootError, TestFailure, subprocess.TimeoutExpired) as e:
        checks.ok(False, f"{name}: boot sequence", str(e))
        failure_context(machine, ssh, ["picluster-node", service])
    finally:
        machine.kill()
    return machine


def check_tolerated_variant(args, release: Release, node: dict, built: Path, key: Path, fixture: Path,
                            work: Path, checks: Checks) -> PiMachine:
    """A Pi OS variant a non-fatal stage-1 step cannot handle the usual way:
    userconfig.service copied into /etc/systemd/system by a customisation tool,
    so `systemctl mask` fails. The node must still come up reachable by SSH
    and say what it found."""
    name = node["name"]
    nwork = work / f"{name}-variant"
    nwork.mkdir()
    image = nwork / "disk.img"
    sparse_copy(built, image)
    wizard = (Path(__file__).parent / "fixture/standins/usr/lib/systemd/system/userconfig.service").read_bytes()
    ext4_write(image, "/etc/systemd/system/userconfig.service", wizard, 0o644, 0, 0, dir_mode=0o755)
    machine = PiMachine(MachineConfig(
        image=image, kernel=fixture / "vmlinuz", initrd=fixture / "initrd.img", workdir=nwork,
        guest_ip=node["ip"], boot_timeout=args.boot_timeout, settle=args.settle, max_boots=args.max_boots,
    ))
    ssh = Ssh(key, ADMIN, machine.cfg.ssh_port, nwork)
    try:
        step(f"{name} (variant): userconfig.service as a file in /etc; boot until steady")
        boots = machine.boot_until_steady()
        checks.equal([b.stage for b in boots], release.node_boots(),
                     f"{name} (variant): stage 1 ran once and the node booted normally")
        ssh.wait(300)
        checks.equal(ssh.out("id -un"), ADMIN, f"{name} (variant): reachable by SSH with the cluster file's key")
        doc = json.loads(ssh.out("sudo picluster-node status --json"))
        found = tolerated(journal_steps(doc))
        checks.ok("customisation tool" in found, f"{name} (variant): rename-wizard says what it found and carried on", found)
        log = ssh.out("sudo cat /boot/firmware/picluster-node.log")
        checks.ok("rename-wizard: continuing; found:" in log, f"{name} (variant): the FAT log says why")
        checks.equal(ssh.run("systemctl is-enabled userconfig", check=False).stdout.strip(), "disabled",
                     f"{name} (variant): the wizard is disabled")
        ssh.run("sudo systemctl poweroff", check=False, timeout=60)
        machine.wait_for_exit(300)
    except (BootError, TestFailure, subprocess.TimeoutExpired) as e:
        checks.ok(False, f"{name} (variant): boot sequence", str(e))
        failure_context(machine, ssh, ["picluster-node"])
    finally:
        machine.kill()
    return machine


def full(args) -> int:
    release = RELEASES[args.release]
    work = args.workdir / f"full-{release.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    picluster, agent = cargo_build()
    preflight(picluster, agent)
    fixture = build_fixture(args.cache, release.name)
    if fixture_facts(fixture).get("FIXTURE_RELEASE", "bookworm") != release.name:
        raise TestFailure(f"{fixture}: fixture.env names another release than {release.name}")

    step("K3s release mirror with the stand-in k3s on 127.0.0.1")
    mirror = Mirror(make_mirror(work))
    print(f"  {mirror.url}/{K3S_VERSION}/k3s-arm64")
    checks = Checks()
    machines = []
    try:
        key = work / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boottest@picluster", "-f", str(key)])
        pubkey = key.with_suffix(".pub").read_text().strip()
        cluster, secrets = write_cluster(work, fixture, mirror.url, pubkey)
        # The cluster's CAs beside secrets.toml (as `picluster init` makes them);
        # tokens pin the server CA by the SHA-256 of its file (k3s hashCA).
        run([str(picluster), "secrets", "-c", str(cluster)])
        secrets["ca_hash"] = hashlib.sha256((cluster.parent / "pki" / "server-ca.crt").read_bytes()).hexdigest()
        nodes = [n for n in NODES if not args.node or n["name"] in args.node]

        step("picluster build")
        out = work / "images"
        cmd = [str(picluster), "build", "-c", str(cluster), "--base", str(fixture / "base.img"), "--out", str(out)]
        for n in nodes:
            cmd += ["--node", n["name"]]
        start = time.monotonic()
        # A fresh download cache per run, so the mirror check below means something.
        cache = work / "picluster-cache"
        shutil.rmtree(cache, ignore_errors=True)
        r = subprocess.run(cmd, capture_output=True, text=True,
                           env={**os.environ, "PICLUSTER_AGENT": str(agent), "PICLUSTER_CACHE_DIR": str(cache)})
        print(f"  {' '.join(cmd)}\n  exit {r.returncode} after {time.monotonic() - start:.0f} s")
        if r.returncode != 0:
            raise TestFailure(f"picluster build failed:\n{r.stdout}\n{r.stderr}")
        checks.ok(any("k3s-arm64" in q for q in QuietHandler.requests), "picluster build fetched k3s-arm64 from the mirror")
        for n in nodes:
            built = out / f"{n['name']}.img"
            if not checks.ok(built.is_file(), f"{n['name']}: {built} written"):
                continue
            machines.append((n["name"], check_node(args, release, n, built, secrets, key, fixture, work, checks)))
            if n["role"] == "agent" and not args.no_variant:
                machines.append((f"{n['name']}-variant",
                                 check_tolerated_variant(args, release, n, built, key, fixture, work, checks)))
    except TestFailure as e:
        checks.ok(False, "boot test", str(e))
    finally:
        mirror.close()
    for name, m in machines:
        report(name, m)
    return summary(checks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="boot the plain fixture only (no picluster)")
    ap.add_argument("--release", choices=sorted(RELEASES), default="bookworm",
                    help="the Raspberry Pi OS release the fixture is shaped like (default bookworm)")
    ap.add_argument("--no-variant", action="store_true",
                    help="full mode: skip the extra agent boot where a non-fatal stage-1 step meets a Pi OS variant")
    ap.add_argument("--node", action="append", help="full mode: only this node (bt-server, bt-agent); repeatable")
    ap.add_argument("--cache", type=Path, help="fixture cache (default $PICLUSTER_BOOT_CACHE or ~/.cache/picluster-tests/boot)")
    ap.add_argument("--workdir", type=Path, default=REPO / "target" / "boot-test", help="images, console logs (default target/boot-test)")
    ap.add_argument("--boot-timeout", type=float, default=900, help="seconds a boot may take to reboot or reach its login prompt")
    ap.add_argument("--settle", type=float, default=60, help="seconds without a reboot after the login prompt that count as steady")
    ap.add_argument("--max-boots", type=int, default=5, help="boots before giving up on a steady state")
    ap.add_argument("--agent-timeout", type=float, default=900, help="seconds to wait for the agent's journal to settle")
    args = ap.parse_args()
    args.workdir = args.workdir.resolve()
    start = time.monotonic()
    try:
        rc = smoke(args) if args.smoke else full(args)
    except (TestFailure, BootError, subprocess.CalledProcessError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        rc = 1
    print(f"boot test {'passed' if rc == 0 else 'FAILED'} in {time.monotonic() - start:.0f} s (logs under {args.workdir})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
