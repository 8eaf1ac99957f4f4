//! Downloads: HTTP(S) with resume (Range) and retries, `file://` URLs and plain
//! paths, every result checked against a SHA-256 before anything uses it.
//! Verified downloads land in the cache under their digest; a mismatch deletes
//! the partial file and fails loudly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::Cache;
use crate::digest;
use crate::interrupt;
use crate::progress;

/// Where something comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(String),
    Local(PathBuf),
}

impl Location {
    /// `http(s)://…`, `file://…`, or a plain path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("http://") || s.starts_with("https://") {
            Location::Http(s.to_string())
        } else if let Some(p) = s.strip_prefix("file://") {
            Location::Local(PathBuf::from(p))
        } else {
            Location::Local(PathBuf::from(s))
        }
    }

    /// The last path component.
    pub fn file_name(&self) -> String {
        match self {
            Location::Http(u) => u
                .split(['?', '#'])
                .next()
                .unwrap_or(u)
                .rsplit('/')
                .next()
                .unwrap_or(u)
                .to_string(),
            Location::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// The same location with `suffix` appended (e.g. the `.sha256` sibling).
    pub fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::Http(u) => Location::Http(format!("{u}{suffix}")),
            Location::Local(p) => {
                let mut s = p.clone().into_os_string();
                s.push(suffix);
                Location::Local(PathBuf::from(s))
            }
        }
    }

    /// A child of this location taken as a directory (mirrors).
    pub fn join(&self, rel: &str) -> Location {
        match self {
            Location::Http(u) => Location::Http(format!("{}/{rel}", u.trim_end_matches('/'))),
            Location::Local(p) => Location::Local(p.join(rel)),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Http(u) => f.write_str(u),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a download must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A pinned digest.
    Sha256(String),
    /// Whatever the `.sha256` file beside it says (required for HTTP).
    Sibling,
}

/// A verified file.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// It was already in the cache (nothing was downloaded).
    pub cached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: the server answered {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: String,
    },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    /// A failure that retrying cannot mend (no such host, connection
    /// refused, a certificate the system does not trust).
    #[error(
        "{url}: {message}\n  This will not get better by retrying. Offline? Give the base image as a file (--base PATH, or [image] url = \"file:///…\" with its sha256) and K3s from a local mirror (k3s_mirror = \"/path/to/mirror\", holding <version>/k3s-arm64)"
    )]
    Unreachable { url: String, message: String },
    #[error(
        "checksum mismatch for {what}:\n  expected sha256 {expected}\n  got      sha256 {actual}\nThe downloaded file was deleted. The source is serving a different file than the one pinned; check the URL and the pinned digest."
    )]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "no checksum for {what}: {sibling} {reason}. Pin the digest in the cluster file ([image] sha256 = \"…\") or put a sha256sum-style file beside it"
    )]
    NoChecksum {
        what: String,
        sibling: String,
        reason: String,
    },
    #[error(
        "refusing {url}: a plain http:// download with no pinned digest could be swapped on the way (its .sha256 travels over the same connection). Use an https:// URL, or pin the digest in the cluster file ([image] url and sha256 = \"…\")"
    )]
    PlainHttpUnpinned { url: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Kept as the source (not transparent) so the exit code can find it.
    #[error("download stopped")]
    Interrupted(#[from] interrupt::Interrupted),
    #[error(
        "download stopped; the {} received so far are kept in {} and the next run resumes from there",
        crate::progress::size(*got),
        part.display()
    )]
    InterruptedKept {
        got: u64,
        part: PathBuf,
        #[source]
        source: interrupt::Interrupted,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The most [`Fetcher::text`] reads.
pub const TEXT_LIMIT: u64 = 16 << 20;

/// How many times a cut or failing download is resumed before giving up.
const ATTEMPTS: u32 = 6;

pub struct Fetcher {
    client: reqwest::blocking::Client,
    cache: Cache,
    /// First retry delay; doubles each time.
    pub retry_delay: Duration,
}

impl Fetcher {
    pub fn new(cache: Cache) -> Result<Fetcher, FetchError> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("picluster/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // Per read, not for the whole body: large images take minutes.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| FetchError::Network {
                url: String::new(),
                message: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(Fetcher {
            client,
            cache,
            retry_delay: Duration::from_secs(1),
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A small text file (checksums, sums lists, image lists), at most
    /// [`TEXT_LIMIT`] bytes: a larger answer is refused, not read into memory.
    pub fn text(&self, loc: &Location) -> Result<String, FetchError> {
        let too_big = |url: String| FetchError::Network {
            url,
            message: format!(
                "the answer is larger than {}, which no checksum or image list is",
                progress::size(TEXT_LIMIT)
            ),
        };
        let mut bytes = Vec::new();
        match loc {
            Location::Local(p) => {
                File::open(p)
                    .and_then(|f| f.take(TEXT_LIMIT + 1).read_to_end(&mut bytes))
                    .map_err(io_err(p))?;
            }
            Location::Http(url) => {
                let resp = self.get(url, None)?;
                let resp = check_status(url, resp)?;
                resp.take(TEXT_LIMIT + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| FetchError::Network {
                        url: url.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        if bytes.len() as u64 > TEXT_LIMIT {
            return Err(too_big(loc.to_string()));
        }
        String::from_utf8(bytes).map_err(|_| FetchError::Network {
            url: loc.to_string(),
            message: "the answer is not UTF-8 text".into(),
        })
    }

    /// The digest a location must have, resolving [`Expect::Sibling`].
    pub fn expected_digest(
        &self,
        loc: &Location,
        expect: &Expect,
    ) -> Result<Option<String>, FetchError> {
        match expect {
            Expect::Sha256(d) => Ok(Some(d.to_ascii_lowercase())),
            Expect::Sibling => {
                if let Location::Http(url) = loc
                    && url.starts_with("http://")
                {
                    return Err(FetchError::PlainHttpUnpinned { url: url.clone() });
                }
                let sib = loc.with_suffix(".sha256");
                let text = match (&sib, self.text(&sib)) {
                    (_, Ok(t)) => t,
                    (Location::Local(_), Err(FetchError::Io { source, .. }))
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        // A local file with no checksum beside it: trust the user's file.
                        return Ok(None);
                    }
                    (_, Err(e)) => {
                        return Err(FetchError::NoChecksum {
                            what: loc.to_string(),
                            sibling: sib.to_string(),
                            reason: first_line(&with_causes(&e)),
                        });
                    }
                };
                let name = loc.file_name();
                digest::parse_sums(&text, Some(&name))
                    .or_else(|| digest::parse_sums(&text, None))
                    .map(Some)
                    .ok_or_else(|| FetchError::NoChecksum {
                        what: loc.to_string(),
                        sibling: sib.to_string(),
                        reason: "holds no SHA-256 digest".into(),
                    })
            }
        }
    }

    /// Fetch `loc` and verify it. HTTP downloads are cached by digest; local
    /// files are verified where they are.
    pub fn fetch(
        &self,
        loc: &Location,
        expect: &Expect,
        label: &str,
    ) -> Result<Fetched, FetchError> {
        let expected = self.expected_digest(loc, expect)?;
        match loc {
            Location::Local(path) => {
                let (sha256, size) = digest::file_sha256(path).map_err(io_err(path))?;
                if let Some(e) = &expected
                    && *e != sha256
                {
                    return Err(FetchError::Mismatch {
                        what: path.display().to_string(),
                        expected: e.clone(),
                        actual: sha256,
                    });
                }
                Ok(Fetched {
                    path: path.clone(),
                    sha256,
                    size,
                    cached: false,
                })
            }
            Location::Http(url) => {
                let expected = expected.expect("HTTP locations always have a digest");
                if let Some(f) = self.cached(&expected, label)? {
                    progress::step(format!("{label}: cached ({})", progress::size(f.size)));
                    return Ok(f);
                }
                self.download(url, &expected, label)
            }
        }
    }

    /// The cached blob with digest `expected`, re-hashed before it is used: a
    /// cache entry that no longer matches (a bad disk, a stray write) is
    /// deleted so that it is downloaded again instead of embedded.
    fn cached(&self, expected: &str, label: &str) -> Result<Option<Fetched>, FetchError> {
        let blob = self.cache.blob(expected);
        let (sha256, size) = match digest::file_sha256(&blob) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&blob)(e)),
        };
        if sha256 != expected {
            progress::step(format!(
                "{label}: the cached copy is damaged (SHA-256 {sha256}); downloading it again"
            ));
            fs::remove_file(&blob).map_err(io_err(&blob))?;
            return Ok(None);
        }
        Ok(Some(Fetched {
            path: blob,
            sha256,
            size,
            cached: true,
        }))
    }

    fn get(
        &self,
        url: &str,
        from: Option<(u64, &str)>,
    ) -> Result<reqwest::blocking::Response, FetchError> {
        let mut req = self.client.get(url);
        if let Some((off, validator)) = from {
            // If-Range: the server sends the rest only while the file is the
            // one the partial download started on, else all of it (200).
            req = req
                .header(reqwest::header::RANGE, format!("bytes={off}-"))
                .header(reqwest::header::IF_RANGE, validator);
        }
        req.send().map_err(|e| net(url, e))
    }

    fn download(&self, url: &str, expected: &str, label: &str) -> Result<Fetched, FetchError> {
        let part = self.cache.partial(url);
        // One download per URL at a time: a second picluster waits, then finds
        // the verified blob the first one left.
        let _lock = lock_partial(&part, label)?;
        if let Some(f) = self.cached(expected, label)? {
            return Ok(f);
        }
        let mut delay = self.retry_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.download_attempt(url, &part, label) {
                Ok(()) => break,
                Err(
                    e @ (FetchError::Network { .. } | FetchError::Status { status: 500.., .. }),
                ) if attempt < ATTEMPTS => {
                    let have = fs::metadata(&part).map_or(0, |m| m.len());
                    progress::step(format!(
                        "{label}: {} — resuming from {} in {}s (attempt {}/{ATTEMPTS})",
                        first_line(&with_causes(&e)),
                        progress::size(have),
                        delay.as_secs(),
                        attempt + 1
                    ));
                    std::thread::sleep(delay);
                    interrupt::check()?;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        let (actual, size) = digest::file_sha256(&part).map_err(io_err(&part))?;
        let _ = fs::remove_file(validator_path(&part));
        if actual != expected {
            let _ = fs::remove_file(&part);
            return Err(FetchError::Mismatch {
                what: url.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        let blob = self.cache.blob(expected);
        File::open(&part)
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(&part, &blob))
            .map_err(io_err(&blob))?;
        progress::step(format!(
            "{label}: downloaded and verified ({})",
            progress::size(size)
        ));
        Ok(Fetched {
            path: blob,
            sha256: actual,
            size,
            cached: false,
        })
    }

    /// One request, appending to the partial file from where it ends.
    fn download_attempt(&self, url: &str, part: &Path, label: &str) -> Result<(), FetchError> {
        let validator_file = validator_path(part);
        let validator = fs::read_to_string(&validator_file).ok();
        let mut have = fs::metadata(part).map_or(0, |m| m.len());
        if validator.is_none() {
            // Nothing says which version of the file the partial bytes belong
            // to: resuming could splice two versions together.
            have = 0;
        }
        let resp = self.get(
            url,
            validator.as_deref().filter(|_| have > 0).map(|v| (have, v)),
        )?;
        let status = resp.status().as_u16();
        let (offset, total) = match status {
            206 => {
                let range = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                match parse_content_range(&range) {
                    Some((start, total)) if start == have => (have, total),
                    _ => {
                        // A range we did not ask for: start over.
                        let _ = fs::remove_file(part);
                        return Err(FetchError::Network {
                            url: url.into(),
                            message: format!("unexpected Content-Range \"{range}\""),
                        });
                    }
                }
            }
            // Nothing left to fetch: the partial file is complete.
            416 if have > 0 => return Ok(()),
            200 => {
                // A fresh start (or the file changed upstream): remember what
                // identifies this version for the next resume.
                match resume_validator(resp.headers()) {
                    Some(v) => fs::write(&validator_file, v).map_err(io_err(&validator_file))?,
                    None => {
                        let _ = fs::remove_file(&validator_file);
                    }
                }
                (0, resp.content_length())
            }
            _ => {
                check_status(url, resp)?;
                unreachable!("check_status fails for non-success statuses");
            }
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(offset == 0)
            .append(offset > 0)
            .open(part)
            .map_err(io_err(part))?;
        let bar = progress::bytes(total.unwrap_or(0), label);
        bar.set_position(offset);
        let mut body = resp;
        let mut buf = vec![0u8; 256 << 10];
        let mut got = offset;
        loop {
            if let Err(source) = interrupt::check() {
                bar.abandon();
                return Err(FetchError::InterruptedKept {
                    got,
                    part: part.to_path_buf(),
                    source,
                });
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    return Err(FetchError::Network {
                        url: url.into(),
                        message: format!("connection lost after {}: {e}", progress::size(got)),
                    });
                }
            };
            file.write_all(&buf[..n]).map_err(io_err(part))?;
            got += n as u64;
            bar.set_position(got);
        }
        file.flush().map_err(io_err(part))?;
        bar.finish_and_clear();
        if let Some(t) = total
            && got < t
        {
            return Err(FetchError::Network {
                url: url.into(),
                message: format!(
                    "connection closed after {} of {}",
                    progress::size(got),
                    progress::size(t)
                ),
            });
        }
        Ok(())
    }
}

/// Beside a partial download: the ETag or Last-Modified of the file it holds.
fn validator_path(part: &Path) -> PathBuf {
    part.with_extension("part.validator")
}

/// What `If-Range` may carry: a strong ETag, else Last-Modified (RFC 9110
/// 13.1.5: weak ETags are not allowed there).
fn resume_validator(h: &reqwest::header::HeaderMap) -> Option<String> {
    let get = |k| {
        h.get(k)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
    };
    get(reqwest::header::ETAG)
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| get(reqwest::header::LAST_MODIFIED))
        .map(str::to_string)
}

/// An exclusive lock on one URL's partial download, waiting (and saying so)
/// while another picluster holds it. The lock file is never removed: removing
/// it could let a third process lock a new file while the second holds the old.
fn lock_partial(part: &Path, label: &str) -> Result<File, FetchError> {
    let path = part.with_extension("part.lock");
    let file = File::create(&path).map_err(io_err(&path))?;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !said {
                    progress::step(format!(
                        "{label}: another picluster is downloading it; waiting for it to finish"
                    ));
                    said = true;
                }
                interrupt::check()?;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
    }
}

fn net(url: &str, e: reqwest::Error) -> FetchError {
    // reqwest's Display omits the cause ("error sending request"); add it.
    // The URL is said once, by FetchError: not again inside the message.
    let e = e.without_url();
    let message = with_causes(&e);
    if e.is_connect() && !e.is_timeout() && is_permanent(&message) {
        FetchError::Unreachable {
            url: url.to_string(),
            message,
        }
    } else {
        FetchError::Network {
            url: url.to_string(),
            message,
        }
    }
}

fn check_status(
    url: &str,
    resp: reqwest::blocking::Response,
) -> Result<reqwest::blocking::Response, FetchError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let hint = match status.as_u16() {
        404 => " (not found): check the URL, the version and the mirror layout".to_string(),
        401 | 403 => " (access denied)".to_string(),
        _ => String::new(),
    };
    Err(FetchError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        hint,
    })
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Connection failures that a retry a few seconds later cannot fix: name
/// resolution (hyper-util's "dns error", the resolver's "failed to lookup
/// address"), a refused connection, and TLS certificate errors (rustls).
fn is_permanent(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "connection refused",
        "certificate",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// An error and its causes on one line, for messages that embed it.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("https://x/a/b.img.xz").file_name(),
            "b.img.xz"
        );
        assert_eq!(
            Location::parse("file:///tmp/b.img"),
            Location::Local("/tmp/b.img".into())
        );
        assert_eq!(
            Location::parse("rel/b.img"),
            Location::Local("rel/b.img".into())
        );
        assert_eq!(
            Location::parse("http://m/k3s")
                .join("v1+k3s1/k3s-arm64")
                .to_string(),
            "http://m/k3s/v1+k3s1/k3s-arm64"
        );
        assert_eq!(
            Location::parse("/a/b.xz")
                .with_suffix(".sha256")
                .to_string(),
            "/a/b.xz.sha256"
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
