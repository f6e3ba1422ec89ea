//! `berth push PATH REGISTRY/REPO:TAG` of whole images against `berth serve`: an OCI layout
//! (directory, tar, stdin) with a two-platform index and a referrer, a docker archive, a second
//! run that finds everything there, a damaged layout and a truncated archive that fail clearly
//! and leave no tag, and a skopeo round trip.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::*;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

fn berth(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth runs");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        // A writer thread: berth reads stdin while the test waits for it.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    child.wait_with_output().expect("berth finishes")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Pushes with a private state dir (no files under $HOME).
fn push(path: &str, target: &str, state: &Path, stdin: Option<&[u8]>, extra: &[&str]) -> Output {
    let mut args = vec!["push", "--quiet", "--chunk-mib", "1", "--state-dir", state.to_str().unwrap(), path, target];
    args.extend_from_slice(extra);
    berth(&args, stdin)
}

struct Layout {
    index: String,
    platforms: Vec<String>,
    referrer: String,
    /// Every blob (configs, layers, the referrer's) as (digest, bytes).
    blobs: Vec<(String, Vec<u8>)>,
    manifests: Vec<(String, Vec<u8>)>,
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    digest
}

fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// An OCI layout by hand: an index of two platforms (sharing one layer), a referrer (an SBOM
/// whose subject is the index) that only blobs/ holds, and index.json naming the index as `v1`.
fn write_layout(dir: &Path, seed: u8) -> Layout {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let shared = pattern(700_000, seed);
    let mut platforms = Vec::new();
    let mut index_entries = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let own = pattern(300_000 + i * 1000, seed.wrapping_add(50 + i as u8));
        let (d_shared, d_own) = (put_blob(dir, &shared), put_blob(dir, &own));
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [d_shared, d_own] },
        }))
        .unwrap();
        let d_config = put_blob(dir, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", &d_config, config.len()),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar", &d_shared, shared.len()),
                       desc("application/vnd.oci.image.layer.v1.tar", &d_own, own.len())],
        }))
        .unwrap();
        let d_manifest = put_blob(dir, &manifest);
        let mut entry = desc(MANIFEST, &d_manifest, manifest.len());
        entry["platform"] = json!({ "architecture": arch, "os": "linux" });
        index_entries.push(entry);
        platforms.push(d_manifest.clone());
        manifests.push((d_manifest, manifest));
        blobs.push((d_config, config));
        blobs.push((d_own, own));
    }
    blobs.push((sha256(&shared), shared));
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": index_entries })).unwrap();
    let d_index = put_blob(dir, &index);
    // The referrer: an artifact with the empty config, one layer, subject = the index.
    let empty = b"{}".to_vec();
    let sbom = format!("{{\"sbom\":{seed}}}").into_bytes();
    let (d_empty, d_sbom) = (put_blob(dir, &empty), put_blob(dir, &sbom));
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": desc("application/vnd.oci.empty.v1+json", &d_empty, 2),
        "layers": [desc("application/vnd.example.sbom", &d_sbom, sbom.len())],
        "subject": desc(INDEX, &d_index, index.len()),
    }))
    .unwrap();
    let d_referrer = put_blob(dir, &referrer);
    blobs.push((d_empty, empty));
    blobs.push((d_sbom, sbom));
    manifests.push((d_index.clone(), index.clone()));
    manifests.push((d_referrer.clone(), referrer));
    let mut top = desc(INDEX, &d_index, index.len());
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": "v1" });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [top] })).unwrap()).unwrap();
    Layout { index: d_index, platforms, referrer: d_referrer, blobs, manifests }
}

/// A tar of every file under `dir` (paths relative to it), made with the tar crate.
fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap()
}

fn tar_files(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[("Accept", ACCEPT)], b"")
}

fn tag_digest(addr: &str, repo: &str, tag: &str) -> Option<String> {
    let r = request(addr, "HEAD", &format!("/v2/{repo}/manifests/{tag}"), &[("Accept", ACCEPT)], b"");
    (r.status == 200).then(|| r.header("docker-content-digest").unwrap().to_owned())
}

