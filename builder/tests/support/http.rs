//! A small HTTP/1.1 file server on 127.0.0.1 for tests: serves files from a
//! directory with an ETag, honours `Range: bytes=N-` (and `If-Range`: a
//! changed file is sent whole), and can cut a response short to simulate a
//! dropped connection. Every request is logged for assertions.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

#[derive(Default)]
struct State {
    log: Vec<Request>,
    /// path → bytes after which the next response for it is cut (once).
    cuts: HashMap<String, u64>,
    /// path → pause after every 64 KiB of its body (a slow link).
    slow: HashMap<String, std::time::Duration>,
}

pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    /// Serve the files under `root` until the test process ends.
    pub fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let root = root.to_path_buf();
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, st) = (root.clone(), st.clone());
                thread::spawn(move || {
                    let _ = serve(conn, &root, &st);
                });
            }
        });
        Server { base, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// The next response for `path` stops after `bytes` body bytes.
    pub fn cut_next(&self, path: &str, bytes: u64) {
        self.state
            .lock()
            .unwrap()
            .cuts
            .insert(format!("/{}", path.trim_start_matches('/')), bytes);
    }

    /// Every response for `path` pauses `pause` after each 64 KiB.
    pub fn throttle(&self, path: &str, pause: std::time::Duration) {
        self.state
            .lock()
            .unwrap()
            .slow
            .insert(format!("/{}", path.trim_start_matches('/')), pause);
    }

    /// The ETag the server gives `file` as it is now.
    pub fn etag(file: &Path) -> String {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(file).unwrap();
        format!("\"{}-{}-{}\"", meta.len(), meta.mtime(), meta.mtime_nsec())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        let p = format!("/{}", path.trim_start_matches('/'));
        self.requests()
            .into_iter()
            .filter(|r| r.path == p)
            .collect()
    }
}

fn serve(conn: TcpStream, root: &Path, st: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    let mut if_range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("if-range") {
                if_range = Some(v.trim().to_string());
            }
        }
    }
    let cut = {
        let mut s = st.lock().unwrap();
        s.log.push(Request {
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
        });
        (s.cuts.remove(&path), s.slow.get(&path).copied())
    };
    let (cut, slow) = cut;
    let decoded = path.replace("%2B", "+");
    let file: PathBuf = root.join(decoded.trim_start_matches('/'));
    let Ok(mut f) = std::fs::File::open(&file) else {
        conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let meta = f.metadata()?;
    let len = meta.len();
    // Changes whenever the file is rewritten: size and modification time.
    let etag = Server::etag(&file);
    // RFC 9110 13.1.5: a Range whose If-Range no longer matches gets the whole file.
    let range = range.filter(|_| if_range.as_ref().is_none_or(|v| *v == etag));
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let head = match start {
        Some(s) if s >= len => {
            conn.write_all(format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())?;
            return Ok(());
        }
        Some(s) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{len}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
            len - s,
            len - 1
        ),
        None => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
        ),
    };
    let start = start.unwrap_or(0);
    conn.write_all(head.as_bytes())?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start))?;
    let body_len = len - start;
    let send = cut.map_or(body_len, |c| c.min(body_len));
    match slow {
        None => {
            std::io::copy(&mut Read::by_ref(&mut f).take(send), &mut conn)?;
        }
        Some(pause) => {
            let mut left = send;
            let mut buf = vec![0u8; 64 << 10];
            while left > 0 {
                let n = (left as usize).min(buf.len());
                f.read_exact(&mut buf[..n])?;
                conn.write_all(&buf[..n])?;
                left -= n as u64;
                thread::sleep(pause);
            }
        }
    }
    if cut.is_some() {
        // Drop the connection mid-body.
        conn.shutdown(std::net::Shutdown::Both)?;
    }
    Ok(())
}
