//! `berth push`: uploads a blob (or a manifest) to any OCI registry, built for big layers.
//!
//! - Against a registry that offers Berth's direct-upload extension (`Berth-Direct-Upload:
//!   parts` on the upload POST; Berth on Lambda), parts go straight to object storage over
//!   presigned URLs, several at once, and the registry verifies the digest at completion.
//! - Anywhere else (the edge, `berth serve`, other registries), chunked PATCHes with
//!   Content-Range, each within the registry's advertised limits (`OCI-Chunk-Min-Length`,
//!   `OCI-Chunk-Max-Length`).
//!
//! Progress is saved after every part or chunk in a small state file, so a push that failed
//! (network, crash, Ctrl-C) resumes where it stopped when run again with the same arguments.
//! Memory stays at a few parts, whatever the file's size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Mutex;

use crate::token_client::TokenSource;
use crate::upstream::{explain, fail, header, is_loopback, offset_of, with_query, PartUrl, PartUrls, Registry};

#[derive(clap::Args)]
pub struct PushArgs {
    /// The file to push: blob bytes, or with --manifest a manifest (JSON with a mediaType), or a
    /// whole image: an OCI layout (directory or tar), a docker archive, or `-` for a tar on stdin.
    file: PathBuf,
    /// Where: REGISTRY/REPO for a blob, REGISTRY/REPO:TAG (or @digest) for a manifest.
    /// REGISTRY may be host[:port] (HTTPS, but plain HTTP for loopback: localhost, 127.0.0.0/8,
    /// ::1, as docker does) or a full http(s):// URL (https://127.0.0.1:5000 forces TLS).
    target: String,
    /// Push the file as a manifest instead of a blob.
    #[arg(long)]
    manifest: bool,
    /// Use plain HTTP for a REGISTRY given as host[:port] that is not on loopback (loopback
    /// registries get plain HTTP without it).
    #[arg(long)]
    plain_http: bool,
    /// Parts uploaded at once (direct uploads).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Part size in MiB for direct uploads (raised if the file would need too many parts).
    #[arg(long, default_value_t = 16)]
    part_mib: u64,
    /// Chunk size in MiB for chunked uploads (kept within the registry's advertised limits).
    #[arg(long, default_value_t = 16)]
    chunk_mib: u64,
    /// Never use the direct-upload extension, even where offered.
    #[arg(long)]
    no_direct: bool,
    #[command(flatten)]
    login: crate::upstream::Login,
    /// Where resumable push state is kept.
    #[arg(long, env = "BERTH_PUSH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    image: crate::push_image::ImageArgs,
}

/// How a blob is uploaded: what `push_blob_file` needs of the command line.
#[derive(Clone)]
pub(crate) struct BlobOpts {
    pub(crate) jobs: usize,
    pub(crate) part_mib: u64,
    pub(crate) chunk_mib: u64,
    pub(crate) no_direct: bool,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) quiet: bool,
}