/// Every manifest and blob of the layout is in `repo` with the same bytes, the tag names the
/// index, and the referrers API lists the referrer.
fn assert_all_there(addr: &str, repo: &str, layout: &Layout) {
    for (digest, bytes) in &layout.blobs {
        let r = get(addr, &format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!(r.status, 200, "blob {digest}");
        assert!(r.body == *bytes, "blob {digest} differs");
    }
    for (digest, bytes) in &layout.manifests {
        let r = get(addr, &format!("/v2/{repo}/manifests/{digest}"));
        assert_eq!(r.status, 200, "manifest {digest}: {}", r.text());
        assert!(r.body == *bytes, "manifest {digest} differs");
    }
    assert_eq!(tag_digest(addr, repo, "v1").as_deref(), Some(layout.index.as_str()));
    let referrers = get(addr, &format!("/v2/{repo}/referrers/{}", layout.index));
    assert_eq!(referrers.status, 200, "{}", referrers.text());
    let list: Value = serde_json::from_slice(&referrers.body).unwrap();
    let found: Vec<&str> = list["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(found, [layout.referrer.as_str()], "{}", referrers.text());
}

#[test]
fn layout_dir_pushes_everything_tag_last_and_a_second_run_finds_it_all() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let dir = work.path().join("layout");
    let layout = write_layout(&dir, 1);
    assert_eq!(layout.platforms.len(), 2);
    let state = work.path().join("state");

    let first = push(dir.to_str().unwrap(), &format!("{addr}/lay/app:v1"), &state, None, &[]);
    assert!(first.status.success(), "{}", err(&first));
    assert_eq!(out(&first), layout.index, "the top manifest's digest on stdout");
    // 7 blobs: 2 configs, 3 layers, the empty config and the SBOM.
    assert!(err(&first).contains(&format!("pushed lay/app:v1 {} (7 blobs, 0 already there", layout.index)), "{}", err(&first));
    assert_all_there(&addr, "lay/app", &layout);

    let second = push(dir.to_str().unwrap(), &format!("{addr}/lay/app:v1"), &state, None, &[]);
    assert!(second.status.success(), "{}", err(&second));
    assert!(err(&second).contains("(7 blobs, 7 already there, 0.0 MiB sent"), "{}", err(&second));

    // Without a tag: the layout's ref name (v1) is used; --mount-from mounts instead of uploading.
    let third = push(dir.to_str().unwrap(), &format!("{addr}/lay/copy"), &state, None, &["--mount-from", "lay/app"]);
    assert!(third.status.success(), "{}", err(&third));
    assert!(err(&third).contains("pushed lay/copy:v1") && err(&third).contains("7 mounted"), "{}", err(&third));
    assert_all_there(&addr, "lay/copy", &layout);
}

#[test]
fn layout_tar_from_a_file_and_from_stdin() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let dir = work.path().join("layout");
    let layout = write_layout(&dir, 2);
    let tar = tar_dir(&dir);
    let file = work.path().join("img.tar");
    std::fs::write(&file, &tar).unwrap();
    let state = work.path().join("state");

    let from_file = push(file.to_str().unwrap(), &format!("{addr}/tar/file:v1"), &state, None, &[]);
    assert!(from_file.status.success(), "{}", err(&from_file));
    assert_eq!(out(&from_file), layout.index);
    assert_all_there(&addr, "tar/file", &layout);

    let from_stdin = push("-", &format!("{addr}/tar/stdin:v1"), &state, Some(&tar), &[]);
    assert!(from_stdin.status.success(), "{}", err(&from_stdin));
    assert_eq!(out(&from_stdin), layout.index);
    assert_all_there(&addr, "tar/stdin", &layout);

    // A plain file is still a blob, as before.
    let blob = work.path().join("blob");
    std::fs::write(&blob, b"just bytes").unwrap();
    let plain = push(blob.to_str().unwrap(), &format!("{addr}/tar/file"), &state, None, &[]);
    assert!(plain.status.success(), "{}", err(&plain));
    assert_eq!(out(&plain), sha256(b"just bytes"));
}

/// One image of an archive: its config bytes and its layers' bytes.
type Saved = (Vec<u8>, Vec<Vec<u8>>);

