//! The host the agent acts on: a root directory, a boot directory, a command
//! runner and the live environment (clock, network probes). Every step goes
//! through a [`Host`], so tests and `--record-commands` runs replace the parts
//! that would touch the real machine.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::log::Log;

/// A command to run on the node. Its standard input may carry a secret
/// (a password hash): it is never shown, logged or recorded.
#[derive(Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    /// Acts on the running system (start a service, install packages, set the
    /// clock) rather than on files below the root: refused when the root is not `/`.
    pub live: bool,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            live: false,
        }
    }

    /// A command that acts on the running system.
    pub fn live(program: &str) -> Cmd {
        Cmd {
            live: true,
            ..Cmd::new(program)
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Feed `data` on standard input; it is treated as secret.
    pub fn secret_stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }

    pub fn stdin(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// Program and arguments.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:@,+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={} ", shell_quote(v))?;
        }
        let argv: Vec<String> = self.argv().iter().map(|a| shell_quote(a)).collect();
        write!(f, "{}", argv.join(" "))?;
        if let Some(s) = &self.stdin {
            write!(f, " <({} secret bytes on stdin)", s.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cmd({self})")
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok() -> CmdOutput {
        CmdOutput {
            code: Some(0),
            ..CmdOutput::default()
        }
    }

    pub fn ok_with(stdout: &str) -> CmdOutput {
        CmdOutput {
            code: Some(0),
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }

    pub fn failed(code: i32, stderr: &str) -> CmdOutput {
        CmdOutput {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last lines of stderr (or stdout), for error messages.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.trim().lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

/// Runs commands. The real runner executes them; the [`Recorder`] writes them down.
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> io::Result<CmdOutput>;
}

/// Executes commands on this machine.
pub struct SystemRunner {
    root: PathBuf,
}

impl SystemRunner {
    /// `root` is the agent's root directory: live commands are refused unless it is `/`.
    pub fn new(root: &Path) -> SystemRunner {
        SystemRunner {
            root: root.to_path_buf(),
        }
    }
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> io::Result<CmdOutput> {
        if cmd.live && self.root != Path::new("/") {
            return Err(io::Error::other(format!(
                "refusing to run `{cmd}`: it acts on the running system, not on --root {} \
                 (use --record-commands FILE to write commands down instead)",
                self.root.display()
            )));
        }
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = c.spawn()?;
        if let Some(data) = &cmd.stdin {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin.write_all(data)?;
        }
        let out = child.wait_with_output()?;
        Ok(CmdOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

type Responder = Box<dyn Fn(&Cmd) -> CmdOutput + Send + Sync>;

/// Writes commands down instead of running them, answering each with a
/// scripted output (success by default). Used by tests and by the hidden
/// `--record-commands FILE` option.
pub struct Recorder {
    calls: Mutex<Vec<Cmd>>,
    notes: Mutex<Vec<String>>,
    respond: Responder,
    sink: Option<Mutex<File>>,
}

impl Recorder {
    /// Every command succeeds with empty output.
    pub fn new() -> Recorder {
        Recorder::with_responder(|_| CmdOutput::ok())
    }

    pub fn with_responder(f: impl Fn(&Cmd) -> CmdOutput + Send + Sync + 'static) -> Recorder {
        Recorder {
            calls: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
            respond: Box::new(f),
            sink: None,
        }
    }

    /// Also append every command, as one JSON object per line, to `path`.
    /// Standard input is recorded by size only.
    pub fn to_file(path: &Path) -> Result<Recorder> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} to record commands", path.display()))?;
        let mut r = Recorder::new();
        r.sink = Some(Mutex::new(f));
        Ok(r)
    }

    /// The commands recorded so far (with their stdin, for assertions).
    pub fn calls(&self) -> Vec<Cmd> {
        self.calls.lock().expect("recorder lock").clone()
    }

    /// The recorded commands as shell-like lines.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(|c| c.to_string()).collect()
    }

    /// Probes answered by the simulated environment, in order.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("recorder lock").clone()
    }

    fn write_sink(&self, value: serde_json::Value) {
        if let Some(sink) = &self.sink {
            let mut f = sink.lock().expect("recorder lock");
            // Recording is best effort: a full disk must not fail a step.
            let _ = writeln!(f, "{value}");
        }
    }

    pub fn note(&self, what: String) {
        self.write_sink(serde_json::json!({ "probe": what }));
        self.notes.lock().expect("recorder lock").push(what);
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Runner for Recorder {
    fn run(&self, cmd: &Cmd) -> io::Result<CmdOutput> {
        let env: serde_json::Map<String, serde_json::Value> = cmd
            .env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        self.write_sink(serde_json::json!({
            "argv": cmd.argv(),
            "env": env,
            "live": cmd.live,
            "stdin_bytes": cmd.stdin.as_ref().map(Vec::len),
        }));
        self.calls.lock().expect("recorder lock").push(cmd.clone());
        Ok((self.respond)(cmd))
    }
}

impl Runner for Arc<Recorder> {
    fn run(&self, cmd: &Cmd) -> io::Result<CmdOutput> {
        self.as_ref().run(cmd)
    }
}

/// The parts of the running system that are not files: the clock and the network.
pub trait Environment: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
    fn sleep(&self, d: Duration);
    /// Whether `ip` is assigned to one of this machine's interfaces.
    fn address_assigned(&self, ip: Ipv4Addr) -> bool;
    /// Whether something accepts TCP connections at `addr`.
    fn tcp_answers(&self, addr: SocketAddr, timeout: Duration) -> bool;
    /// A plain-HTTP GET; returns the status code and body.
    fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> io::Result<(u16, String)>;
}

/// The real clock and network.
pub struct SystemEnvironment;

impl Environment for SystemEnvironment {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn address_assigned(&self, ip: Ipv4Addr) -> bool {
        // Binding succeeds only for local addresses (EADDRNOTAVAIL otherwise);
        // nothing is sent.
        UdpSocket::bind((ip, 0)).is_ok()
    }

    fn tcp_answers(&self, addr: SocketAddr, timeout: Duration) -> bool {
        TcpStream::connect_timeout(&addr, timeout).is_ok()
    }

    fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        // One write: a request split over segments may be answered and the
        // connection reset before the rest arrives.
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes())?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
        Ok((code, body.to_string()))
    }
}

/// A simulated clock and network: sleeping advances the clock instantly.
/// Tests script it; `--record-commands` runs use it with the answers of a
/// fresh cluster (address up, no other server answering, kubelet healthy) and
/// record every probe.
pub struct SimulatedEnvironment {
    now_ms: Mutex<i64>,
    /// The node's address is assigned from this time on (`None`: never).
    pub address_from: Mutex<Option<i64>>,
    /// Addresses where something accepts TCP connections.
    pub open_ports: Mutex<Vec<SocketAddr>>,
    /// Addresses that accept TCP connections from a time on (a peer booting late).
    pub open_from: Mutex<Vec<(SocketAddr, i64)>>,
    /// The kubelet health endpoint answers `ok` from this time on (`None`: never).
    pub healthy_from: Mutex<Option<i64>>,
    recorder: Option<Arc<Recorder>>,
}

impl SimulatedEnvironment {
    pub fn starting_at(now: i64) -> SimulatedEnvironment {
        SimulatedEnvironment {
            now_ms: Mutex::new(now * 1000),
            address_from: Mutex::new(Some(now)),
            open_ports: Mutex::new(Vec::new()),
            open_from: Mutex::new(Vec::new()),
            healthy_from: Mutex::new(Some(now)),
            recorder: None,
        }
    }

    /// Record each probe and its answer in `recorder`.
    pub fn recording(mut self, recorder: Arc<Recorder>) -> SimulatedEnvironment {
        self.recorder = Some(recorder);
        self
    }

    pub fn advance(&self, d: Duration) {
        *self.now_ms.lock().expect("clock lock") += d.as_millis() as i64;
    }

    fn note(&self, what: String) {
        if let Some(r) = &self.recorder {
            r.note(what);
        }
    }
}

impl Environment for SimulatedEnvironment {
    fn now(&self) -> i64 {
        *self.now_ms.lock().expect("clock lock") / 1000
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }

    fn address_assigned(&self, ip: Ipv4Addr) -> bool {
        let up = matches!(*self.address_from.lock().expect("lock"), Some(t) if self.now() >= t);
        self.note(format!("address {ip} assigned: {up}"));
        up
    }

    fn tcp_answers(&self, addr: SocketAddr, _timeout: Duration) -> bool {
        let now = self.now();
        let open = self.open_ports.lock().expect("lock").contains(&addr)
            || self
                .open_from
                .lock()
                .expect("lock")
                .iter()
                .any(|(a, t)| *a == addr && now >= *t);
        self.note(format!("tcp {addr} answers: {open}"));
        open
    }

    fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        _timeout: Duration,
    ) -> io::Result<(u16, String)> {
        let healthy =
            matches!(*self.healthy_from.lock().expect("lock"), Some(t) if self.now() >= t);
        self.note(format!("http://{addr}{path} healthy: {healthy}"));
        if healthy {
            Ok((200, "ok".into()))
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))
        }
    }
}