impl PushArgs {
    fn blob_opts(&self) -> BlobOpts {
        BlobOpts {
            jobs: self.jobs,
            part_mib: self.part_mib,
            chunk_mib: self.chunk_mib,
            no_direct: self.no_direct,
            state_dir: self.state_dir.clone(),
            quiet: self.quiet,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// What a resumed push needs to know; saved after every part or chunk.
#[derive(Serialize, Deserialize, Clone, Default)]
struct PushState {
    /// The upload session's URL (absolute).
    location: String,
    direct: bool,
    part_size: u64,
    /// Direct: parts already in storage.
    done_parts: Vec<u32>,
    /// Chunked: bytes the registry acknowledged.
    offset: u64,
}

/// Splits `REGISTRY/REPO[:TAG|@DIGEST]` into the base URL, the repository and the reference.
fn parse_target(target: &str, plain_http: bool) -> Result<(String, String, Option<String>), String> {
    let (scheme, rest) = if let Some(r) = target.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = target.strip_prefix("https://") {
        ("https", r)
    } else {
        (if plain_http || is_loopback(target) { "http" } else { "https" }, target)
    };
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{target:?} names no repository; expected REGISTRY/REPO"))?;
    let (repo, reference) = if let Some((r, d)) = path.split_once('@') {
        (r.to_owned(), Some(d.to_owned()))
    } else {
        match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_owned(), Some(t.to_owned())),
            _ => (path.to_owned(), None),
        }
    };
    if repo.is_empty() {
        return Err(format!("{target:?} names no repository"));
    }
    Ok((format!("{scheme}://{host}"), repo, reference))
}

pub async fn run(args: PushArgs) -> Result<(), String> {
    let (base, repo, reference) = parse_target(&args.target, args.plain_http)?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    if args.login.password_stdin && args.file.as_os_str() == "-" {
        return Err("--password-stdin and `-` (an image on stdin) both read stdin: give the password in BERTH_PASSWORD".into());
    }
    let credentials = args.login.credentials()?;
    let tokens = match &args.login.token {
        Some(_) => None,
        None => TokenSource::discover(&http, &base, &repo, credentials).await?,
    };
    let registry = Registry { http, base, repo, token: args.login.token.clone(), tokens };
    if args.manifest {
        let reference = reference.ok_or("a manifest needs a tag or digest: REGISTRY/REPO:TAG")?;
        let digest = push_manifest(&registry, &args.file, &reference).await?;
        println!("{digest}");
        return Ok(());
    }
    // A whole image (OCI layout, docker archive, a tar on stdin): pushed by push_image.rs.
    if let Some(input) = crate::push_image::detect(&args.file, reference.is_some())? {
        return crate::push_image::run(&registry, input, reference, &args.image, &args.blob_opts()).await;
    }
    if reference.is_some() {
        return Err("a blob is pushed to REGISTRY/REPO (no tag); use --manifest for manifests".into());
    }
    let digest = push_blob(&registry, &args).await?;
    println!("{digest}");
    Ok(())
}

async fn push_manifest(registry: &Registry, file: &Path, reference: &str) -> Result<String, String> {
    let bytes = tokio::fs::read(file).await.map_err(|e| format!("{}: {e}", file.display()))?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
        .ok_or("the manifest has no mediaType field")?;
    put_manifest(registry, bytes, &media_type, reference).await
}

/// PUTs manifest bytes under a tag or digest; returns the digest the registry gives it.
pub(crate) async fn put_manifest(registry: &Registry, bytes: Vec<u8>, media_type: &str, reference: &str) -> Result<String, String> {
    let resp = registry
        .request(reqwest::Method::PUT, &registry.url(&format!("manifests/{reference}")))
        .await?
        .header("content-type", media_type.to_owned())
        .body(bytes.clone())
        .send()
        .await
        .map_err(|e| explain("PUT manifest", &e))?;
    if resp.status() != reqwest::StatusCode::CREATED {
        return Err(fail("PUT manifest", resp).await);
    }
    Ok(header(&resp, "docker-content-digest").unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))))
}

/// sha256 of the file, read in 1 MiB pieces.
pub(crate) async fn file_digest(path: &Path, progress: &ProgressBar) -> Result<(String, u64), String> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        progress.inc(n as u64);
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

async fn read_range(path: &Path, start: u64, len: u64) -> Result<Vec<u8>, String> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| format!("seek: {e}"))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).await.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(buf)
}

pub(crate) fn bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn state_path(opts: &BlobOpts, registry: &Registry, digest: &str) -> PathBuf {
    let dir = opts.state_dir.clone().unwrap_or_else(|| {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("berth/push")
    });
    let key = Sha256::digest(format!("{}\0{}\0{digest}", registry.base, registry.repo).as_bytes());
    dir.join(format!("{}.json", hex::encode(key)))
}

