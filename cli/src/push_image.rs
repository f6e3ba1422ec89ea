//! `berth push PATH REGISTRY/REPO:TAG` of a whole image: an OCI image layout (directory or tar,
//! as buildx, skopeo, podman and umoci write it), a docker archive (`docker save`), or `-`, a
//! tar of either on stdin.
//!
//! The input is first read into a plan (image_layout.rs, docker_archive.rs): the blobs to upload,
//! each a file with the digest and size its descriptor names, and the manifests in the order they
//! must be PUT. Then, so that a failed push never leaves a tag pointing at a partial image:
//! 1. blobs (configs and layers), several at once: HEAD, skipped if there; mounted from
//!    `--mount-from` if given; else verified against their descriptor and uploaded with the
//!    resumable blob push (push.rs), so a second run resumes them;
//! 2. child manifests (an index's platforms) by digest, then the top manifest by digest, then the
//!    referrers found in the layout (after their subject);
//! 3. the tag, last.
//!
//! A tar input is spooled into a temp dir first (a stream, bounded memory), hashing every member
//! on the way, so every blob is a file the blob push can read by offset and resume.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use indicatif::MultiProgress;
use sha2::{Digest as _, Sha256};

use crate::push::{self, BlobOpts};
use crate::upstream::{fail, header, Registry};

#[derive(clap::Args)]
pub struct ImageArgs {
    /// For an image push: which image of a layout or archive holding several, by its
    /// `org.opencontainers.image.ref.name` (layout) or a RepoTags entry (docker archive).
    #[arg(long = "ref")]
    pub(crate) ref_name: Option<String>,
    /// For an image push: mount blobs the registry already holds in this repository (same
    /// registry) instead of uploading them.
    #[arg(long)]
    pub(crate) mount_from: Option<String>,
}

/// What PATH turned out to be, when it is an image rather than a blob.
pub(crate) enum Input {
    /// A directory: an OCI layout, or an unpacked docker archive.
    Dir(PathBuf),
    /// A tar of an OCI layout or of a docker archive.
    Tar(PathBuf),
    /// `-`: such a tar on stdin.
    Stdin,
}

/// A blob to push: a file holding exactly the bytes of `digest`.
pub(crate) struct Blob {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
    /// The digest was computed from this file by the reader (docker archive), so it needs no
    /// second look before the upload.
    pub verified: bool,
}

/// A manifest (or index) to PUT, its bytes exactly as in the input.
pub(crate) struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// What to push, in order.
pub(crate) struct Image {
    /// Deduplicated by digest.
    pub blobs: Vec<Blob>,
    /// Children before parents; the last one is the top (the one tagged).
    pub manifests: Vec<Manifest>,
    /// Manifests whose subject is one of `manifests` (or another referrer), each after its subject.
    pub referrers: Vec<Manifest>,
    /// The tag the input gives the image (annotation or RepoTags), used when the target has none.
    pub tag: Option<String>,
}

/// Digest and size of files already hashed while spooling a tar (so they are read once).
pub(crate) type Hashes = HashMap<PathBuf, (String, u64)>;

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether PATH is an image (and which kind), or `None` for the old behaviour: a blob.
/// `tagged`: the target has a tag or digest, which a blob push refuses anyway, so a tar is read
/// as an image even when its names could not be listed (a truncated archive says so then).
pub(crate) fn detect(path: &Path, tagged: bool) -> Result<Option<Input>, String> {
    if path.as_os_str() == "-" {
        return Ok(Some(Input::Stdin));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        if layout_kind(path).is_none() {
            return Err(format!(
                "{} is a directory but neither an OCI image layout (oci-layout and index.json) nor a docker archive (manifest.json)",
                path.display()
            ));
        }
        return Ok(Some(Input::Dir(path.to_owned())));
    }
    // A tar whose top level holds index.json or manifest.json is an image; any other file
    // (a layer tar too) is pushed as a blob, as before.
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut head = [0u8; 512];
    if file.read_exact(&mut head).is_err() || !is_tar_header(&head) {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let as_image = if tagged { Some(Input::Tar(path.to_owned())) } else { None };
    let Ok(entries) = archive.entries_with_seek() else { return Ok(as_image) };
    for entry in entries {
        let Ok(entry) = entry else { break };
        let Ok(name) = entry.path() else { continue };
        if let Some(name) = clean(&name) {
            if name == Path::new("index.json") || name == Path::new("manifest.json") {
                return Ok(Some(Input::Tar(path.to_owned())));
            }
        }
    }
    Ok(as_image)
}

/// ustar (POSIX, pax) or GNU magic, and a checksum that adds up.
fn is_tar_header(block: &[u8; 512]) -> bool {
    if &block[257..262] != b"ustar" {
        return false;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(sum) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8) else {
        return false;
    };
    let actual: u32 = block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    sum == actual
}

enum Kind {
    Layout,
    DockerArchive,
}

/// An OCI layout wins when both are there (docker 25+ writes both).
fn layout_kind(dir: &Path) -> Option<Kind> {
    if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
        Some(Kind::Layout)
    } else if dir.join("manifest.json").is_file() {
        Some(Kind::DockerArchive)
    } else {
        None
    }
}

