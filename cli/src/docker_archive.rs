//! Reads a docker archive (`docker save`: `manifest.json` = `[{Config, RepoTags, Layers}]`)
//! into an OCI image manifest for `berth push`: the config blob as is
//! (`application/vnd.oci.image.config.v1+json`), each layer file as is, typed by its first bytes
//! (gzip, zstd, else an uncompressed tar). An uncompressed layer's digest is its diff_id, which
//! the config lists: a mismatch means a damaged archive.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::push_image::{clean, digest_of, names_match, sha256_hex, tag_of, Blob, Hashes, Image, Manifest};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn layer_type(path: &Path) -> Result<&'static str, String> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = file.read(&mut magic).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    })
}

/// The archive's image that `want` (--ref) or else the target's `tag` names, else the only one.
pub(crate) fn read(dir: &Path, want: Option<&str>, tag: Option<&str>, hashes: &Hashes) -> Result<Image, String> {
    let list: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?)
        .map_err(|e| format!("manifest.json is not JSON: {e}"))?;
    let images = list.as_array().ok_or("manifest.json is not a list of images")?;
    let tags_of = |img: &Value| -> Vec<String> {
        img["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)).collect()
    };
    let listing = || {
        images
            .iter()
            .map(|i| {
                let tags = tags_of(i);
                if tags.is_empty() { format!("untagged {}", i["Config"].as_str().unwrap_or("?")) } else { tags.join(" ") }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let matching = |name: &str| -> Vec<&Value> { images.iter().filter(|i| tags_of(i).iter().any(|t| names_match(t, name))).collect() };
    let image: &Value = match (want, images.as_slice()) {
        (_, []) => return Err("manifest.json lists no image".into()),
        (Some(want), _) => match matching(want).as_slice() {
            [one] => one,
            [] => return Err(format!("no image in the archive is tagged {want:?}; it holds: {}", listing())),
            _ => return Err(format!("several images in the archive match {want:?}: {}", listing())),
        },
        (None, [one]) => one,
        (None, many) => match tag.map(matching).as_deref() {
            Some([one]) => one,
            _ => return Err(format!("the archive holds {} images; choose one with --ref NAME: {}", many.len(), listing())),
        },
    };
    let member = |field: &Value, what: &str| -> Result<std::path::PathBuf, String> {
        let name = field.as_str().ok_or_else(|| format!("manifest.json: {what} is missing"))?;
        let rel = clean(Path::new(name)).ok_or_else(|| format!("manifest.json: {what} {name:?} points outside the archive"))?;
        let path = dir.join(&rel);
        if !path.is_file() {
            return Err(format!("{what} {name} named by manifest.json is not in the archive (a truncated or damaged archive?)"));
        }
        Ok(path)
    };
    let config_path = member(&image["Config"], "config")?;
    let config_bytes = std::fs::read(&config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| format!("the image config is not JSON: {e}"))?;
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let config_digest = sha256_hex(&config_bytes);
    let mut blobs = vec![Blob { digest: config_digest.clone(), size: config_bytes.len() as u64, path: config_path, verified: true }];
    let mut layers = Vec::new();
    let names = image["Layers"].as_array().ok_or("manifest.json: the image has no Layers")?;
    if !diff_ids.is_empty() && diff_ids.len() != names.len() {
        return Err(format!("the config lists {} layers (rootfs.diff_ids), manifest.json {}: a damaged archive", diff_ids.len(), names.len()));
    }
    for (i, name) in names.iter().enumerate() {
        let path = member(name, "layer")?;
        let (digest, size) = digest_of(&path, dir, hashes)?;
        let media_type = layer_type(&path)?;
        if media_type.ends_with(".tar") {
            if let Some(diff_id) = diff_ids.get(i) {
                if *diff_id != digest {
                    return Err(format!(
                        "layer {} has digest {digest} but the config's diff_id is {diff_id}: a damaged archive",
                        name.as_str().unwrap_or("?")
                    ));
                }
            }
        }
        layers.push(json!({ "mediaType": media_type, "digest": digest, "size": size }));
        if !blobs.iter().any(|b| b.digest == digest) {
            blobs.push(Blob { digest, size, path, verified: true });
        }
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let only_tag = match tags_of(image).as_slice() {
        [one] => tag_of(one),
        _ => None,
    };
    Ok(Image {
        blobs,
        manifests: vec![Manifest { digest: sha256_hex(&bytes), media_type: MANIFEST_TYPE.into(), bytes }],
        referrers: Vec::new(),
        tag: only_tag,
    })
}