/// How long the agent waits and how it backs off.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Bounded wait for the static address.
    pub network_wait: Duration,
    /// Bounded wait for time synchronisation.
    pub time_wait: Duration,
    /// Poll interval of the bounded waits.
    pub poll: Duration,
    /// Connect timeout of TCP/HTTP probes.
    pub probe_timeout: Duration,
    /// Bound of one readiness check.
    pub ready_attempt: Duration,
    /// First and largest pause between retries.
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    /// How long a joining node probes its registration addresses, and a
    /// re-flashed first server its peers, before deciding (several minutes:
    /// a peer's link or a whole rack may come up late after a power cut).
    pub peer_wait: Duration,
    /// Tests only: give up after this many attempts instead of retrying forever.
    pub give_up_after: Option<u32>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            network_wait: Duration::from_secs(120),
            time_wait: Duration::from_secs(90),
            poll: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(3),
            ready_attempt: Duration::from_secs(60),
            backoff_start: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            peer_wait: Duration::from_secs(300),
            give_up_after: None,
        }
    }
}

impl Timing {
    /// The pause after failed attempt `attempt` (1-based): doubling, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        (self.backoff_start * factor).min(self.backoff_max)
    }
}

/// Everything a step needs from the outside world.
pub struct Host {
    pub root: PathBuf,
    pub boot: PathBuf,
    pub runner: Arc<dyn Runner>,
    pub env: Arc<dyn Environment>,
    pub timing: Timing,
    pub log: Log,
}