/// A path inside an archive, relative and without `.` or `..`; `None` if it would leave it.
pub(crate) fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Writes through to a file while hashing.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Unpacks the regular files of a tar stream into `dst`, hashing each. Links (older `docker
/// save` links repeated layers) become hard links to the file they name, only when that file is
/// inside the archive: nothing outside `dst` is ever read or written.
pub(crate) fn spool(reader: impl Read, dst: &Path, name: &str) -> Result<Hashes, String> {
    let truncated = |what: &str| {
        format!("{name}: the tar is truncated or damaged ({what}); was the download or `docker save` interrupted?")
    };
    let mut hashes = Hashes::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| truncated(&e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| truncated(&e.to_string()))?;
        let raw = entry.path().map_err(|e| truncated(&e.to_string()))?.into_owned();
        let Some(path) = clean(&raw) else { continue };
        if path.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_file() || kind.is_contiguous() {
            let out = dst.join(&path);
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let file = std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let mut writer = HashingWriter { inner: std::io::BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new() };
            let expected = entry.size();
            let copied = std::io::copy(&mut entry, &mut writer).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    truncated(&format!("it ends inside {}", path.display()))
                } else {
                    format!("{name}: {}: {e}", path.display())
                }
            })?;
            if copied != expected {
                return Err(truncated(&format!("it ends inside {} after {copied} of {expected} bytes", path.display())));
            }
            writer.flush().map_err(|e| format!("{}: {e}", out.display()))?;
            hashes.insert(path, (format!("sha256:{}", hex::encode(writer.hasher.finalize())), copied));
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Ok(Some(target)) = entry.link_name() else { continue };
            // A symlink is relative to its own directory; a hard link names a path in the archive.
            let joined = if kind.is_symlink() { path.parent().unwrap_or(Path::new("")).join(&target) } else { target.into_owned() };
            if let Some(target) = clean(&joined) {
                links.push((path, target));
            }
        }
    }
    // Links to links: resolve until nothing changes.
    loop {
        let before = links.len();
        links.retain(|(path, target)| {
            let Some(found) = hashes.get(target).cloned() else { return true };
            let (from, to) = (dst.join(target), dst.join(path));
            if let Some(dir) = to.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::remove_file(&to);
            if std::fs::hard_link(&from, &to).is_err() && std::fs::copy(&from, &to).is_err() {
                return true;
            }
            hashes.insert(path.clone(), found);
            false
        });
        if links.is_empty() || links.len() == before {
            break;
        }
    }
    Ok(hashes)
}

/// The sha256 and size of a file (reads it).
fn hash_file(path: &Path) -> Result<(String, u64), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = HashingWriter { inner: std::io::sink(), hasher: Sha256::new() };
    let size = std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((format!("sha256:{}", hex::encode(hasher.hasher.finalize())), size))
}

/// A file's digest and size: from the spool's record if it hashed it, else read now.
pub(crate) fn digest_of(path: &Path, root: &Path, hashes: &Hashes) -> Result<(String, u64), String> {
    if let Some(known) = path.strip_prefix(root).ok().and_then(|rel| hashes.get(rel)) {
        return Ok(known.clone());
    }
    hash_file(path)
}

/// The tag part of a reference-like name: `v1` of `v1`, `reg/a/b:v1`, `a:v1`; none of `reg:5000/a`.
pub(crate) fn tag_of(name: &str) -> Option<String> {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => Some(tag.to_owned()),
        Some(_) => None,
        None if name.contains('/') => None,
        None => Some(name.to_owned()).filter(|n| !n.is_empty()),
    }
}

/// Whether `want` (from --ref or the target's tag) names `name` (an annotation, a RepoTag).
pub(crate) fn names_match(name: &str, want: &str) -> bool {
    name == want || tag_of(name).as_deref() == Some(want) || short_name(name) == want
}

