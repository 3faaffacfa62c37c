//! `--tokenizer ORG/NAME`: a model's `tokenizer.json` from the Hugging Face hub.
//!
//! The file is looked up first in the standard Hugging Face cache (`$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), laid out as `huggingface_hub` lays it out
//! (`models--ORG--NAME/{refs/main, snapshots/COMMIT/tokenizer.json, blobs/ETAG}`), so a model
//! fetched by Python tools is used offline and the other way round. Only when it is not there
//! is it downloaded (`$HF_ENDPOINT`, default `https://huggingface.co`, with `$HF_TOKEN` if set)
//! and stored in the cache. `HF_HUB_OFFLINE=1` forbids the download.
//!
//! The download runs on a thread of its own with a small runtime, so it can be called from
//! anywhere, and its connection attempt is bounded so that an offline machine fails fast.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{one_line, Tokenizer, TokenizerError};

const FILE: &str = "tokenizer.json";
/// The revision used unless `--tokenizer-revision` names another.
pub const DEFAULT_REVISION: &str = "main";
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Bounds DNS, TCP and TLS setup of each connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds each wait for more of a response (not the whole download, which may be large).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 10;

/// Whether `spec` has the shape of a hub repo id: `ORG/NAME`, each part made of ASCII
/// letters, digits, `-`, `_` and `.`, not starting or ending with `-` or `.`, without `--`
/// or `..`.
pub fn is_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
            && !p.contains("--")
            && !p.contains("..")
    };
    part_ok(org) && part_ok(name)
}

/// Where and how to reach the hub; read from the environment by [`HubConfig::from_env`].
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The hub cache directory (the one holding `models--*`), if one can be named.
    pub cache: Option<PathBuf>,
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// Sent as a bearer token to the endpoint's host only.
    pub token: Option<String>,
    /// Never download.
    pub offline: bool,
    /// The branch, tag or commit to use (`--tokenizer-revision`; see [`is_revision`]).
    pub revision: String,
}

/// Whether `rev` can name a hub revision here: a branch, tag or commit of ASCII letters,
/// digits, `-`, `_`, `.` and `/` (`refs/pr/1`), at most 256 bytes, without `..`, `//` or
/// a leading or trailing `/` (it becomes a path in the cache).
pub fn is_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev.len() <= 256
        && rev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !rev.contains("..")
        && !rev.contains("//")
        && !rev.starts_with(['/', '.'])
        && !rev.ends_with('/')
}

