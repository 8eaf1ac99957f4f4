#!/usr/bin/env python3
"""Fast checks of the boot test's own logic (no QEMU, a few seconds):

    python3 -m unittest discover -s tests/boot -p 'test_*.py'

The FAT helpers run against a real FAT32 partition made with sfdisk and
mkfs.vfat, read and written with mtools (skipped when those tools are missing).
"""

import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import boottest
import qemu_pi
import releases

SHIPPED = (
    "console=serial0,115200 console=tty1 root=PARTUUID=7069636c-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
)
AGENT_ARGS = (
    'cgroup_enable=memory systemd.run="/boot/firmware/picluster-node stage1" '
    "systemd.run_success_action=reboot systemd.run_failure_action=none "
    "systemd.unit=kernel-command-line.target"
)


class Firmware(unittest.TestCase):
    def test_serial0_becomes_the_last_console(self):
        got = qemu_pi.kernel_command_line(SHIPPED)
        self.assertEqual(
            got,
            "console=tty1 root=PARTUUID=7069636c-02 rootfstype=ext4 fsck.repair=yes rootwait quiet "
            "init=/usr/lib/raspberrypi-sys-mods/firstboot console=ttyAMA0,115200",
        )

    def test_quoted_systemd_run_stays_one_argument(self):
        line = SHIPPED.strip().replace(" quiet init=/usr/lib/raspberrypi-sys-mods/firstboot", "")
        got = qemu_pi.kernel_command_line(f"{line} {AGENT_ARGS}")
        self.assertIn('systemd.run="/boot/firmware/picluster-node stage1" ', got)
        self.assertTrue(got.endswith("console=ttyAMA0,115200"))

    def test_stages(self):
        self.assertEqual(qemu_pi.stage_of(SHIPPED.strip() + " " + AGENT_ARGS), "os-firstboot")
        self.assertEqual(qemu_pi.stage_of("root=x " + AGENT_ARGS), "agent-stage1")
        self.assertEqual(qemu_pi.stage_of("root=x cgroup_enable=memory"), "normal")

    def test_trixie_stages(self):
        # pi-gen tag 2026-06-18-raspios-trixie-arm64 stage1/00-boot-files/files/cmdline.txt ends in `resize`.
        trixie = "console=serial0,115200 console=tty1 root=PARTUUID=7069636c-02 rootfstype=ext4 fsck.repair=yes rootwait resize"
        self.assertEqual(qemu_pi.stage_of(trixie), "os-firstboot")
        self.assertEqual(qemu_pi.stage_of(f"{trixie} cloud-init=disabled {AGENT_ARGS}"), "agent-stage1")
        self.assertEqual(qemu_pi.stage_of(trixie.replace(" resize", " noresize")), "normal")
        self.assertEqual(releases.RELEASES["trixie"].node_boots(), ["agent-stage1", "normal"])
        self.assertEqual(releases.RELEASES["bookworm"].node_boots(), ["os-firstboot", "agent-stage1", "normal"])

    def test_login_prompt(self):
        self.assertTrue(qemu_pi.LOGIN_PROMPT.search(b"\r\nDebian GNU/Linux 12 bt-server ttyAMA0\r\n\r\nbt-server login: "))
        # systemd's status output can follow the prompt on the same line
        self.assertTrue(qemu_pi.LOGIN_PROMPT.search(b"ttyAMA0\r\n\r\nraspberrypi login: [\x1b[0;32m  OK  \x1b[0m] Started"))
        self.assertFalse(qemu_pi.LOGIN_PROMPT.search(b"[  OK  ] Started getty@tty1.service - Getty on tty1 login: x"))