impl Host {
    /// The real machine (or a real directory tree with commands executed).
    pub fn system(root: &Path, boot: &Path, log: Log) -> Host {
        Host {
            root: root.to_path_buf(),
            boot: boot.to_path_buf(),
            runner: Arc::new(SystemRunner::new(root)),
            env: Arc::new(SystemEnvironment),
            timing: Timing::default(),
            log,
        }
    }

    /// Whether the root is the running system's `/`.
    pub fn live_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `abs` (an absolute node path such as `/etc/hostname`) below the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        let rel = abs.trim_start_matches('/');
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// A file at the root of the boot partition.
    pub fn boot_file(&self, name: &str) -> PathBuf {
        self.boot.join(name)
    }

    /// Run `cmd`; a non-zero exit is an error naming the command and its output.
    pub fn run(&self, cmd: Cmd) -> Result<CmdOutput> {
        let out = self.try_run(&cmd)?;
        if !out.success() {
            let code = out
                .code
                .map_or_else(|| "a signal".to_string(), |c| format!("status {c}"));
            bail!("`{cmd}` failed with {code}: {}", out.tail());
        }
        Ok(out)
    }

    /// Run `cmd` and return its output whatever the exit status.
    pub fn try_run(&self, cmd: &Cmd) -> Result<CmdOutput> {
        self.log.debug(&format!("running: {cmd}"));
        self.runner
            .run(cmd)
            .with_context(|| format!("cannot run `{cmd}`"))
    }

