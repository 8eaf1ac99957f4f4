//! Test support shared by this crate's tests and the workstation tool's: the
//! parts of a Raspberry Pi OS Bookworm Lite root the agent reads or edits, and
//! small helpers.
#![doc(hidden)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Write a fixture file with `mode`, creating its directory.
pub fn write(path: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().expect("absolute path")).expect("create dir");
    std::fs::write(path, content).expect("write fixture file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Whether `qemu-aarch64-static` can run the aarch64 agent; when not, say
/// that the calling test is skipped.
pub fn qemu_user_available() -> bool {
    let ok = Command::new("qemu-aarch64-static")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: qemu-aarch64-static is not installed (Debian: qemu-user-static)");
    }
    ok
}

/// Populate `root` like a freshly flashed Raspberry Pi OS Lite: user `pi`
/// (uid 1000) with its groups, the rename wizard's files, and the memory cgroup.
pub fn pios_root(root: &Path) {
    write(
        &root.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/bash\n\
          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
          pi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
        0o644,
    );
    write(
        &root.join("etc/shadow"),
        b"root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\npi:*:19000:0:99999:7:::\n",
        0o640,
    );
    // No `render` group: the agent skips groups the system lacks.
    write(
        &root.join("etc/group"),
        b"root:x:0:\nadm:x:4:pi\ndialout:x:20:pi\ncdrom:x:24:pi\nsudo:x:27:pi\naudio:x:29:pi\n\
          video:x:44:pi\nplugdev:x:46:pi\nusers:x:100:pi\ninput:x:105:pi\nnetdev:x:106:pi\n\
          gpio:x:997:pi\ni2c:x:998:pi\nspi:x:999:pi\npi:x:1000:\n",
        0o644,
    );
    write(
        &root.join("etc/gshadow"),
        b"root:*::\nadm:*::pi\ndialout:*::pi\ncdrom:*::pi\nsudo:*::pi\naudio:*::pi\n\
          video:*::pi\nplugdev:*::pi\nusers:*::pi\ninput:*::pi\nnetdev:*::pi\n\
          gpio:*::pi\ni2c:*::pi\nspi:*::pi\npi:!::\n",
        0o640,
    );
    write(&root.join("etc/subuid"), b"pi:100000:65536\n", 0o644);
    write(&root.join("etc/subgid"), b"pi:100000:65536\n", 0o644);
    write(
        &root.join("etc/sudoers.d/010_pi-nopasswd"),
        b"pi ALL=(ALL) NOPASSWD: ALL\n",
        0o440,
    );
    write(
        &root.join("etc/ssh/sshd_config.d/rename_user.conf"),
        b"Banner /usr/share/userconf-pi/sshd_banner\n",
        0o644,
    );
    write(
        &root.join("lib/systemd/system/userconfig.service"),
        b"[Unit]\nDescription=User configuration dialog\n",
        0o644,
    );
    write(&root.join("etc/hostname"), b"raspberrypi\n", 0o644);
    write(&root.join("home/pi/.bashrc"), b"# bash\n", 0o644);
    std::os::unix::fs::chown(root.join("home/pi"), Some(1000), Some(1000)).expect("chown home");
    write(
        &root.join("sys/fs/cgroup/cgroup.controllers"),
        b"cpuset cpu io memory hugetlb pids rdma misc\n",
        0o444,
    );
}

/// Turn a [`pios_root`] into Raspberry Pi OS Trixie Lite as pi-gen builds it
/// since the 2026-04-13 image (tag 2026-06-18-raspios-trixie-arm64): cloud-init
/// installed, the first user with a nologin shell (stage1/01-sys-tweaks,
/// commit 4b9cd15c), no `010_pi-nopasswd` (gone from raspberrypi-sys-mods,
/// pi-gen commit c020178c), and the root grown by `rpi-resize.service`.
pub fn trixie_root(root: &Path) {
    write(
        &root.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/bash\n\
          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
          pi:x:1000:1000:,,,:/home/pi:/usr/sbin/nologin\n",
        0o644,
    );
    std::fs::remove_file(root.join("etc/sudoers.d/010_pi-nopasswd")).expect("rm sudoers file");
    write(
        &root.join("etc/cloud/cloud.cfg"),
        b"# cloud-init's main configuration (stand-in)\n",
        0o644,
    );
    write(
        &root.join("usr/lib/systemd/system/rpi-resize.service"),
        b"[Unit]\nDescription=Grow and trim root filesystem on first boot\nConditionFirstBoot=yes\n",
        0o644,
    );
}
