//! A cluster directory made by `picluster init`, with its base image and K3s
//! mirror served over HTTP on 127.0.0.1.

use std::path::PathBuf;
use std::process::Command;

use super::http::Server;
use super::*;

pub const VERSION: &str = "v1.33.5+k3s1";

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub base_img: PathBuf,
}

impl Setup {
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }
    pub fn config(&self) -> PathBuf {
        self.path("cluster/cluster.toml")
    }
    pub fn cmd(&self) -> Command {
        picluster(&self.cache())
    }
    pub fn build(&self, out: &str, extra: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("build")
            .arg("-c")
            .arg(self.config())
            .arg("--out")
            .arg(self.path(out))
            .args(extra);
        c
    }
}

/// A cluster directory made by `picluster init`, pointed at the local server.
pub fn setup(fixture_args: &[&str]) -> Setup {
    let mut args = vec!["--xz"];
    args.extend_from_slice(fixture_args);
    let base_img = fixture(&args);
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    for f in ["base.img.xz", "base.img.xz.sha256"] {
        std::fs::copy(base_img.with_file_name(f), www.join(f)).unwrap();
    }
    k3s_mirror(&www.join("k3s"), VERSION, 3 << 20);
    let server = Server::start(&www);
    let key = ssh_key(dir.path());
    std::fs::write(dir.path().join("key.pub"), format!("{key}\n")).unwrap();
    let s = Setup {
        dir,
        server,
        base_img,
    };
    run(s
        .cmd()
        .arg("init")
        .arg(s.path("cluster"))
        .arg("--ssh-key")
        .arg(s.path("key.pub")));
    // The local server speaks plain HTTP, so everything it serves is pinned
    // in the cluster file, as picluster requires for http:// sources.
    let release = www.join("k3s").join(VERSION);
    let text = std::fs::read_to_string(s.config()).unwrap();
    let text = text
        .replace(
            "# k3s_mirror = \"https://mirror.lan/k3s\"",
            &format!(
                "k3s_mirror = \"{}\"\nk3s_sha256 = \"{}\"\nk3s_airgap_sha256 = \"{}\"",
                s.server.url("k3s"),
                sha256_file(&release.join("k3s-arm64")),
                sha256_file(&release.join("k3s-airgap-images-arm64.tar.zst")),
            ),
        )
        .replace(
            "base = \"raspios-bookworm-arm64-lite\"",
            &format!(
                "url = \"{}\"\nsha256 = \"{}\"",
                s.server.url("base.img.xz"),
                sha256_file(&www.join("base.img.xz"))
            ),
        );
    std::fs::write(s.config(), text).unwrap();
    s
}