async fn load_state(path: &Path) -> Option<PushState> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn save_state(path: &Path, state: &PushState) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    tokio::fs::write(&tmp, json).await.map_err(|e| format!("{}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, path).await.map_err(|e| format!("{}: {e}", path.display()))
}

async fn push_blob(registry: &Registry, args: &PushArgs) -> Result<String, String> {
    let size_hint = tokio::fs::metadata(&args.file).await.map_err(|e| format!("{}: {e}", args.file.display()))?.len();
    let hashing = bar(args.quiet, size_hint, "digest");
    let (digest, size) = file_digest(&args.file, &hashing).await?;
    hashing.finish_and_clear();
    if blob_exists(registry, &digest).await? {
        eprintln!("berth push: {digest} is already in {}", registry.repo);
        return Ok(digest);
    }
    let progress = bar(args.quiet, size, "upload");
    push_blob_file(registry, &args.file, &digest, size, &args.blob_opts(), &progress).await?;
    progress.finish_and_clear();
    Ok(digest)
}

/// Whether the repository has the blob (HEAD).
pub(crate) async fn blob_exists(registry: &Registry, digest: &str) -> Result<bool, String> {
    let head = registry.send(reqwest::Method::HEAD, &registry.url(&format!("blobs/{digest}")), "HEAD blob").await?;
    Ok(head.status().is_success())
}

/// Uploads the file whose sha256 the caller knows (`digest`, `size`), resuming a saved session
/// for it if there is one; `progress` counts the bytes sent.
pub(crate) async fn push_blob_file(
    registry: &Registry,
    path: &Path,
    digest: &str,
    size: u64,
    opts: &BlobOpts,
    progress: &ProgressBar,
) -> Result<(), String> {
    let state_file = state_path(opts, registry, digest);
    let mut state = match load_state(&state_file).await {
        Some(state) if session_alive(registry, &state).await => {
            eprintln!("berth push: resuming the upload saved in {}", state_file.display());
            state
        }
        _ => start_session(registry, opts, size).await?,
    };
    save_state(&state_file, &state).await?;
    let location = if state.direct {
        push_direct(registry, path, opts, &mut state, &state_file, size, progress).await?
    } else {
        push_chunked(registry, path, &mut state, &state_file, size, progress).await?
    };
    let url = with_query(&registry.absolute(&location), &format!("digest={digest}"));
    let resp = registry.send(reqwest::Method::PUT, &url, "completing the upload").await?;
    if resp.status() != reqwest::StatusCode::CREATED {
        let err = fail("completing the upload", resp).await;
        // The session is gone (the registry discards it on a failed completion).
        let _ = tokio::fs::remove_file(&state_file).await;
        return Err(err);
    }
    let _ = tokio::fs::remove_file(&state_file).await;
    Ok(())
}

/// Is the saved session still open on the registry? (For chunked ones, picks up its offset.)
async fn session_alive(registry: &Registry, state: &PushState) -> bool {
    let Ok(req) = registry.request(reqwest::Method::GET, &registry.absolute(&state.location)).await else {
        return false;
    };
    matches!(req.send().await, Ok(r) if r.status().is_success())
}

async fn start_session(registry: &Registry, args: &BlobOpts, size: u64) -> Result<PushState, String> {
    let resp = registry.send(reqwest::Method::POST, &registry.url("blobs/uploads/"), "starting the upload").await?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return Err(fail("starting the upload", resp).await);
    }
    let location = registry.absolute(&header(&resp, "location").ok_or("the registry sent no upload Location")?);
    let direct = !args.no_direct && header(&resp, "berth-direct-upload").as_deref() == Some("parts");
    let min = header(&resp, "oci-chunk-min-length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let max = header(&resp, "oci-chunk-max-length").and_then(|v| v.parse::<u64>().ok());
    let part_size = if direct {
        // S3 takes at most 10,000 parts.
        (args.part_mib.max(5) * MIB).max(size.div_ceil(10_000).div_ceil(MIB) * MIB)
    } else {
        let mut chunk = (args.chunk_mib.max(1) * MIB).max(min);
        if let Some(max) = max {
            chunk = chunk.min(max);
        }
        chunk.max(1)
    };
    Ok(PushState { location, direct, part_size, ..PushState::default() })
}

async fn push_direct(
    registry: &Registry,
    path: &Path,
    args: &BlobOpts,
    state: &mut PushState,
    state_file: &Path,
    size: u64,
    progress: &ProgressBar,
) -> Result<String, String> {
    let count = size.div_ceil(state.part_size).max(1) as u32;
    let todo: Vec<u32> = (1..=count).filter(|n| !state.done_parts.contains(n)).collect();
    progress.inc((count as usize - todo.len()) as u64 * state.part_size.min(size));
    let shared = Arc::new(Mutex::new(state.clone()));
    // URLs are fetched in batches just before use, so they do not expire while waiting.
    for batch in todo.chunks(100) {
        let first = batch[0];
        let last = *batch.last().unwrap_or(&first);
        let url = format!("{}/parts?first={first}&count={}", registry.absolute(&state.location), last - first + 1);
        let resp = registry.send(reqwest::Method::POST, &url, "asking for part URLs").await?;
        if !resp.status().is_success() {
            return Err(fail("asking for part URLs", resp).await);
        }
        let urls: PartUrls = resp.json().await.map_err(|e| format!("part URLs: {e}"))?;
        let wanted: Vec<PartUrl> = urls.parts.into_iter().filter(|p| batch.contains(&p.number)).collect();
        let results = futures_util::stream::iter(wanted.into_iter().map(|part| {
            let shared = shared.clone();
            let http = registry.http.clone();
            let file = path.to_owned();
            let part_size = state.part_size;
            async move {
                let start = (part.number as u64 - 1) * part_size;
                let len = part_size.min(size - start);
                let body = read_range(&file, start, len).await?;
                // Storage URLs carry their own signature: no registry token on them.
                let resp = http
                    .put(&part.url)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| explain(&format!("part {}", part.number), &e))?;
                if !resp.status().is_success() {
                    return Err(fail(&format!("part {}", part.number), resp).await);
                }
                progress.inc(len);
                let mut s = shared.lock().await;
                s.done_parts.push(part.number);
                save_state(state_file, &s).await
            }
        }));
        use futures_util::StreamExt;
        let outcomes: Vec<Result<(), String>> = results.buffer_unordered(args.jobs.max(1)).collect().await;
        if let Some(err) = outcomes.into_iter().find_map(Result::err) {
            return Err(format!("{err} (run the same command again to resume)"));
        }
    }
    *state = shared.lock().await.clone();
    Ok(state.location.clone())
}