@unittest.skipUnless(all(shutil.which(t) for t in ("sfdisk", "mkfs.vfat", "mcopy")), "needs fdisk, dosfstools, mtools")
class BootPartition(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.img = Path(self.dir.name) / "disk.img"
        part = Path(self.dir.name) / "p1"
        subprocess.run(["truncate", "-s", "600M", str(self.img)], check=True)
        subprocess.run(["sfdisk", "-q", str(self.img)], input="label: dos\nlabel-id: 0x12345678\nstart=16384, size=1048576, type=c\n",
                       text=True, check=True)
        subprocess.run(["truncate", "-s", "512M", str(part)], check=True)
        subprocess.run(["mkfs.vfat", "-F", "32", "-s", "4", str(part)], check=True, capture_output=True)
        subprocess.run(["dd", f"if={part}", f"of={self.img}", "bs=1M", "seek=8", "conv=notrunc,sparse", "status=none"], check=True)

    def tearDown(self):
        self.dir.cleanup()

    def test_write_read_list_and_raw_bytes(self):
        self.assertEqual(qemu_pi.disk_id(self.img), "12345678")
        qemu_pi.write_boot_file(self.img, "cmdline.txt", SHIPPED.encode())
        qemu_pi.write_boot_file(self.img, "ssh", b"")
        qemu_pi.write_boot_file(self.img, "cmdline.txt", b"replaced token-abc123\n")
        self.assertEqual(qemu_pi.read_boot_file(self.img, "cmdline.txt"), b"replaced token-abc123\n")
        self.assertEqual(qemu_pi.list_boot_files(self.img), ["cmdline.txt", "ssh"])
        self.assertIn(b"token-abc123", qemu_pi.boot_partition_bytes(self.img))
        with self.assertRaises(qemu_pi.BootError):
            qemu_pi.read_boot_file(self.img, "missing.txt")


class Journal(unittest.TestCase):
    JOURNAL = {
        "format": 1,
        "agent_version": "0.1.0",
        "steps": [
            {"stage": "stage1", "step": "hostname", "status": "done", "attempts": 1, "updated_at": 5},
            {"stage": "stage2", "step": "start-k3s", "status": "done", "attempts": 1, "updated_at": 6},
            {"stage": "stage2", "step": "ready", "status": "running", "attempts": 1, "updated_at": 7,
             "detail": "waiting (check 3, 35s): `k3s kubectl wait` says: no Kubernetes API here"},
            {"stage": "stage2", "step": "manifests", "status": "pending", "attempts": 0, "updated_at": 7},
        ],
    }

    def steps(self):
        return boottest.journal_steps(self.JOURNAL)

    def test_ready_waiting_needs_a_message(self):
        notice = "picluster: bt-server - waiting for K3s to be Ready (check 3): no API"
        ok, _ = boottest.judge_journal(self.steps(), notice)
        self.assertTrue(ok)
        ok, problems = boottest.judge_journal(self.steps(), "")
        self.assertFalse(ok)
        self.assertIn("ready: running, but the login notice does not say it is waiting", problems)
        silent = self.steps()
        silent[2] = {k: v for k, v in silent[2].items() if k != "detail"}
        ok, problems = boottest.judge_journal(silent, notice)
        self.assertFalse(ok)
        self.assertIn("ready: running, but its journal record does not say why", problems)

    def test_progress_of_a_running_step_is_not_a_change(self):
        later = [dict(s) for s in self.steps()]
        later[2]["detail"] = "waiting (check 9, 2m): no Kubernetes API here"
        self.assertEqual(boottest.normalise(later), boottest.normalise(self.steps()))
        later[0]["detail"] = "something else"
        self.assertNotEqual(boottest.normalise(later), boottest.normalise(self.steps()))

    def test_tolerated_findings_of_a_done_step(self):
        steps = [
            {"stage": "stage1", "step": "rename-wizard", "status": "done",
             "detail": "userconfig.service disabled; found: userconfig.service is a file in /etc/systemd/system (moved there by a customisation tool)"},
        ]
        self.assertIn("customisation tool", boottest.tolerated(steps))
        self.assertEqual(boottest.tolerated([{**steps[0], "detail": "userconfig.service masked"}]), "")
        self.assertEqual(boottest.tolerated([{**steps[0], "status": "failed"}]), "")

    def test_a_failed_step_fails(self):
        steps = self.steps()
        steps[1] = {**steps[1], "status": "failed", "last_error": "k3s-arm64: checksum mismatch"}
        ok, problems = boottest.judge_journal(steps, "waiting for K3s to be Ready")
        self.assertFalse(ok)
        self.assertEqual(problems, ["start-k3s: failed (k3s-arm64: checksum mismatch)"])

    def test_pending_before_ready_fails(self):
        steps = self.steps()
        steps[0] = {**steps[0], "status": "pending"}
        self.assertFalse(boottest.judge_journal(steps, "waiting for K3s to be Ready")[0])

    def test_normalise_drops_what_changes_on_every_boot(self):
        a = boottest.normalise(self.JOURNAL)
        later = {**self.JOURNAL, "steps": [{**s, "attempts": s["attempts"] + 1, "updated_at": 99} for s in self.JOURNAL["steps"]]}
        self.assertEqual(a, boottest.normalise(later))
        redone = {**self.JOURNAL, "steps": [{**self.JOURNAL["steps"][0], "status": "running"}] + self.JOURNAL["steps"][1:]}
        self.assertNotEqual(a, boottest.normalise(redone))

    @unittest.skipUnless(shutil.which("openssl"), "needs openssl")
    def test_node_password_is_the_profiles_hmac(self):
        # profiles/src/secrets.rs: HMAC-SHA256(node_secret, "picluster k3s node password\0" + node), hex.
        msg = b"picluster k3s node password\0pi-1"
        r = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", "s3cret-node-key-0123"], input=msg,
                           capture_output=True, check=True)
        want = r.stdout.decode().split()[-1]
        self.assertEqual(boottest.node_password("s3cret-node-key-0123", "pi-1"), want)
        self.assertNotEqual(boottest.node_password("k" * 20, "pi-1"), boottest.node_password("k" * 20, "pi-2"))


if __name__ == "__main__":
    unittest.main()
