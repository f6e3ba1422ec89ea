//! Reads an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) into what
//! `berth push` uploads: the image index.json names (chosen by `--ref`, else the only one), all
//! it reaches (an index's platforms, their configs and layers), and the referrers the layout
//! holds (manifests whose `subject` is one of those).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::push_image::{names_match, sha256_hex, tag_of, Blob, Hashes, Image, Manifest};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Manifests are small; anything bigger in blobs/ is a layer, not worth reading as JSON.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

struct Walker<'a> {
    dir: &'a Path,
    blobs: Vec<Blob>,
    seen_blobs: HashSet<String>,
    manifests: Vec<Manifest>,
    seen_manifests: HashSet<String>,
}

/// `blobs/sha256/<hex>` for a digest, refusing anything that is not a sha256 digest (a digest
/// must never name a path outside the layout).
fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or_else(|| format!("unsupported or malformed digest {digest:?} (berth push handles sha256)"))?;
    Ok(dir.join("blobs/sha256").join(hex))
}

fn descriptor(v: &Value, what: &str) -> Result<(String, u64), String> {
    let digest = v["digest"].as_str().ok_or_else(|| format!("{what}: a descriptor without a digest"))?;
    let size = v["size"].as_u64().ok_or_else(|| format!("{what}: descriptor {digest} has no size"))?;
    Ok((digest.to_owned(), size))
}

fn is_index(media_type: &str, doc: &Value) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
        || (media_type.is_empty() && doc.get("manifests").is_some())
}

impl Walker<'_> {
    /// A manifest's bytes, checked against its descriptor.
    fn read_manifest(&self, digest: &str, size: u64) -> Result<Vec<u8>, String> {
        let path = blob_path(self.dir, digest)?;
        if size > MAX_MANIFEST {
            return Err(format!("manifest {digest} is {size} bytes; more than a manifest can be"));
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("manifest {digest} is not in the layout ({}: {e})", path.display()))?;
        let actual = sha256_hex(&bytes);
        if actual != digest || bytes.len() as u64 != size {
            return Err(format!(
                "blob {digest} does not match its descriptor: it holds {} bytes with digest {actual}, the descriptor says {size} bytes (a damaged layout)",
                bytes.len()
            ));
        }
        Ok(bytes)
    }

    fn add_blob(&mut self, desc: &Value, owner: &str) -> Result<(), String> {
        let (digest, size) = descriptor(desc, owner)?;
        if !self.seen_blobs.insert(digest.clone()) {
            return Ok(());
        }
        let path = blob_path(self.dir, &digest)?;
        if !path.is_file() {
            // Non-distributable layers live elsewhere (their `urls`); the registry does not need them.
            if desc["urls"].as_array().is_some_and(|u| !u.is_empty()) {
                return Ok(());
            }
            return Err(format!("blob {digest} named by {owner} is not in the layout"));
        }
        self.blobs.push(Blob { digest, size, path, verified: false });
        Ok(())
    }

    /// Everything a manifest reaches, children first, then the manifest itself.
    fn walk(&mut self, digest: &str, size: u64, desc_type: Option<&str>) -> Result<(), String> {
        if self.seen_manifests.contains(digest) {
            return Ok(());
        }
        let bytes = self.read_manifest(digest, size)?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("manifest {digest} is not JSON: {e}"))?;
        let media_type = doc["mediaType"].as_str().or(desc_type).unwrap_or_default().to_owned();
        if is_index(&media_type, &doc) {
            for child in doc["manifests"].as_array().into_iter().flatten() {
                let (d, s) = descriptor(child, digest)?;
                self.walk(&d, s, child["mediaType"].as_str())
                    .map_err(|e| if e.contains("not in the layout") { format!("{e} (a platform of index {digest}; copy all platforms, e.g. skopeo copy --all)") } else { e })?;
            }
        } else {
            if let Some(config) = doc.get("config") {
                self.add_blob(config, digest)?;
            }
            for layer in doc["layers"].as_array().into_iter().flatten() {
                self.add_blob(layer, digest)?;
            }
        }
        let media_type = if media_type.is_empty() {
            if is_index(&media_type, &doc) { "application/vnd.oci.image.index.v1+json" } else { "application/vnd.oci.image.manifest.v1+json" }.to_owned()
        } else {
            media_type
        };
        self.seen_manifests.insert(digest.to_owned());
        self.manifests.push(Manifest { digest: digest.to_owned(), media_type, bytes });
        Ok(())
    }
}