async fn push_chunked(
    registry: &Registry,
    path: &Path,
    state: &mut PushState,
    state_file: &Path,
    size: u64,
    progress: &ProgressBar,
) -> Result<String, String> {
    // A resumed session: the registry says how far it got.
    let status = registry.send(reqwest::Method::GET, &registry.absolute(&state.location), "upload status").await?;
    state.offset = offset_of(&status).unwrap_or(0);
    progress.set_position(state.offset);
    while state.offset < size {
        let len = state.part_size.min(size - state.offset);
        let body = read_range(path, state.offset, len).await?;
        let resp = registry
            .request(reqwest::Method::PATCH, &registry.absolute(&state.location))
            .await?
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", state.offset, state.offset + len - 1))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{} (run the same command again to resume)", explain(&format!("PATCH at {}", state.offset), &e)))?;
        match resp.status().as_u16() {
            202 => {}
            // Out of order: continue from where the registry is.
            416 => {
                state.offset = offset_of(&resp).ok_or("416 without a Range")?;
                progress.set_position(state.offset);
                continue;
            }
            _ => return Err(fail("PATCH", resp).await),
        }
        if let Some(loc) = header(&resp, "location") {
            state.location = registry.absolute(&loc);
        }
        state.offset = offset_of(&resp).unwrap_or(state.offset + len);
        progress.set_position(state.offset);
        save_state(state_file, state).await?;
    }
    Ok(state.location.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("127.0.0.1:9000/a/b", true).unwrap(),
            ("http://127.0.0.1:9000".into(), "a/b".into(), None)
        );
        assert_eq!(
            parse_target("reg.example/a:v1", false).unwrap(),
            ("https://reg.example".into(), "a".into(), Some("v1".into()))
        );
        assert_eq!(
            parse_target("http://h:1/a@sha256:00", false).unwrap(),
            ("http://h:1".into(), "a".into(), Some("sha256:00".into()))
        );
        assert!(parse_target("nohost", false).is_err());
        // Loopback registries get plain HTTP without a flag, as with docker; others keep HTTPS.
        assert_eq!(parse_target("127.0.0.1:5000/a", false).unwrap().0, "http://127.0.0.1:5000");
        assert_eq!(parse_target("127.3.2.1/a", false).unwrap().0, "http://127.3.2.1");
        assert_eq!(parse_target("localhost:5000/a", false).unwrap().0, "http://localhost:5000");
        assert_eq!(parse_target("[::1]:5000/a", false).unwrap().0, "http://[::1]:5000");
        assert_eq!(parse_target("https://127.0.0.1:5000/a", false).unwrap().0, "https://127.0.0.1:5000");
        assert_eq!(parse_target("10.0.0.1:5000/a", false).unwrap().0, "https://10.0.0.1:5000");
        assert_eq!(parse_target("localhost.example/a", false).unwrap().0, "https://localhost.example");
    }
}