/// A full commit id (40 hex digits): its snapshot is found without a `refs/` file.
fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn env_true(key: &str) -> bool {
    env(key).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

impl HubConfig {
    /// `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HOME`, `HF_ENDPOINT`, `HF_TOKEN` (else
    /// `HUGGING_FACE_HUB_TOKEN`, else the token file `huggingface-cli login` writes) and
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`), as the Python `huggingface_hub` reads them.
    pub fn from_env() -> Self {
        let home = env("HF_HOME").map(PathBuf::from).or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache")))
                .map(|c| c.join("huggingface"))
        });
        let cache = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join("hub")));
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let file = env("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|h| h.join("token")))?;
                std::fs::read_to_string(file)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let endpoint = env("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        Self {
            cache,
            endpoint,
            token,
            offline: env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE"),
            revision: DEFAULT_REVISION.to_string(),
        }
    }

    /// The same, for revision `rev` (checked by the config with [`is_revision`]).
    pub fn with_revision(mut self, rev: &str) -> Self {
        self.revision = rev.to_string();
        self
    }

    /// `CACHE/models--ORG--NAME`.
    fn repo_dir(&self, repo: &str) -> Option<PathBuf> {
        let cache = self.cache.as_ref()?;
        Some(cache.join(format!("models--{}", repo.replace('/', "--"))))
    }

    /// The cached `tokenizer.json` of `repo` at the revision: the snapshot of that commit, or
    /// the one `refs/REVISION` names; for `main` only, else the most recently written
    /// snapshot that has one.
    pub fn cached(&self, repo: &str) -> Option<PathBuf> {
        let dir = self.repo_dir(repo)?;
        if !is_revision(&self.revision) {
            return None;
        }
        if is_commit(&self.revision) {
            let file = dir.join("snapshots").join(&self.revision).join(FILE);
            if file.is_file() {
                return Some(file);
            }
        }
        if let Ok(commit) = std::fs::read_to_string(dir.join("refs").join(&self.revision)) {
            let commit = commit.trim();
            if safe_name(commit) {
                let file = dir.join("snapshots").join(commit).join(FILE);
                if file.is_file() {
                    return Some(file);
                }
            }
        }
        if self.revision != DEFAULT_REVISION {
            return None;
        }
        std::fs::read_dir(dir.join("snapshots"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(FILE))
            .filter_map(|f| {
                // `metadata` follows the symlink into blobs/.
                let modified = std::fs::metadata(&f).ok()?.modified().ok()?;
                f.is_file().then_some((modified, f))
            })
            .max()
            .map(|(_, f)| f)
    }

    /// Downloads `repo`'s `tokenizer.json` (not touching the cache).
    pub fn download(&self, repo: &str) -> Result<Download, TokenizerError> {
        let hub_err = |reason: String| TokenizerError::Hub {
            repo: repo.to_string(),
            reason,
        };
        if self.offline {
            let where_ = match self.repo_dir(repo) {
                Some(d) => format!(" at {}", d.display()),
                None => String::new(),
            };
            return Err(hub_err(format!(
                "HF_HUB_OFFLINE is set and it is not in the cache{where_}"
            )));
        }
        let (cfg, r) = (self.clone(), repo.to_string());
        let fetched = std::thread::Builder::new()
            .name("hf-hub-download".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Failure::Other(one_line(e)))?;
                let out = rt.block_on(fetch(&cfg, &r));
                // A DNS lookup that outlived its timeout must not hold us up.
                rt.shutdown_background();
                out
            })
            .map_err(|e| hub_err(one_line(e)))?
            .join()
            .unwrap_or_else(|_| Err(Failure::Other("download thread panicked".into())));
        fetched.map_err(|f| hub_err(f.reason(&self.revision)))
    }

    /// Stores a download in the cache as `huggingface_hub` would, returning the snapshot
    /// file. Needs the commit the hub reported; without an ETag the file is stored in the
    /// snapshot itself rather than linked to a blob.
    pub fn store(&self, repo: &str, dl: &Download) -> std::io::Result<PathBuf> {
        let io_err = |m: &str| std::io::Error::other(m.to_string());
        let dir = self
            .repo_dir(repo)
            .ok_or_else(|| io_err("no cache directory"))?;
        let commit = dl
            .commit
            .as_deref()
            .filter(|c| safe_name(c))
            .ok_or_else(|| io_err("the hub named no commit"))?;
        let snapshot = dir.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot)?;
        let file = snapshot.join(FILE);
        let etag = dl.etag.as_deref().filter(|e| safe_name(e));
        match etag {
            Some(etag) => {
                let blobs = dir.join("blobs");
                std::fs::create_dir_all(&blobs)?;
                write_atomic(&blobs.join(etag), &dl.bytes)?;
                link_or_copy(
                    &blobs.join(etag),
                    Path::new("../../blobs").join(etag),
                    &file,
                )?;
            }
            None => write_atomic(&file, &dl.bytes)?,
        }
        // As huggingface_hub does: a branch or tag is remembered by name; a commit is its own
        // snapshot.
        if self.revision != commit && is_revision(&self.revision) {
            let reference = dir.join("refs").join(&self.revision);
            if let Some(parent) = reference.parent() {
                std::fs::create_dir_all(parent)?;
            }
            write_atomic(&reference, commit.as_bytes())?;
        }
        Ok(file)
    }
}

/// A downloaded `tokenizer.json` and what the hub said about it.
#[derive(Debug, Clone)]
pub struct Download {
    pub bytes: Vec<u8>,
    /// `X-Repo-Commit`: the snapshot it belongs to.
    pub commit: Option<String>,
    /// `X-Linked-Etag` or `ETag`, unquoted: the blob's name in the cache.
    pub etag: Option<String>,
}

/// Loads `repo`'s tokenizer from the cache, else downloads, checks and caches it.
pub fn load(cfg: &HubConfig, repo: &str) -> Result<Tokenizer, TokenizerError> {
    if let Some(file) = cfg.cached(repo) {
        return Tokenizer::from_path(repo, &file);
    }
    let dl = cfg.download(repo)?;
    // Only a file that parses is kept.
    let tokenizer = Tokenizer::from_json(repo, &dl.bytes)?;
    if let Err(e) = cfg.store(repo, &dl) {
        tracing::warn!("tokenizer `{repo}` not cached: {}", one_line(e));
    }
    Ok(tokenizer)
}

/// A file or directory name that is safe to build a cache path from.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.incomplete", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Makes `link` point at `blob` through the relative `target`; copies where links fail.
fn link_or_copy(blob: &Path, target: PathBuf, link: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(link);
    #[cfg(unix)]
    if std::os::unix::fs::symlink(&target, link).is_ok() {
        return Ok(());
    }
    let _ = target;
    std::fs::copy(blob, link).map(|_| ())
}

/// Why a download failed.
#[derive(Debug)]
enum Failure {
    /// No answer from the hub: no network, DNS, refused, timed out.
    Unreachable(String),
    /// The hub answered with an error status.
    Status {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    Other(String),
}

impl Failure {
    /// Why, in one line; `revision` is the one asked for.
    fn reason(&self, revision: &str) -> String {
        match self {
            Failure::Unreachable(why) => format!("offline? {why}"),
            Failure::Status {
                status,
                code,
                message,
            } => {
                let what = match (code.as_deref(), status) {
                    (Some("EntryNotFound"), _) | (None, 404) => {
                        "the model has no tokenizer.json".to_string()
                    }
                    (Some("RepoNotFound"), _) => {
                        "no such model, or it is private (set HF_TOKEN)".to_string()
                    }
                    (Some("GatedRepo"), _) => {
                        "the model is gated: accept its terms on the hub and set HF_TOKEN"
                            .to_string()
                    }
                    (Some("RevisionNotFound"), _) => {
                        format!("the model has no revision `{revision}`")
                    }
                    (_, 401 | 403) => {
                        "access denied (set HF_TOKEN to a token with access)".to_string()
                    }
                    _ => message
                        .as_deref()
                        .map(one_line)
                        .unwrap_or_else(|| "unexpected answer".into()),
                };
                format!("HTTP {status}: {what}")
            }
            Failure::Other(why) => why.clone(),
        }
    }
}

/// The innermost cause of a request error, which names what actually went wrong.
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    one_line(cause)
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)?
        .to_str()
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// An ETag without `W/` and quotes.
fn unquote(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_string()
}

async fn fetch(cfg: &HubConfig, repo: &str) -> Result<Download, Failure> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("aiperf/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::Other(one_line(e)))?;
    if !is_revision(&cfg.revision) {
        return Err(Failure::Other(format!("bad revision `{}`", cfg.revision)));
    }
    // As huggingface_hub does: the revision is one path segment (`refs/pr/1` → `refs%2Fpr%2F1`).
    let revision = cfg.revision.replace('/', "%2F");
    let start = format!("{}/{repo}/resolve/{revision}/{FILE}", cfg.endpoint);
    let mut url = reqwest::Url::parse(&start)
        .map_err(|e| Failure::Other(format!("bad HF_ENDPOINT `{}`: {e}", cfg.endpoint)))?;
    let hub_origin = url.origin();
    let (mut commit, mut etag) = (None, None);
    for _ in 0..=MAX_REDIRECTS {
        let mut req = client.get(url.clone());
        if let Some(token) = &cfg.token {
            if url.origin() == hub_origin {
                req = req.bearer_auth(token);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Unreachable(root_cause(&e)))?;
        let status = resp.status();
        if commit.is_none() {
            commit = header(&resp, "x-repo-commit");
        }
        let location = header(&resp, "location");
        // As huggingface_hub does: relative redirects stay on the hub (a renamed repo, say),
        // and the file's metadata is read after them.
        let relative = status.is_redirection()
            && location
                .as_deref()
                .is_some_and(|l| l.starts_with('/') && !l.starts_with("//"));
        if etag.is_none() && !relative {
            etag = header(&resp, "x-linked-etag")
                .or_else(|| header(&resp, "etag"))
                .map(|e| unquote(&e));
        }
        if status.is_success() {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| Failure::Unreachable(root_cause(&e)))?;
            return Ok(Download {
                bytes: bytes.to_vec(),
                commit,
                etag,
            });
        }
        if status.is_redirection() {
            let Some(loc) = location else {
                return Err(Failure::Other(format!("HTTP {status} without a location")));
            };
            url = url
                .join(&loc)
                .map_err(|e| Failure::Other(format!("bad redirect `{loc}`: {e}")))?;
            continue;
        }
        return Err(Failure::Status {
            status: status.as_u16(),
            code: header(&resp, "x-error-code"),
            message: header(&resp, "x-error-message"),
        });
    }
    Err(Failure::Other("too many redirects".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::tests::{fixture_json, SENTENCES};

    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    #[test]
    fn repo_ids() {
        for ok in [
            "gpt2/gpt2",
            "meta-llama/Llama-3.1-8B-Instruct",
            "Qwen/Qwen2.5-0.5B",
            "org_1/model.v2",
        ] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in [
            "gpt2",
            "a/b/c",
            "/abs/path",
            "./rel",
            "org/",
            "/name",
            "org/na me",
            "org/-x",
            "org/x.",
            "org/a--b",
            "org/a..b",
            "../x",
            "org\\name",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    fn config(cache: &Path, endpoint: &str) -> HubConfig {
        HubConfig {
            cache: Some(cache.to_path_buf()),
            endpoint: endpoint.to_string(),
            token: None,
            offline: false,
            revision: DEFAULT_REVISION.to_string(),
        }
    }

    #[test]
    fn uses_the_cache_as_huggingface_hub_lays_it_out() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path(), "http://127.0.0.1:9");
        cfg.offline = true;
        assert!(cfg.cached("acme/tiny").is_none());
        let e = load(&cfg, "acme/tiny").unwrap_err().to_string();
        assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
        assert!(e.contains("pass a local path"), "{e}");
        assert!(!e.contains('\n'));

        // A snapshot that refs/main does not name is still found...
        let repo = tmp.path().join("models--acme--tiny");
        let old = repo.join("snapshots/0ld");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(FILE), fixture_json()).unwrap();
        assert_eq!(cfg.cached("acme/tiny").unwrap(), old.join(FILE));
        // ...but the one it names wins, and may be a link into blobs/.
        let new = repo.join("snapshots/c0ffee");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(repo.join("blobs/abc"), fixture_json()).unwrap();
        link_or_copy(
            &repo.join("blobs/abc"),
            PathBuf::from("../../blobs/abc"),
            &new.join(FILE),
        )
        .unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "c0ffee").unwrap();
        assert_eq!(cfg.cached("acme/tiny").unwrap(), new.join(FILE));

        let t = load(&cfg, "acme/tiny").unwrap();
        assert_eq!(t.name(), "acme/tiny");
        assert_eq!(t.kind(), "huggingface");
        assert!(t.count(SENTENCES[0]) > 0);
    }

    /// What the test hub saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        auth: Option<String>,
    }

    /// A tiny HTTP/1.1 hub on 127.0.0.1 that answers every request from `route` (status,
    /// headers, body) and closes the connection. Serves until the process ends.
    fn serve(
        route: impl Fn(&str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + 'static,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = Some(v.trim().to_string());
                        }
                    }
                }
                log.lock().unwrap().push(Seen {
                    path: path.clone(),
                    auth,
                });
                let (status, headers, body) = route(&path);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (base, seen)
    }

    fn h(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn downloads_follows_redirects_and_caches() {
        let json = fixture_json().into_bytes();
        let body = json.clone();
        let (base, seen) = serve(move |path| match path {
            "/acme/tiny/resolve/main/tokenizer.json" => (
                302,
                vec![
                    h(
                        "location",
                        "/api/resolve-cache/acme/tiny/0123abcd/tokenizer.json",
                    ),
                    h("x-repo-commit", "0123abcd"),
                ],
                vec![],
            ),
            "/api/resolve-cache/acme/tiny/0123abcd/tokenizer.json" => (
                200,
                vec![h("etag", "\"blob42\""), h("x-repo-commit", "0123abcd")],
                body.clone(),
            ),
            _ => (404, vec![], vec![]),
        });
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path(), &base);
        cfg.token = Some("hf_test".into());

        let t = load(&cfg, "acme/tiny").unwrap();
        let reference = Tokenizer::from_json("ref", &json).unwrap();
        for s in SENTENCES {
            assert_eq!(t.count(s), reference.count(s));
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].auth.as_deref(), Some("Bearer hf_test"));

        let repo = tmp.path().join("models--acme--tiny");
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            "0123abcd"
        );
        assert_eq!(std::fs::read(repo.join("blobs/blob42")).unwrap(), json);
        let snap = repo.join("snapshots/0123abcd/tokenizer.json");
        assert_eq!(std::fs::read(&snap).unwrap(), json);
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(&snap).unwrap(),
            PathBuf::from("../../blobs/blob42")
        );
        // Cached now: found without the network.
        cfg.offline = true;
        assert_eq!(cfg.cached("acme/tiny").unwrap(), snap);
        assert!(load(&cfg, "acme/tiny").is_ok());
    }

    #[test]
    fn lfs_redirect_metadata_comes_from_the_hub_not_the_cdn() {
        let json = fixture_json().into_bytes();
        let body = json.clone();
        // The CDN: another origin (another port) than the hub.
        let (cdn, cdn_seen) = serve(move |path| match path {
            "/cdn/file" => (200, vec![h("etag", "\"cdn-etag\"")], body.clone()),
            _ => (404, vec![], vec![]),
        });
        let location = format!("{cdn}/cdn/file");
        let (hub, _) = serve(move |path| match path {
            "/acme/big/resolve/main/tokenizer.json" => (
                302,
                vec![
                    h("location", &location),
                    h("x-repo-commit", "feed"),
                    h("x-linked-etag", "\"sha256abc\""),
                    h("etag", "\"pointer\""),
                ],
                vec![],
            ),
            _ => (404, vec![], vec![]),
        });
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path(), &hub);
        cfg.token = Some("hf_secret".into());
        let dl = cfg.download("acme/big").unwrap();
        assert_eq!(dl.bytes, json);
        assert_eq!(dl.commit.as_deref(), Some("feed"));
        assert_eq!(dl.etag.as_deref(), Some("sha256abc"));
        // The token went to the hub only, never to the CDN.
        let seen = cdn_seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].path, "/cdn/file");
        assert_eq!(seen[0].auth, None);
    }

    #[test]
    fn hub_errors_are_one_line_and_point_to_a_local_path() {
        let (base, _) = serve(|path| match path {
            "/acme/none/resolve/main/tokenizer.json" => {
                (404, vec![h("x-error-code", "EntryNotFound")], vec![])
            }
            "/acme/gated/resolve/main/tokenizer.json" => {
                (401, vec![h("x-error-code", "GatedRepo")], vec![])
            }
            "/acme/bad/resolve/main/tokenizer.json" => (
                200,
                vec![h("x-repo-commit", "beef")],
                b"{\"not\": \"a tokenizer\"}\n".to_vec(),
            ),
            _ => (500, vec![], vec![]),
        });
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), &base);
        let cases = [
            ("acme/none", "no tokenizer.json"),
            ("acme/gated", "gated"),
            ("acme/other", "HTTP 500"),
            ("acme/bad", "not a valid tokenizer.json"),
        ];
        for (repo, want) in cases {
            let e = load(&cfg, repo).unwrap_err().to_string();
            assert!(e.contains(want), "{repo}: {e}");
            assert!(!e.contains('\n'), "{e}");
            if repo != "acme/bad" {
                assert!(e.contains("pass a local path"), "{e}");
            }
        }
        // A file that does not parse is not cached.
        assert!(!tmp.path().join("models--acme--bad").exists());
    }

    #[test]
    fn revisions() {
        for ok in ["main", "v1.0", "refs/pr/1", "0123abcd", "my_branch-2"] {
            assert!(is_revision(ok), "{ok}");
        }
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", "trail/", ".hidden", "sp ace", "a\\b",
        ] {
            assert!(!is_revision(bad), "{bad}");
        }
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
    }

    #[test]
    fn a_revision_picks_its_own_snapshot_in_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path(), "http://127.0.0.1:9");
        cfg.offline = true;
        let repo = tmp.path().join("models--acme--tiny");
        let commit = "c".repeat(40);
        for snap in ["aaaa", commit.as_str()] {
            std::fs::create_dir_all(repo.join("snapshots").join(snap)).unwrap();
            std::fs::write(repo.join("snapshots").join(snap).join(FILE), fixture_json()).unwrap();
        }
        std::fs::create_dir_all(repo.join("refs/refs/pr")).unwrap();
        std::fs::write(repo.join("refs/v1"), "aaaa").unwrap();
        std::fs::write(repo.join("refs/refs/pr/1"), &commit).unwrap();
        let at = |rev: &str| cfg.clone().with_revision(rev).cached("acme/tiny");
        assert_eq!(at("v1").unwrap(), repo.join("snapshots/aaaa").join(FILE));
        assert_eq!(
            at("refs/pr/1").unwrap(),
            repo.join("snapshots").join(&commit).join(FILE)
        );
        assert_eq!(
            at(&commit).unwrap(),
            repo.join("snapshots").join(&commit).join(FILE)
        );
        // An unknown revision is not served from another snapshot; `main` may be.
        assert_eq!(at("v2"), None);
        assert!(at("main").is_some());
        let e = load(&cfg.clone().with_revision("v2"), "acme/tiny").unwrap_err();
        assert!(e.to_string().contains("HF_HUB_OFFLINE"), "{e}");
    }

    #[test]
    fn a_revision_is_downloaded_and_remembered_by_name() {
        let json = fixture_json().into_bytes();
        let body = json.clone();
        let (base, seen) = serve(move |path| match path {
            "/acme/tiny/resolve/refs%2Fpr%2F7/tokenizer.json" => (
                200,
                vec![h("etag", "\"b7\""), h("x-repo-commit", "feed7")],
                body.clone(),
            ),
            _ => (404, vec![h("x-error-code", "RevisionNotFound")], vec![]),
        });
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), &base).with_revision("refs/pr/7");
        assert!(load(&cfg, "acme/tiny").is_ok());
        assert_eq!(
            seen.lock().unwrap()[0].path,
            "/acme/tiny/resolve/refs%2Fpr%2F7/tokenizer.json"
        );
        let repo = tmp.path().join("models--acme--tiny");
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/refs/pr/7")).unwrap(),
            "feed7"
        );
        assert!(!repo.join("refs/main").exists());
        let mut offline = cfg.clone();
        offline.offline = true;
        assert!(load(&offline, "acme/tiny").is_ok());
        let e = load(&cfg.clone().with_revision("nope"), "acme/tiny").unwrap_err();
        assert!(e.to_string().contains("no revision `nope`"), "{e}");
    }

    #[test]
    fn unreachable_hub_fails_fast_with_one_line() {
        // Nothing listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), &format!("http://127.0.0.1:{port}"));
        let started = std::time::Instant::now();
        let e = load(&cfg, "acme/tiny").unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(e.contains("offline?"), "{e}");
        assert!(
            e.starts_with("cannot download tokenizer `acme/tiny`"),
            "{e}"
        );
        assert!(e.ends_with("with --tokenizer PATH"), "{e}");
        assert!(!e.contains('\n'));
    }
}