/// `docker save` of two images: old style (`<id>/layer.tar`), a gzip layer, a repeated layer as
/// a symlink. Returns the tar, and per image (config bytes, layer bytes).
fn docker_archive() -> (Vec<u8>, Vec<Saved>) {
    let l1 = tar_files(&[("etc/hello", &pattern(200_000, 9))]);
    let mut l2 = vec![0x1f, 0x8b, 8, 0];
    l2.extend(pattern(150_000, 7)); // gzip by its magic bytes (the registry does not unpack it)
    let l3 = tar_files(&[("bin/other", &pattern(90_000, 3))]);
    let config = |layers: &[&Vec<u8>], arch: &str| {
        serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            // diff_ids of uncompressed layers are their digests; of a gzip one, of its content.
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| if l[0] == 0x1f { sha256(b"unpacked") } else { sha256(l) }).collect::<Vec<_>>() },
        }))
        .unwrap()
    };
    let c1 = config(&[&l1, &l2], "amd64");
    let c2 = config(&[&l1, &l3], "amd64");
    let manifest = serde_json::to_vec(&json!([
        { "Config": format!("{}.json", &sha256(&c1)[7..]), "RepoTags": ["example/app:v1"], "Layers": ["aaa/layer.tar", "bbb/layer.tar"] },
        { "Config": format!("{}.json", &sha256(&c2)[7..]), "RepoTags": ["example/other:v2"], "Layers": ["ccc/layer.tar", "ddd/layer.tar"] },
    ]))
    .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    };
    add(&format!("{}.json", &sha256(&c1)[7..]), &c1);
    add(&format!("{}.json", &sha256(&c2)[7..]), &c2);
    add("aaa/layer.tar", &l1);
    add("bbb/layer.tar", &l2);
    add("ddd/layer.tar", &l3);
    add("manifest.json", &manifest);
    // ccc/layer.tar repeats aaa's: a symlink, as older docker writes it.
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder.append_link(&mut link, "ccc/layer.tar", "../aaa/layer.tar").unwrap();
    let tar = builder.into_inner().unwrap();
    (tar, vec![(c1, vec![l1.clone(), l2]), (c2, vec![l1, l3])])
}

#[test]
fn docker_archive_becomes_an_oci_manifest_of_its_layers() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let (tar, images) = docker_archive();
    let file = work.path().join("saved.tar");
    std::fs::write(&file, &tar).unwrap();
    let state = work.path().join("state");

    // Two images and a tag that names neither: say which there are.
    let ambiguous = push(file.to_str().unwrap(), &format!("{addr}/dock/app:zzz"), &state, None, &[]);
    assert!(!ambiguous.status.success());
    assert!(err(&ambiguous).contains("--ref") && err(&ambiguous).contains("example/other:v2"), "{}", err(&ambiguous));

    for (target, extra, which) in [("dock/app:v1", &[][..], 0), ("dock/other:latest", &["--ref", "example/other:v2"][..], 1)] {
        let pushed = push(file.to_str().unwrap(), &format!("{addr}/{target}"), &state, None, extra);
        assert!(pushed.status.success(), "{}", err(&pushed));
        let (repo, tag) = target.split_once(':').unwrap();
        let digest = out(&pushed);
        assert_eq!(tag_digest(&addr, repo, tag).as_deref(), Some(digest.as_str()));
        let manifest: Value = serde_json::from_slice(&get(&addr, &format!("/v2/{repo}/manifests/{digest}")).body).unwrap();
        let (config, layers) = &images[which];
        assert_eq!(manifest["mediaType"], MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
        assert_eq!(manifest["config"]["digest"], sha256(config));
        let diff_ids: Value = serde_json::from_slice::<Value>(config).unwrap()["rootfs"]["diff_ids"].clone();
        for (i, layer) in layers.iter().enumerate() {
            let d = &manifest["layers"][i];
            assert_eq!(d["digest"], sha256(layer));
            assert_eq!(d["size"], layer.len());
            if layer[0] == 0x1f {
                assert_eq!(d["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
            } else {
                assert_eq!(d["mediaType"], "application/vnd.oci.image.layer.v1.tar");
                assert_eq!(d["digest"], diff_ids[i], "an uncompressed layer's digest is its diff_id");
            }
            assert!(get(&addr, &format!("/v2/{repo}/blobs/{}", sha256(layer))).body == *layer);
        }
    }

    // The same archive on stdin (`docker save img | berth push - …`).
    let piped = push("-", &format!("{addr}/dock/piped:v1"), &state, Some(&tar), &[]);
    assert!(piped.status.success(), "{}", err(&piped));
    assert_eq!(tag_digest(&addr, "dock/piped", "v1").as_deref(), Some(out(&piped).as_str()));
}

#[test]
fn a_damaged_layout_fails_naming_the_blob_and_tags_nothing() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let dir = work.path().join("layout");
    let layout = write_layout(&dir, 3);
    // A layer with its bytes changed (same size).
    let (digest, bytes) = layout.blobs.iter().find(|(_, b)| b.len() > 100_000).unwrap();
    let mut bad = bytes.clone();
    bad[1000] ^= 0xff;
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), &bad).unwrap();
    let state = work.path().join("state");

    let failed = push(dir.to_str().unwrap(), &format!("{addr}/bad/app:v1"), &state, None, &[]);
    assert!(!failed.status.success());
    let e = err(&failed);
    assert!(e.contains(&format!("blob {digest} does not match its descriptor")) && e.contains("nothing was tagged"), "{e}");
    assert_eq!(tag_digest(&addr, "bad/app", "v1"), None, "no tag after a failed push");
    assert_eq!(get(&addr, &format!("/v2/bad/app/blobs/{digest}")).status, 404, "the damaged blob was not uploaded");
}

