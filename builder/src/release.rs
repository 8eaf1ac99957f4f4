//! Which first-boot path a Raspberry Pi OS image takes, and how picluster's
//! own stage 1 takes over from it.
//!
//! - Bookworm: raspberrypi-sys-mods' `firstboot` runs as `init=` on the first
//!   boot (resize, new disk id), then picluster's stage 1 runs (systemd.run).
//! - Trixie (current since 2025-10): cloud-init is installed on every image
//!   (pi-gen `stage2/04-cloud-init/00-packages`, tag
//!   2026-06-18-raspios-trixie-arm64) and seeded from the boot partition
//!   (`meta-data`, `user-data`, `network-config`, copied there by that stage's
//!   01-run.sh since the 2025-11-24 image); the root partition is grown by the
//!   initramfs when `resize` is on the command line (stage1/00-boot-files
//!   cmdline.txt), not by `init=`. picluster turns cloud-init off for good
//!   and runs the same stage 1: the identity has one writer. How, and why
//!   not let cloud-init do it, is in README ("Raspberry Pi OS releases").

use serde::Serialize;

use crate::bootfs::BootEntry;

/// Files cloud-init's NoCloud datasource reads from the boot partition: the
/// names pi-gen writes, and Raspberry Pi Imager 2.x writes.
pub const CLOUD_INIT_SEED: [&str; 3] = ["meta-data", "user-data", "network-config"];

/// The kernel argument that turns cloud-init off for the boot it is on:
/// cloud-init's `ds-identify` checks `/proc/cmdline` for it before looking
/// for any datasource, and every cloud-init unit carries
/// `ConditionKernelCommandLine=!cloud-init=disabled` (cloud-init 25.1.4,
/// tools/ds-identify and systemd/*.tmpl; doc/rtd/howto/disable_cloud_init.rst).
pub const CLOUD_INIT_OFF: &str = "cloud-init=disabled";

/// Imager 2.x (since v2.0.7) appends `ds=nocloud;i=<instance id>` to
/// cmdline.txt (rpi-imager src/downloadthread.cpp, v2.0.11.1).
pub const IMAGER_DATASOURCE: &str = "ds=nocloud";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstBoot {
    /// Bookworm: raspberrypi-sys-mods `firstboot`, then picluster's stage 1.
    SysMods,
    /// cloud-init is installed or seeded and nothing turns it off (a Trixie
    /// image as Raspberry Pi ships it).
    CloudInit,
    /// cloud-init is there but turned off (`cloud-init=disabled`): a Trixie
    /// node image picluster wrote.
    CloudInitOff,
}

impl FirstBoot {
    /// What it means, for `plan` and `inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            FirstBoot::SysMods => {
                "raspberrypi-sys-mods firstboot, then picluster-node stage 1 (Bookworm)"
            }
            FirstBoot::CloudInit => {
                "cloud-init from the boot partition's seed files (Trixie as shipped); a picluster build turns it off"
            }
            FirstBoot::CloudInitOff => {
                "cloud-init turned off (cloud-init=disabled, then /etc/cloud/cloud-init.disabled); picluster-node stage 1 does the identity"
            }
        }
    }
}

/// The seed files among the entries at the boot partition's root, as named there.
pub fn seed_files(entries: &[BootEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| {
            !e.is_dir
                && CLOUD_INIT_SEED
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&e.name))
        })
        .map(|e| e.name.clone())
        .collect()
}

/// How an image boots first, from its release, whether cloud-init is
/// installed (seed files alone do nothing without it) and its command line.
pub fn first_boot(codename: &str, cloud_init: bool, cmdline: &str) -> FirstBoot {
    if !(cloud_init || codename == "trixie") {
        return FirstBoot::SysMods;
    }
    let off = picluster_profiles::cmdline::tokens(cmdline)
        .iter()
        .any(|t| t == CLOUD_INIT_OFF);
    if off {
        FirstBoot::CloudInitOff
    } else {
        FirstBoot::CloudInit
    }
}

/// What picluster writes over each seed file on a node's boot partition, so
/// that cloud-init, should it ever be turned back on, finds nothing to do:
/// no network configuration (`network: {config: disabled}`), the hostname and
/// /etc/hosts left alone, host keys kept, and no users: `users: {}` replaces
/// the system's `users: [default]` (user-data wins over /etc/cloud/cloud.cfg),
/// so no default user is made; cloud-init's Raspberry Pi OS distro would run
/// `rename-user` for one (cloudinit/distros/raspberry_pi_os.py, 25.2). An
/// empty list reads the same to cloud-init (cloudinit/distros/ug_util.py)
/// but fails its schema ("should be non-empty"), which the tests run.
pub fn inert_seed(name: &str, node: &str) -> Option<String> {
    let why = "# picluster: cloud-init is turned off on this node (cloud-init=disabled,\n\
               # /etc/cloud/cloud-init.disabled); picluster-node configured it.\n";
    match name.to_ascii_lowercase().as_str() {
        "meta-data" => Some(format!("{why}instance-id: picluster-{node}\n")),
        "user-data" => Some(format!(
            "#cloud-config\n{why}preserve_hostname: true\nmanage_etc_hosts: false\nusers: {{}}\nssh_deletekeys: false\n"
        )),
        "network-config" => Some(format!("{why}network:\n  config: disabled\n")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKWORM: &str = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot";
    // pi-gen stage1/00-boot-files/files/cmdline.txt, trixie (ROOTDEV filled in).
    const TRIXIE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait resize";

    #[test]
    fn the_release_and_cloud_init_decide_the_path() {
        assert_eq!(first_boot("bookworm", false, BOOKWORM), FirstBoot::SysMods);
        assert_eq!(first_boot("trixie", true, TRIXIE), FirstBoot::CloudInit);
        // Trixie is cloud-init's even where the rootfs check missed it.
        assert_eq!(first_boot("trixie", false, TRIXIE), FirstBoot::CloudInit);
        // A Bookworm image with cloud-init added is cloud-init's too.
        assert_eq!(first_boot("bookworm", true, BOOKWORM), FirstBoot::CloudInit);
        let off = format!("{TRIXIE} {CLOUD_INIT_OFF} cgroup_enable=memory");
        assert_eq!(first_boot("trixie", true, &off), FirstBoot::CloudInitOff);
        // Only the whole argument counts.
        let almost = format!("{TRIXIE} xcloud-init=disabled");
        assert_eq!(first_boot("trixie", true, &almost), FirstBoot::CloudInit);
    }

    #[test]
    fn seed_files_are_found_whatever_their_case_and_made_inert() {
        let entry = |name: &str, is_dir| BootEntry {
            name: name.into(),
            size: 1,
            is_dir,
        };
        let entries = [
            entry("cmdline.txt", false),
            entry("META-DATA", false),
            entry("user-data", false),
            entry("network-config", false),
            entry("ssh", false),
        ];
        assert_eq!(
            seed_files(&entries),
            ["META-DATA", "user-data", "network-config"]
        );
        // A directory of that name is no seed.
        assert!(seed_files(&[entry("user-data", true)]).is_empty());
        for n in CLOUD_INIT_SEED {
            let text = inert_seed(n, "pi-worker-1").unwrap();
            assert!(text.contains("cloud-init is turned off"), "{text}");
        }
        assert!(
            inert_seed("network-config", "n")
                .unwrap()
                .contains("config: disabled")
        );
        assert!(
            inert_seed("user-data", "n")
                .unwrap()
                .starts_with("#cloud-config\n")
        );
        assert_eq!(inert_seed("cmdline.txt", "n"), None);
    }
}