/// Manifests in blobs/ (small JSON files with a `subject`) and the digest of their subject.
fn manifests_with_subject(dir: &Path) -> Vec<(String, u64, String)> {
    let Ok(entries) = std::fs::read_dir(dir.join("blobs/sha256")) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.len() > MAX_MANIFEST || meta.len() < 2 {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else { continue };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            continue;
        }
        let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else { continue };
        if let Some(subject) = doc["subject"]["digest"].as_str() {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            found.push((digest, meta.len(), subject.to_owned()));
        }
    }
    found.sort();
    found
}

/// The image to push from the layout at `dir`: the index.json entry `want` (--ref) names, else
/// the only one, else the one whose ref name is the target's `tag`.
pub(crate) fn read(dir: &Path, want: Option<&str>, tag: Option<&str>, _hashes: &Hashes) -> Result<Image, String> {
    let index_path = dir.join("index.json");
    let index: Value = serde_json::from_slice(&std::fs::read(&index_path).map_err(|e| format!("{}: {e}", index_path.display()))?)
        .map_err(|e| format!("index.json is not JSON: {e}"))?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut walker = Walker { dir, blobs: Vec::new(), seen_blobs: HashSet::new(), manifests: Vec::new(), seen_manifests: HashSet::new() };
    let name_of = |e: &Value| e["annotations"][REF_NAME].as_str().map(str::to_owned);
    // Entries that are referrers (a signature, an SBOM) go along with their subject; they are
    // not images to choose from.
    let candidates = manifests_with_subject(dir);
    let referrer_digests: HashSet<&str> = candidates.iter().map(|(d, _, _)| d.as_str()).collect();
    let images: Vec<&Value> = entries.iter().filter(|e| !e["digest"].as_str().is_some_and(|d| referrer_digests.contains(d))).collect();
    let listing = || {
        images
            .iter()
            .map(|e| format!("{} ({})", name_of(e).unwrap_or_else(|| "no ref name".into()), e["digest"].as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen: &Value = if let Some(want) = want {
        let matching: Vec<&&Value> = images.iter().filter(|e| name_of(e).is_some_and(|n| names_match(&n, want))).collect();
        match matching.as_slice() {
            [one] => one,
            [] => return Err(format!("no image in the layout has ref name {want:?}; it holds: {}", listing())),
            [first, rest @ ..] if rest.iter().all(|e| e["digest"] == first["digest"]) => first,
            _ => return Err(format!("several images in the layout have ref name {want:?}: {}", listing())),
        }
    } else {
        match images.as_slice() {
            [] => return Err("the layout's index.json names no image".into()),
            [one] => one,
            many => {
                let by_tag: Vec<&&Value> = match tag {
                    Some(tag) => many.iter().filter(|e| name_of(e).is_some_and(|n| names_match(&n, tag))).collect(),
                    None => Vec::new(),
                };
                match by_tag.as_slice() {
                    [one] => one,
                    _ => return Err(format!("the layout holds {} images; choose one with --ref NAME: {}", many.len(), listing())),
                }
            }
        }
    };
    let (digest, size) = descriptor(chosen, "index.json")?;
    walker.walk(&digest, size, chosen["mediaType"].as_str())?;
    let top = walker.manifests.len();
    // Referrers of anything pushed (and referrers of those), each after its subject.
    loop {
        let before = walker.manifests.len();
        for (d, s, subject) in &candidates {
            if walker.seen_manifests.contains(subject) && !walker.seen_manifests.contains(d) {
                walker.walk(d, *s, None)?;
            }
        }
        if walker.manifests.len() == before {
            break;
        }
    }
    let referrers = walker.manifests.split_off(top);
    Ok(Image {
        blobs: walker.blobs,
        manifests: walker.manifests,
        referrers,
        tag: name_of(chosen).and_then(|n| tag_of(&n)),
    })
}