#[test]
fn a_truncated_archive_fails_clearly() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let (tar, _) = docker_archive();
    let cut = &tar[..tar.len() / 2];
    let file = work.path().join("cut.tar");
    std::fs::write(&file, cut).unwrap();
    let state = work.path().join("state");

    for (path, stdin) in [(file.to_str().unwrap(), None), ("-", Some(cut))] {
        let failed = push(path, &format!("{addr}/cut/app:v1"), &state, stdin, &[]);
        assert!(!failed.status.success());
        assert!(err(&failed).contains("truncated"), "{path}: {}", err(&failed));
        assert_eq!(tag_digest(&addr, "cut/app", "v1"), None);
    }
}

#[test]
fn skopeo_copies_a_pushed_index_back_to_the_same_digests() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        println!("SKIP: skopeo is not installed");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let dir = work.path().join("layout");
    let layout = write_layout(&dir, 4);
    let pushed = push(dir.to_str().unwrap(), &format!("{addr}/sko/app:v1"), &work.path().join("state"), None, &[]);
    assert!(pushed.status.success(), "{}", err(&pushed));

    let back = work.path().join("back");
    let copy = Command::new("skopeo")
        .args(["copy", "--all", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{addr}/sko/app:v1"))
        .arg(format!("oci:{}:v1", back.display()))
        .output()
        .expect("skopeo runs");
    assert!(copy.status.success(), "{}", String::from_utf8_lossy(&copy.stderr));
    let index: Value = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], layout.index);
    for (digest, bytes) in layout.manifests.iter().chain(&layout.blobs).filter(|(d, _)| *d != layout.referrer && !is_sbom(&layout, d)) {
        let copied = std::fs::read(back.join("blobs/sha256").join(&digest[7..])).unwrap_or_default();
        assert!(copied == *bytes, "{digest} differs after the round trip");
    }
}

/// The referrer's own blobs (its empty config, its layer): skopeo copies the image, not its referrers.
fn is_sbom(layout: &Layout, digest: &str) -> bool {
    let referrer = &layout.manifests.iter().find(|(d, _)| *d == layout.referrer).unwrap().1;
    let doc: Value = serde_json::from_slice(referrer).unwrap();
    doc["layers"][0]["digest"] == digest || doc["config"]["digest"] == digest
}