/// A fully qualified name (what podman and docker write: `HOST[:PORT]/library/foo:tag`) as
/// people type it: without the registry host, and without the `library/` of official images.
fn short_name(name: &str) -> &str {
    let rest = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => name,
    };
    rest.strip_prefix("library/").unwrap_or(rest)
}

/// Counts for the summary line.
#[derive(Default)]
struct Tally {
    present: usize,
    mounted: usize,
    sent_bytes: u64,
}

enum BlobOutcome {
    Present,
    Mounted,
    Sent(u64),
}

pub(crate) async fn run(
    registry: &Registry,
    input: Input,
    reference: Option<String>,
    args: &ImageArgs,
    opts: &BlobOpts,
) -> Result<(), String> {
    let started = Instant::now();
    // Spool a tar to a temp dir (removed when this returns, whatever happens).
    let (spooled, dir, hashes) = match input {
        Input::Dir(dir) => (None, dir, Hashes::new()),
        Input::Tar(path) => {
            let tmp = temp_dir()?;
            let dst = tmp.path().to_owned();
            let hashes = tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                spool(std::io::BufReader::with_capacity(1 << 20, file), &dst, &path.display().to_string())
            })
            .await
            .map_err(|e| e.to_string())??;
            let dir = tmp.path().to_owned();
            (Some(tmp), dir, hashes)
        }
        Input::Stdin => {
            let tmp = temp_dir()?;
            let dst = tmp.path().to_owned();
            let hashes = tokio::task::spawn_blocking(move || spool(std::io::stdin().lock(), &dst, "stdin"))
                .await
                .map_err(|e| e.to_string())??;
            let dir = tmp.path().to_owned();
            (Some(tmp), dir, hashes)
        }
    };
    let what = if spooled.is_some() { "the tar" } else { "the directory" };
    let kind = layout_kind(&dir).ok_or_else(|| {
        format!("{what} is neither an OCI image layout (oci-layout and index.json) nor a docker archive (manifest.json)")
    })?;
    let (target_tag, target_digest) = match reference {
        Some(r) if r.contains(':') => (None, Some(r)),
        Some(r) => (Some(r), None),
        None => (None, None),
    };
    let want = args.ref_name.clone();
    let hashes = std::sync::Arc::new(hashes);
    let image = {
        let (dir, hashes, tag) = (dir.clone(), hashes.clone(), target_tag.clone());
        tokio::task::spawn_blocking(move || match kind {
            Kind::Layout => crate::image_layout::read(&dir, want.as_deref(), tag.as_deref(), &hashes),
            Kind::DockerArchive => crate::docker_archive::read(&dir, want.as_deref(), tag.as_deref(), &hashes),
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let top = image.manifests.last().ok_or("the input holds no manifest")?;
    if let Some(d) = &target_digest {
        if d != &top.digest {
            return Err(format!("the image's manifest is {}, not {d}", top.digest));
        }
    }
    let tag = match (&target_tag, &target_digest) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(image.tag.clone().ok_or(
            "no tag given and the input names none: push to REGISTRY/REPO:TAG",
        )?),
    };

    // 1. Blobs.
    let multi = MultiProgress::new();
    let tally = std::sync::Mutex::new(Tally::default());
    let results: Vec<Result<(), String>> = futures_util::stream::iter(image.blobs.iter().map(|blob| {
        let (multi, tally, dir, hashes) = (&multi, &tally, &dir, &hashes);
        async move {
            let outcome = push_one(registry, blob, dir, hashes, args, opts, multi).await?;
            let mut t = tally.lock().map_err(|_| "poisoned".to_owned())?;
            match outcome {
                BlobOutcome::Present => t.present += 1,
                BlobOutcome::Mounted => t.mounted += 1,
                BlobOutcome::Sent(n) => t.sent_bytes += n,
            }
            Ok(())
        }
    }))
    .buffer_unordered(opts.jobs.max(1))
    .collect()
    .await;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !errors.is_empty() {
        return Err(format!("{} (nothing was tagged)", errors.join("; ")));
    }

    // 2. Manifests by digest: children, the top, then referrers (after their subjects).
    let Some((top, children)) = image.manifests.split_last() else {
        return Err("the image has no manifest to push (nothing was tagged)".into());
    };
    for m in children.iter().chain(std::iter::once(top)).chain(&image.referrers) {
        let got = push::put_manifest(registry, m.bytes.clone(), &m.media_type, &m.digest)
            .await
            .map_err(|e| format!("{e} (manifest {}; nothing was tagged)", m.digest))?;
        if got != m.digest {
            return Err(format!("the registry stored manifest {} as {got} (nothing was tagged)", m.digest));
        }
    }
    // 3. The tag, last.
    if let Some(tag) = &tag {
        push::put_manifest(registry, top.bytes.clone(), &top.media_type, tag).await?;
    }
    let t = tally.into_inner().map_err(|_| "poisoned".to_owned())?;
    let mounted = if t.mounted > 0 { format!(", {} mounted", t.mounted) } else { String::new() };
    let name = match &tag {
        Some(tag) => format!("{}:{tag}", registry.repo),
        None => registry.repo.clone(),
    };
    eprintln!(
        "pushed {name} {} ({} blobs, {} already there{mounted}, {:.1} MiB sent in {:.1}s)",
        top.digest,
        image.blobs.len(),
        t.present,
        t.sent_bytes as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    println!("{}", top.digest);
    drop(spooled);
    Ok(())
}

/// The spool directory: under TMPDIR (big images need room there).
fn temp_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("berth-push-")
        .tempdir()
        .map_err(|e| format!("a temp dir for the tar (set TMPDIR to a disk with room): {e}"))
}

async fn push_one(
    registry: &Registry,
    blob: &Blob,
    root: &Path,
    hashes: &std::sync::Arc<Hashes>,
    args: &ImageArgs,
    opts: &BlobOpts,
    multi: &MultiProgress,
) -> Result<BlobOutcome, String> {
    if push::blob_exists(registry, &blob.digest).await? {
        return Ok(BlobOutcome::Present);
    }
    if let Some(from) = &args.mount_from {
        if mount(registry, &blob.digest, from).await? {
            return Ok(BlobOutcome::Mounted);
        }
    }
    if !blob.verified {
        let (path, root, hashes) = (blob.path.clone(), root.to_owned(), hashes.clone());
        let (digest, size) =
            tokio::task::spawn_blocking(move || digest_of(&path, &root, &hashes)).await.map_err(|e| e.to_string())??;
        if digest != blob.digest || size != blob.size {
            return Err(format!(
                "blob {} does not match its descriptor: the file holds {size} bytes with digest {digest}, the descriptor says {} bytes (a damaged layout or archive)",
                blob.digest, blob.size
            ));
        }
    }
    let label = blob.digest.trim_start_matches("sha256:").chars().take(12).collect::<String>();
    let bar = push::bar(opts.quiet, blob.size, &label);
    let bar = if opts.quiet { bar } else { multi.add(bar) };
    push::push_blob_file(registry, &blob.path, &blob.digest, blob.size, opts, &bar)
        .await
        .map_err(|e| format!("blob {}: {e}", blob.digest))?;
    bar.finish_and_clear();
    Ok(BlobOutcome::Sent(blob.size))
}

/// Cross-repository mount; `false` when the registry opened an upload instead (then cancelled).
async fn mount(registry: &Registry, digest: &str, from: &str) -> Result<bool, String> {
    let url = format!("{}?mount={digest}&from={from}", registry.url("blobs/uploads/"));
    let resp = registry.send(reqwest::Method::POST, &url, "mounting a blob").await?;
    match resp.status().as_u16() {
        201 => Ok(true),
        202 => {
            // Not mounted: the registry opened a session we do not use; do not leave it open.
            if let Some(location) = header(&resp, "location") {
                let url = registry.absolute(&location);
                if let Ok(req) = registry.request(reqwest::Method::DELETE, &url).await {
                    let _ = req.send().await;
                }
            }
            Ok(false)
        }
        _ => Err(fail("mounting a blob", resp).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_names() {
        assert_eq!(tag_of("v1").as_deref(), Some("v1"));
        assert_eq!(tag_of("registry.example/library/foo:latest").as_deref(), Some("latest"));
        assert_eq!(tag_of("reg:5000/a").as_deref(), None);
        assert_eq!(tag_of("a:v2").as_deref(), Some("v2"));
        assert!(names_match("registry.example/library/foo:latest", "latest"));
        assert!(names_match("registry.example/library/foo:latest", "foo:latest"));
        assert!(names_match("localhost:5000/team/app:1", "team/app:1"));
        assert!(names_match("localhost/app:1", "app:1"));
        assert!(!names_match("team/app:1", "app:1"), "a first path segment without . or : is no host");
        assert!(!names_match("foo:v1", "v2"));
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(clean(Path::new("./blobs/sha256/ab")), Some(PathBuf::from("blobs/sha256/ab")));
        assert_eq!(clean(Path::new("a/../b")), Some(PathBuf::from("b")));
        assert_eq!(clean(Path::new("../etc/passwd")), None);
        assert_eq!(clean(Path::new("/etc/passwd")), None);
    }
}