    /// `systemctl` for unit-file operations (enable, disable, mask): with a
    /// root other than `/` it acts on that tree (`--root`).
    pub fn systemctl_files(&self, args: &[&str]) -> Cmd {
        let mut c = Cmd::new("systemctl");
        if !self.live_root() {
            c = c.arg(format!("--root={}", self.root.display()));
        }
        c.args(args.iter().copied())
    }

    /// `systemctl` acting on the running service manager (start, is-active).
    pub fn systemctl_live(&self, args: &[&str]) -> Cmd {
        Cmd::live("systemctl").args(args.iter().copied())
    }

    /// A shadow-utils tool (`usermod`, `groupmod`, `useradd`) acting on the
    /// root's account files (`--prefix` when the root is not `/`).
    pub fn shadow_tool(&self, program: &str) -> Cmd {
        let c = Cmd::new(program);
        if self.live_root() {
            c
        } else {
            c.arg("--prefix").arg(self.root.display().to_string())
        }
    }
}

/// Checks that a node path is absolute and stays below the root.
pub fn check_node_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    if !p.is_absolute() {
        bail!("path {path:?} is not absolute");
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        bail!("path {path:?} contains '.' or '..'");
    }
    if p.parent().is_none() {
        bail!("path {path:?} names the root directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn commands_display_quoted_and_hide_stdin() {
        let c = Cmd::new("chpasswd")
            .arg("-e")
            .arg("a b")
            .secret_stdin("pi:$6$secret\n");
        let s = c.to_string();
        assert_eq!(s, "chpasswd -e 'a b' <(13 secret bytes on stdin)");
        assert!(!format!("{c:?}").contains("secret\n"));
    }

    #[test]
    fn live_commands_are_refused_outside_the_real_root() {
        let r = SystemRunner::new(Path::new("/tmp/somewhere"));
        let err = r.run(&Cmd::live("true")).unwrap_err().to_string();
        assert!(err.contains("acts on the running system"), "{err}");
        assert!(r.run(&Cmd::new("true")).unwrap().success());
        let out = r
            .run(
                &Cmd::new("sh")
                    .args(["-c", "cat; echo err >&2; exit 3"])
                    .secret_stdin("in"),
            )
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "in");
        assert_eq!(out.tail(), "err");
    }

    #[test]
    fn recorder_writes_json_lines_without_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmds.jsonl");
        let r = Recorder::to_file(&path).unwrap();
        r.run(&Cmd::new("chpasswd").arg("-e").secret_stdin("pi:$6$hash\n"))
            .unwrap();
        r.note("tcp 1.2.3.4:6443 answers: false".into());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hash"), "{text}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["argv"], serde_json::json!(["chpasswd", "-e"]));
        assert_eq!(lines[0]["stdin_bytes"], 11);
        assert_eq!(lines[1]["probe"], "tcp 1.2.3.4:6443 answers: false");
    }

    #[test]
    fn system_environment_probes_loopback_only() {
        let env = SystemEnvironment;
        assert!(env.address_assigned(Ipv4Addr::LOCALHOST));
        // TEST-NET-1 is never assigned here; binding sends nothing.
        assert!(!env.address_assigned(Ipv4Addr::new(192, 0, 2, 1)));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8(req).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            req
        });
        let (code, body) = env
            .http_get(addr, "/healthz", Duration::from_secs(5))
            .unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /healthz HTTP/1.0\r\n")
        );

        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(!env.tcp_answers(closed_addr, Duration::from_secs(1)));
    }

    #[test]
    fn node_paths_must_stay_below_the_root() {
        assert!(check_node_path("/etc/hostname").is_ok());
        assert!(check_node_path("etc/hostname").is_err());
        assert!(check_node_path("/etc/../../x").is_err());
        assert!(check_node_path("/").is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let t = Timing::default();
        let secs: Vec<u64> = (1..=8).map(|a| t.backoff(a).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300]);
    }
}