#[test]
fn a_cut_off_layer_upload_resumes_on_the_next_run() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let dir = work.path().join("layout");
    let layout = write_layout(&dir, 5);
    let (digest, bytes) = layout.blobs.iter().max_by_key(|(_, b)| b.len()).unwrap();
    // What a first run that died after 300 kB of this layer leaves: an open session holding
    // those bytes, and berth push's state file for it.
    let started = request(&addr, "POST", "/v2/res/app/blobs/uploads/", &[], b"");
    assert_eq!(started.status, 202);
    let location = started.header("location").unwrap().to_owned();
    let location = if location.starts_with('/') { format!("http://{addr}{location}") } else { location };
    let path = location.trim_start_matches(&format!("http://{addr}")).to_owned();
    let patched = request(&addr, "PATCH", &path, &[("Content-Range", "0-299999"), ("Content-Type", "application/octet-stream")], &bytes[..300_000]);
    assert_eq!(patched.status, 202, "{}", patched.text());
    let state = work.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let key = sha256(format!("http://{addr}\0res/app\0{digest}").as_bytes());
    let saved = json!({ "location": location, "direct": false, "part_size": 1 << 20, "done_parts": [], "offset": 300_000 });
    std::fs::write(state.join(format!("{}.json", &key[7..])), serde_json::to_vec(&saved).unwrap()).unwrap();

    let pushed = push(dir.to_str().unwrap(), &format!("{addr}/res/app:v1"), &state, None, &[]);
    assert!(pushed.status.success(), "{}", err(&pushed));
    assert!(err(&pushed).contains("resuming the upload saved in"), "{}", err(&pushed));
    assert_all_there(&addr, "res/app", &layout);
}

/// The registry goes away in the middle of an image's big layer: the push fails saying how to
/// resume and tags nothing; once the registry is back, the same command resumes the layer where
/// the registry had it and finishes, tag last.
#[test]
fn a_registry_that_goes_away_mid_push_is_resumed_by_the_next_run() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = Server::start(data.path(), &addr);
    // One 48 MiB layer, its config and manifest, as an OCI layout.
    let dir = work.path().join("layout");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let layer = pattern(48 << 20, 77);
    let d_layer = put_blob(&dir, &layer);
    let config = serde_json::to_vec(&json!({ "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [d_layer] } }))
    .unwrap();
    let d_config = put_blob(&dir, &config);
    let manifest = serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &d_config, config.len()),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", &d_layer, layer.len())] }))
    .unwrap();
    let d_manifest = put_blob(&dir, &manifest);
    let mut top = desc(MANIFEST, &d_manifest, manifest.len());
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": "v1" });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [top] })).unwrap()).unwrap();

    let state = work.path().join("state");
    let target = format!("{addr}/gone/app:v1");
    let mut first = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["push", "--quiet", "--jobs", "1", "--chunk-mib", "1", "--state-dir", state.to_str().unwrap()])
        .args([dir.to_str().unwrap(), &target])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the registry has part of the layer (the state file records it), then kill it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let offset_saved = || {
        std::fs::read_dir(&state).into_iter().flatten().flatten().any(|e| {
            let saved: Value = std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            saved["offset"].as_u64().unwrap_or(0) >= 2 << 20
        })
    };
    while !offset_saved() {
        assert!(std::time::Instant::now() < deadline, "the first push never got 2 MiB in");
        assert!(first.try_wait().unwrap().is_none(), "the first push ended before the registry went away");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.kill();
    let failed = first.wait_with_output().unwrap();
    assert!(!failed.status.success(), "the push succeeded without its registry");
    let message = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(message.contains("again"), "the failure does not say to run it again:\n{message}");

    let _server = Server::start(data.path(), &addr);
    assert_eq!(tag_digest(&addr, "gone/app", "v1"), None, "a failed push left a tag");
    let second = push(dir.to_str().unwrap(), &target, &state, None, &[]);
    assert!(second.status.success(), "{}", err(&second));
    assert!(err(&second).contains("resuming the upload saved in"), "{}", err(&second));
    assert_eq!(tag_digest(&addr, "gone/app", "v1").as_deref(), Some(d_manifest.as_str()));
    let head = request(&addr, "HEAD", &format!("/v2/gone/app/blobs/{d_layer}"), &[], b"");
    assert_eq!(head.header("content-length"), Some(layer.len().to_string().as_str()));
}
