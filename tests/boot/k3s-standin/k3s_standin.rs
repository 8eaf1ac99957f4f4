//! Stand-in for the `k3s` binary in the picluster boot test: a small static
//! aarch64 program served from the test's K3s release mirror as `k3s-arm64`.
//!
//! `k3s server|agent ...` records its arguments and /etc/rancher/k3s/config.yaml
//! under /var/lib/k3s-standin/, tells systemd it is ready (Type=notify), and
//! stays up until stopped. There is no Kubernetes behind it: `k3s kubectl ...`
//! (and crictl/ctr) fail with a message saying so, so a node agent waiting for
//! the node to become Ready keeps waiting and can say why.
//!
//! Build: rustc --edition 2021 --target aarch64-unknown-linux-musl -C linker=rust-lld \
//!        -C opt-level=s -C panic=abort -C strip=symbols -o k3s-arm64 k3s_standin.rs

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const VERSION: &str = match option_env!("K3S_STANDIN_VERSION") {
    Some(v) => v,
    None => "v0.0.0+standin",
};
const LOG_DIR: &str = "/var/lib/k3s-standin";
const CONFIG: &str = "/etc/rancher/k3s/config.yaml";
/// Where K3s looks for pre-made CA files at first start.
const TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls";
const NOT_REAL: &str = "k3s stand-in (picluster boot test): no Kubernetes API here, the node never becomes Ready";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Append one line to a log file in LOG_DIR.
fn log_line(file: &str, line: &str) {
    let _ = fs::create_dir_all(LOG_DIR);
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(LOG_DIR).join(file))
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Write a file in LOG_DIR with mode 0600 (config.yaml holds the join token).
fn write_private(name: &str, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::create_dir_all(LOG_DIR)?;
    let path = Path::new(LOG_DIR).join(name);
    let tmp = Path::new(LOG_DIR).join(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

/// Send READY=1 to systemd's notification socket, if there is one.
fn notify_ready() -> Result<(), String> {
    use std::os::unix::net::UnixDatagram;
    let Some(sock) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = sock.to_string_lossy().into_owned();
    let msg = format!("READY=1\nSTATUS={NOT_REAL}\nMAINPID={}\n", std::process::id());
    let s = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    if let Some(name) = sock.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| format!("{sock}: {e}"))?;
        s.send_to_addr(msg.as_bytes(), &addr)
            .map_err(|e| format!("{sock}: {e}"))?;
    } else {
        s.send_to(msg.as_bytes(), &sock)
            .map_err(|e| format!("{sock}: {e}"))?;
    }
    Ok(())
}

/// "<mode> <path>" for every file below `dir` (sorted), as found at start.
fn tls_listing(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        match e.metadata() {
            Ok(m) if m.is_dir() => tls_listing(&e.path(), &format!("{name}/"), out),
            Ok(m) => out.push(format!("{:o} {name}", m.permissions().mode() & 0o7777)),
            Err(_) => {}
        }
    }
    out.sort();
}

fn run_service(args: &[String]) -> ExitCode {
    let config = fs::read(CONFIG);
    log_line(
        "starts.log",
        &format!(
            "{} pid={} argv={:?} config={}",
            now(),
            std::process::id(),
            args,
            match &config {
                Ok(c) => format!("{} bytes", c.len()),
                Err(e) => format!("unreadable: {e}"),
            }
        ),
    );
    // The latest start, without timestamps, so a test can compare boots.
    let mut argv = args.join("\n");
    argv.push('\n');
    // The CA files K3s would use instead of making its own, as they are when
    // it starts (the first server's come from picluster's pki/).
    let mut tls = Vec::new();
    tls_listing(Path::new(TLS_DIR), "", &mut tls);
    let tls: String = tls.iter().map(|l| format!("{l}\n")).collect();
    let recorded = write_private("last-args", argv.as_bytes())
        .and_then(|()| write_private("last-tls", tls.as_bytes()))
        .and_then(|()| match &config {
            Ok(c) => write_private("last-config.yaml", c),
            Err(_) => write_private("last-config.yaml", b""),
        });
    if let Err(e) = recorded {
        eprintln!("k3s stand-in: cannot record this start in {LOG_DIR}: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = config {
        eprintln!("k3s stand-in: {CONFIG}: {e} (starting anyway, as k3s does)");
    }
    if let Err(e) = notify_ready() {
        eprintln!("k3s stand-in: cannot notify systemd: {e}");
        return ExitCode::from(1);
    }
    eprintln!("{NOT_REAL}; k3s {} started, staying up", args.join(" "));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    // Symlinks kubectl/crictl/ctr -> k3s behave like `k3s kubectl` etc.
    let args: Vec<String> = match prog.as_str() {
        "kubectl" | "crictl" | "ctr" => std::iter::once(prog.clone())
            .chain(argv.iter().skip(1).cloned())
            .collect(),
        _ => argv.iter().skip(1).cloned().collect(),
    };
    match args.first().map(String::as_str) {
        Some("server") | Some("agent") => run_service(&args),
        Some("--version") | Some("-v") | Some("version") => {
            println!("k3s version {VERSION} (standin)");
            println!("go version none (picluster boot-test stand-in)");
            ExitCode::SUCCESS
        }
        Some("check-config") => {
            println!("k3s stand-in: check-config skipped");
            ExitCode::SUCCESS
        }
        Some(tool @ ("kubectl" | "crictl" | "ctr")) => {
            log_line("tools.log", &format!("{} {:?}", now(), args));
            eprintln!("{NOT_REAL} ({tool} is not available)");
            ExitCode::from(1)
        }
        _ => {
            eprintln!(
                "k3s stand-in (picluster boot test): unsupported arguments {:?}; supported: server, agent, kubectl, crictl, ctr, --version",
                args
            );
            ExitCode::from(1)
        }
    }
}
