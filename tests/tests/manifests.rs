//! end-3 (GET/HEAD manifest), end-7 (PUT manifest), end-9 (DELETE manifest): the four manifest
//! types, validation, byte-exact storage, Accept negotiation, caching headers.

mod common;

use common::*;
use serde_json::{json, Value};

#[track_caller]
fn assert_manifest_created(r: &Resp, repo: &str, bytes: &[u8]) -> String {
    assert_status(r, 201);
    let d = sha256(bytes);
    assert_eq!(
        r.location(),
        format!("/v2/{repo}/manifests/{d}"),
        "{}",
        r.describe()
    );
    assert_header(r, "docker-content-digest", &d);
    d
}

#[track_caller]
fn assert_manifest_headers(r: &Resp, media_type: &str, bytes: &[u8], by_tag: bool) {
    assert_status(r, 200);
    let d = sha256(bytes);
    assert_header(r, "content-type", media_type);
    assert_header(r, "content-length", &bytes.len().to_string());
    assert_header(r, "docker-content-digest", &d);
    assert_header(r, "etag", &format!("\"{d}\""));
    if by_tag {
        assert_header(r, "cache-control", "no-cache");
        let vary = r.header("vary").unwrap_or_default().to_ascii_lowercase();
        assert!(
            vary.split(',').any(|v| v.trim() == "accept"),
            "by-tag response without Vary: Accept:\n{}",
            r.describe()
        );
    } else {
        assert_header(r, "cache-control", IMMUTABLE);
    }
}

/// GET and HEAD by tag and by digest: headers, and the exact bytes.
async fn assert_manifest(repo: &str, tag: Option<&str>, media_type: &str, bytes: &[u8]) {
    let d = sha256(bytes);
    let mut refs = vec![(d.clone(), false)];
    if let Some(t) = tag {
        refs.push((t.to_string(), true));
    }
    for (reference, by_tag) in refs {
        let url = format!("/v2/{repo}/manifests/{reference}");
        let g = get(url.as_str()).header("accept", media_type).send().await;
        assert_manifest_headers(&g, media_type, bytes, by_tag);
        assert!(
            g.body == bytes,
            "GET {url}: bytes differ from those pushed:\n{}",
            g.describe()
        );
        let h = head(url.as_str()).header("accept", media_type).send().await;
        assert_manifest_headers(&h, media_type, bytes, by_tag);
        assert!(h.body.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// The four types

#[tokio::test]
async fn oci_image_manifest_by_tag() {
    let repo = repo("man-oci");
    let config = config_bytes();
    let l1 = random_bytes(100);
    let l2 = random_bytes(200);
    push_blob(&repo, &config).await;
    push_blob(&repo, &l1).await;
    push_blob(&repo, &l2).await;
    let mut m = image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &l1), descriptor(OCI_LAYER, &l2)],
    );
    m["annotations"] = json!({ "org.opencontainers.image.title": "test" });
    let bytes = to_bytes(&m);
    let r = put_manifest(&repo, "v1", OCI_MANIFEST, &bytes).await;
    assert_manifest_created(&r, &repo, &bytes);
    assert_api_version(&r);
    assert_eq!(
        r.header("oci-subject"),
        None,
        "OCI-Subject without a subject:\n{}",
        r.describe()
    );
    assert_manifest(&repo, Some("v1"), OCI_MANIFEST, &bytes).await;
}

#[tokio::test]
async fn oci_image_manifest_by_digest() {
    let repo = repo("man-oci-digest");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![]));
    let d = sha256(&bytes);
    let r = put_manifest(&repo, &d, OCI_MANIFEST, &bytes).await;
    assert_manifest_created(&r, &repo, &bytes);
    assert_manifest(&repo, None, OCI_MANIFEST, &bytes).await;
    // Pushing the same bytes again is fine.
    assert_manifest_created(
        &put_manifest(&repo, &d, OCI_MANIFEST, &bytes).await,
        &repo,
        &bytes,
    );
}

#[tokio::test]
async fn oci_index() {
    let repo = repo("man-oci-index");
    let a = push_image(&repo, "").await;
    let b = push_image(&repo, "").await;
    let bytes = to_bytes(&index_of(
        OCI_INDEX,
        &[(OCI_MANIFEST, &a), (OCI_MANIFEST, &b)],
    ));
    push_and_check(&repo, "multi", OCI_INDEX, &bytes).await;
    // An index of an index.
    let idx = Pushed {
        digest: sha256(&bytes),
        bytes: bytes.clone(),
    };
    let outer = to_bytes(&index_of(OCI_INDEX, &[(OCI_INDEX, &idx)]));
    assert_manifest_created(
        &put_manifest(&repo, "outer", OCI_INDEX, &outer).await,
        &repo,
        &outer,
    );
}

#[tokio::test]
async fn docker_schema2_manifest() {
    let repo = repo("man-docker");
    let config = config_bytes();
    let layer = random_bytes(500);
    push_blob(&repo, &config).await;
    push_blob(&repo, &layer).await;
    let bytes = to_bytes(&docker_manifest(
        descriptor(DOCKER_CONFIG, &config),
        vec![descriptor(DOCKER_LAYER, &layer)],
    ));
    push_and_check(&repo, "latest", DOCKER_MANIFEST, &bytes).await;
}

#[tokio::test]
async fn docker_manifest_list() {
    let repo = repo("man-docker-list");
    let a = push_docker_image(&repo, "").await;
    let b = push_docker_image(&repo, "").await;
    let bytes = to_bytes(&index_of(
        DOCKER_LIST,
        &[(DOCKER_MANIFEST, &a), (DOCKER_MANIFEST, &b)],
    ));
    push_and_check(&repo, "multi", DOCKER_LIST, &bytes).await;
}

#[tokio::test]
async fn foreign_layers_with_urls_are_not_checked() {
    let repo = repo("man-foreign");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let foreign = random_bytes(10);
    let mut layer = descriptor(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        &foreign,
    );
    layer["urls"] = json!(["https://example.invalid/layer.tar.gz"]);
    let bytes = to_bytes(&docker_manifest(
        descriptor(DOCKER_CONFIG, &config),
        vec![layer],
    ));
    assert_manifest_created(
        &put_manifest(&repo, "foreign", DOCKER_MANIFEST, &bytes).await,
        &repo,
        &bytes,
    );

    let mut layer = descriptor(
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        &foreign,
    );
    layer["urls"] = json!(["https://example.invalid/layer.tar.gz"]);
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = to_bytes(&image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![layer],
    ));
    assert_manifest_created(
        &put_manifest(&repo, "nondist", OCI_MANIFEST, &bytes).await,
        &repo,
        &bytes,
    );
}

#[tokio::test]
async fn tag_can_move_to_another_manifest() {
    let repo = repo("man-retag");
    let a = push_image(&repo, "moving").await;
    let b = push_image(&repo, "moving").await;
    let r = get(format!("/v2/{repo}/manifests/moving")).send().await;
    assert_status(&r, 200);
    assert_header(&r, "docker-content-digest", &b.digest);
    // The old one is still there by digest.
    assert_status(
        &get(format!("/v2/{repo}/manifests/{}", a.digest))
            .send()
            .await,
        200,
    );
}

#[tokio::test]
async fn longest_tag_works() {
    let repo = repo("man-long-tag");
    let tag = format!(
        "_{}",
        "a.b-C_9".repeat(20).chars().take(127).collect::<String>()
    );
    assert_eq!(tag.len(), 128);
    let p = push_image(&repo, &tag).await;
    let r = get(format!("/v2/{repo}/manifests/{tag}")).send().await;
    assert_header(&r, "docker-content-digest", &p.digest);
}

// ---------------------------------------------------------------------------------------------
// Exact bytes

#[tokio::test]
async fn bytes_round_trip_exactly() {
    let repo = repo("man-bytes");
    let config = config_bytes();
    let layer = random_bytes(50);
    push_blob(&repo, &config).await;
    push_blob(&repo, &layer).await;
    let bytes = format!(
        "\n  {{\t\"layers\" : [ {{\"size\":{lsize},  \"digest\":\"{ldig}\",\"mediaType\":\"{OCI_LAYER}\"}} ] ,\r\n\
         \"config\":{{ \"digest\" : \"{cdig}\", \"size\" : {csize}, \"mediaType\": \"{OCI_CONFIG}\" }},\n\
         \"schemaVersion\"   :   2,\n\"annotations\": {{\"z\": \"\\u00e9t\\u00e9\", \"a\": \"caf\u{e9} \u{1F433}\"}},\n\
         \"mediaType\": \"{OCI_MANIFEST}\"\n}}\n\n",
        lsize = layer.len(),
        ldig = sha256(&layer),
        cdig = sha256(&config),
        csize = config.len(),
    )
    .into_bytes();
    serde_json::from_slice::<Value>(&bytes).expect("the test manifest is valid JSON");
    let d = sha256(&bytes);
    let r = put_manifest(&repo, "odd", OCI_MANIFEST, &bytes).await;
    assert_eq!(assert_manifest_created(&r, &repo, &bytes), d);
    assert_manifest(&repo, Some("odd"), OCI_MANIFEST, &bytes).await;
    // And by digest.
    let r = put_manifest(&repo, &d, OCI_MANIFEST, &bytes).await;
    assert_manifest_created(&r, &repo, &bytes);
}

// ---------------------------------------------------------------------------------------------
// Content-Type fallbacks

#[tokio::test]
async fn missing_or_generic_content_type_falls_back_to_media_type() {
    let repo = repo("man-ct-fallback");
    for (i, ct) in [
        None,
        Some("application/json"),
        Some("application/octet-stream"),
    ]
    .into_iter()
    .enumerate()
    {
        let config = config_bytes();
        push_blob(&repo, &config).await;
        let bytes = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![]));
        let tag = format!("t{i}");
        let mut req = put(format!("/v2/{repo}/manifests/{tag}")).body(bytes.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await;
        assert_manifest_created(&r, &repo, &bytes);
        assert_manifest(&repo, Some(&tag), OCI_MANIFEST, &bytes).await;
    }
    // The same with an index.
    let child = push_image(&repo, "").await;
    let bytes = to_bytes(&index_of(OCI_INDEX, &[(OCI_MANIFEST, &child)]));
    let r = put(format!("/v2/{repo}/manifests/idx"))
        .header("content-type", "application/json")
        .body(bytes.clone())
        .send()
        .await;
    assert_manifest_created(&r, &repo, &bytes);
    assert_manifest(&repo, Some("idx"), OCI_INDEX, &bytes).await;
}

#[tokio::test]
async fn manifest_without_media_type_field_takes_the_content_type() {
    let repo = repo("man-no-mt");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = to_bytes(
        &json!({ "schemaVersion": 2, "config": descriptor(OCI_CONFIG, &config), "layers": [] }),
    );
    push_and_check(&repo, "v1", OCI_MANIFEST, &bytes).await;
}

/// Neither Content-Type nor `mediaType` says: the spec leaves it open; like Distribution, the
/// shape decides (`manifests` → OCI index, else OCI image manifest).
#[tokio::test]
async fn no_content_type_and_no_media_type_goes_by_shape() {
    let repo = repo("man-no-type");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = to_bytes(
        &json!({ "schemaVersion": 2, "config": descriptor(OCI_CONFIG, &config), "layers": [] }),
    );
    let r = put(format!("/v2/{repo}/manifests/v1"))
        .body(bytes.clone())
        .send()
        .await;
    assert_manifest_created(&r, &repo, &bytes);
    assert_manifest(&repo, Some("v1"), OCI_MANIFEST, &bytes).await;
    let child = Pushed {
        digest: sha256(&bytes),
        bytes: bytes.clone(),
    };
    let mut idx = index_of(OCI_INDEX, &[(OCI_MANIFEST, &child)]);
    idx.as_object_mut().unwrap().remove("mediaType");
    let bytes = to_bytes(&idx);
    let r = put(format!("/v2/{repo}/manifests/v2"))
        .header("content-type", "application/json")
        .body(bytes.clone())
        .send()
        .await;
    assert_manifest_created(&r, &repo, &bytes);
    assert_manifest(&repo, Some("v2"), OCI_INDEX, &bytes).await;
}

#[tokio::test]
async fn media_type_contradicting_content_type_is_manifest_invalid() {
    let repo = repo("man-mt-contradiction");
    let child = push_image(&repo, "").await;
    let index = to_bytes(&index_of(OCI_INDEX, &[(OCI_MANIFEST, &child)]));
    assert_oci_error(
        &put_manifest(&repo, "x", OCI_MANIFEST, &index).await,
        400,
        "MANIFEST_INVALID",
    );
    assert_oci_error(
        &put_manifest(&repo, "x", DOCKER_LIST, &index).await,
        400,
        "MANIFEST_INVALID",
    );
    assert_oci_error(
        &put_manifest(&repo, "x", OCI_INDEX, &child.bytes).await,
        400,
        "MANIFEST_INVALID",
    );
    assert_oci_error(
        &put_manifest(&repo, "x", DOCKER_MANIFEST, &child.bytes).await,
        400,
        "MANIFEST_INVALID",
    );
    assert_status(&get(format!("/v2/{repo}/manifests/x")).send().await, 404);
}

// ---------------------------------------------------------------------------------------------
// Validation failures

#[tokio::test]
async fn digest_mismatch_on_put_by_digest() {
    let repo = repo("man-digest-mismatch");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![]));
    let wrong = unknown_digest();
    let r = put_manifest(&repo, &wrong, OCI_MANIFEST, &bytes).await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    assert_oci_error(
        &get(format!("/v2/{repo}/manifests/{wrong}")).send().await,
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_oci_error(
        &get(format!("/v2/{repo}/manifests/{}", sha256(&bytes)))
            .send()
            .await,
        404,
        "MANIFEST_UNKNOWN",
    );
    // Also with bytes that differ only in whitespace from the digested ones.
    let mut spaced = bytes.clone();
    spaced.push(b'\n');
    let r = put_manifest(&repo, &sha256(&bytes), OCI_MANIFEST, &spaced).await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn missing_config_blob_is_manifest_blob_unknown() {
    let repo = repo("man-missing-config");
    let layer = random_bytes(100);
    push_blob(&repo, &layer).await;
    let config = config_bytes(); // not pushed
    let bytes = to_bytes(&image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
    ));
    let e = assert_oci_error(
        &put_manifest(&repo, "v1", OCI_MANIFEST, &bytes).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    assert_eq!(
        e["detail"]["digest"],
        json!(sha256(&config)),
        "detail.digest:\n{e}"
    );
    assert_oci_error(
        &get(format!("/v2/{repo}/manifests/v1")).send().await,
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[tokio::test]
async fn missing_layer_blob_is_manifest_blob_unknown() {
    let repo = repo("man-missing-layer");
    let config = config_bytes();
    let l1 = random_bytes(100);
    let l2 = random_bytes(100); // not pushed
    push_blob(&repo, &config).await;
    push_blob(&repo, &l1).await;
    let bytes = to_bytes(&image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &l1), descriptor(OCI_LAYER, &l2)],
    ));
    let e = assert_oci_error(
        &put_manifest(&repo, "v1", OCI_MANIFEST, &bytes).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    assert_eq!(
        e["detail"]["digest"],
        json!(sha256(&l2)),
        "detail.digest:\n{e}"
    );
    // Docker schema2 too.
    let bytes = to_bytes(&docker_manifest(
        descriptor(DOCKER_CONFIG, &config),
        vec![descriptor(DOCKER_LAYER, &l2)],
    ));
    assert_oci_error(
        &put_manifest(&repo, "v2", DOCKER_MANIFEST, &bytes).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
}

#[tokio::test]
async fn blob_of_another_repository_does_not_count() {
    let repo = repo("man-other-repo");
    let other = common::repo("man-other-repo-src");
    let config = config_bytes();
    push_blob(&other, &config).await;
    let bytes = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![]));
    assert_oci_error(
        &put_manifest(&repo, "v1", OCI_MANIFEST, &bytes).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
}

#[tokio::test]
async fn index_naming_a_missing_child_is_manifest_blob_unknown() {
    let repo = repo("man-index-missing");
    let present = push_image(&repo, "").await;
    let absent = Pushed {
        digest: unknown_digest(),
        bytes: vec![0; 321],
    };
    let bytes = to_bytes(&index_of(
        OCI_INDEX,
        &[(OCI_MANIFEST, &present), (OCI_MANIFEST, &absent)],
    ));
    let e = assert_oci_error(
        &put_manifest(&repo, "idx", OCI_INDEX, &bytes).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    assert_eq!(
        e["detail"]["digest"],
        json!(absent.digest),
        "detail.digest:\n{e}"
    );
    let bytes = to_bytes(&index_of(DOCKER_LIST, &[(DOCKER_MANIFEST, &absent)]));
    assert_oci_error(
        &put_manifest(&repo, "list", DOCKER_LIST, &bytes).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    // A child that is only a blob (not a manifest) of the repository does not count either...
    // (not in the contract; not tested). A child manifest in another repository:
    let other = common::repo("man-index-missing-other");
    let elsewhere = push_image(&other, "").await;
    let bytes = to_bytes(&index_of(OCI_INDEX, &[(OCI_MANIFEST, &elsewhere)]));
    assert_oci_error(
        &put_manifest(&repo, "idx2", OCI_INDEX, &bytes).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
}

/// Pads an image manifest with an annotation to exactly `size` bytes.
fn manifest_of_size(config: &[u8], size: usize) -> Vec<u8> {
    let mut m = image_manifest(descriptor(OCI_CONFIG, config), vec![]);
    m["annotations"] = json!({ "pad": "" });
    let base = to_bytes(&m).len();
    assert!(size > base);
    m["annotations"]["pad"] = json!("x".repeat(size - base));
    let bytes = to_bytes(&m);
    assert_eq!(bytes.len(), size);
    bytes
}

#[tokio::test]
async fn manifest_of_exactly_4_mib_is_accepted() {
    let repo = repo("man-4mib");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = manifest_of_size(&config, MAX_MANIFEST);
    assert_manifest_created(
        &put_manifest(&repo, "big", OCI_MANIFEST, &bytes).await,
        &repo,
        &bytes,
    );
    let r = get(format!("/v2/{repo}/manifests/big")).send().await;
    assert_status(&r, 200);
    assert!(r.body == bytes);
}

#[tokio::test]
async fn manifest_over_4_mib_is_413_size_invalid() {
    let repo = repo("man-oversize");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = manifest_of_size(&config, MAX_MANIFEST + 1);
    assert_oci_error(
        &put_manifest(&repo, "big", OCI_MANIFEST, &bytes).await,
        413,
        "SIZE_INVALID",
    );
    assert_oci_error(
        &put_manifest(&repo, &sha256(&bytes), OCI_MANIFEST, &bytes).await,
        413,
        "SIZE_INVALID",
    );
    // Streamed (no Content-Length).
    let r = put(format!("/v2/{repo}/manifests/big"))
        .header("content-type", OCI_MANIFEST)
        .stream(bytes.chunks(1 << 20).map(|c| c.to_vec()).collect())
        .send()
        .await;
    assert_oci_error(&r, 413, "SIZE_INVALID");
    assert_status(&get(format!("/v2/{repo}/manifests/big")).send().await, 404);
}

#[tokio::test]
async fn garbage_is_manifest_invalid() {
    let repo = repo("man-garbage");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let valid = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![]));
    let bodies: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        b"".to_vec(),
        b"{".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"\"string\"".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        valid[..valid.len() - 1].to_vec(), // truncated
        to_bytes(&json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST })), // no config
        to_bytes(
            &json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "nope", "layers": [] }),
        ),
        to_bytes(
            &json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, &config), "layers": {} }),
        ),
        to_bytes(&json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": "sha256:nothex", "size": 1 }, "layers": [] })),
    ];
    for body in bodies {
        let r = put_manifest(&repo, "bad", OCI_MANIFEST, &body).await;
        assert_oci_error(&r, 400, "MANIFEST_INVALID");
    }
    let r = put_manifest(
        &repo,
        "bad",
        OCI_INDEX,
        b"{\"schemaVersion\":2,\"manifests\":7}",
    )
    .await;
    assert_oci_error(&r, 400, "MANIFEST_INVALID");
    assert_status(&get(format!("/v2/{repo}/manifests/bad")).send().await, 404);
}

#[tokio::test]
async fn wrong_schema_version_is_manifest_invalid() {
    let repo = repo("man-schema-version");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    for sv in [json!(1), json!(3), json!("2"), json!(null), json!(2.5)] {
        let mut m = image_manifest(descriptor(OCI_CONFIG, &config), vec![]);
        m["schemaVersion"] = sv.clone();
        let r = put_manifest(&repo, "v", OCI_MANIFEST, &to_bytes(&m)).await;
        assert_oci_error(&r, 400, "MANIFEST_INVALID");
    }
    let mut m = image_manifest(descriptor(OCI_CONFIG, &config), vec![]);
    m.as_object_mut().unwrap().remove("schemaVersion");
    assert_oci_error(
        &put_manifest(&repo, "v", OCI_MANIFEST, &to_bytes(&m)).await,
        400,
        "MANIFEST_INVALID",
    );
}

#[tokio::test]
async fn unsupported_media_types_are_manifest_invalid() {
    let repo = repo("man-unsupported-type");
    let layer = random_bytes(10);
    push_blob(&repo, &layer).await;
    let schema1 = to_bytes(&json!({
        "schemaVersion": 1, "name": repo, "tag": "old", "architecture": "amd64",
        "fsLayers": [{ "blobSum": sha256(&layer) }],
        "history": [{ "v1Compatibility": "{\"id\":\"x\"}" }],
        "signatures": [{ "header": { "alg": "ES256" }, "signature": "abc", "protected": "abc" }]
    }));
    assert_oci_error(
        &put_manifest(&repo, "old", DOCKER_SCHEMA1_SIGNED, &schema1).await,
        400,
        "MANIFEST_INVALID",
    );
    assert_oci_error(
        &put_manifest(&repo, "old", DOCKER_SCHEMA1, &schema1).await,
        400,
        "MANIFEST_INVALID",
    );

    let config = config_bytes();
    push_blob(&repo, &config).await;
    let mut m = image_manifest(descriptor(OCI_CONFIG, &config), vec![]);
    for ct in [
        "application/x-foo",
        "text/plain",
        "application/vnd.oci.artifact.manifest.v1+json",
    ] {
        assert_oci_error(
            &put_manifest(&repo, "odd", ct, &to_bytes(&m)).await,
            400,
            "MANIFEST_INVALID",
        );
    }
    // An unknown mediaType in the body with a generic Content-Type.
    m["mediaType"] = json!("application/x-foo");
    let r = put(format!("/v2/{repo}/manifests/odd"))
        .header("content-type", "application/json")
        .body(to_bytes(&m))
        .send()
        .await;
    assert_oci_error(&r, 400, "MANIFEST_INVALID");
    assert_status(&get(format!("/v2/{repo}/manifests/old")).send().await, 404);
    assert_status(&get(format!("/v2/{repo}/manifests/odd")).send().await, 404);
}

/// A PUT of an invalid tag is 400 TAG_INVALID; a GET or HEAD of one is 404 MANIFEST_UNKNOWN (no
/// such manifest can exist), as the OCI conformance suite and other registries answer.
#[tokio::test]
async fn invalid_tag_is_tag_invalid() {
    let repo = repo("man-bad-tag");
    let p = push_image(&repo, "ok").await;
    let long = "a".repeat(129);
    for tag in [
        "-dash",
        ".dot",
        "has%21bang",
        "has%20space",
        "t%C3%A9",
        long.as_str(),
    ] {
        let url = format!("/v2/{repo}/manifests/{tag}");
        assert_oci_error(&get(url.as_str()).send().await, 404, "MANIFEST_UNKNOWN");
        assert_status(&head(url.as_str()).send().await, 404);
        assert_oci_error(
            &put_manifest(&repo, tag, OCI_MANIFEST, &p.bytes).await,
            400,
            "TAG_INVALID",
        );
        assert_oci_error(&delete(url.as_str()).send().await, 400, "TAG_INVALID");
    }
}

#[tokio::test]
async fn unsupported_digest_algorithm_as_reference() {
    let repo = repo("man-bad-alg");
    let p = push_image(&repo, "ok").await;
    let d = "md5:d41d8cd98f00b204e9800998ecf8427e";
    assert_oci_error(
        &get(format!("/v2/{repo}/manifests/{d}")).send().await,
        400,
        "UNSUPPORTED",
    );
    assert_oci_error(
        &put_manifest(&repo, d, OCI_MANIFEST, &p.bytes).await,
        400,
        "UNSUPPORTED",
    );
}

// ---------------------------------------------------------------------------------------------
// Reads: unknown, Accept, If-None-Match

#[tokio::test]
async fn unknown_manifest_is_404_manifest_unknown() {
    let repo = repo("man-unknown");
    push_image(&repo, "exists").await;
    for reference in ["nope".to_string(), unknown_digest(), sha512(b"nothing")] {
        let url = format!("/v2/{repo}/manifests/{reference}");
        assert_oci_error(&get(url.as_str()).send().await, 404, "MANIFEST_UNKNOWN");
        assert_status(&head(url.as_str()).send().await, 404);
    }
    let never = common::repo("man-unknown-never");
    assert_oci_error(
        &get(format!("/v2/{never}/manifests/latest")).send().await,
        404,
        "MANIFEST_UNKNOWN",
    );
}

#[tokio::test]
async fn accept_negotiation_by_tag() {
    let repo = repo("man-accept");
    let p = push_docker_image(&repo, "v1").await;
    let url = format!("/v2/{repo}/manifests/v1");

    // Accept naming only other types: 404 MANIFEST_UNKNOWN, by tag.
    let r = get(url.as_str())
        .header("accept", OCI_MANIFEST)
        .send()
        .await;
    let e = assert_oci_error(&r, 404, "MANIFEST_UNKNOWN");
    let said = e.to_string();
    assert!(
        said.contains(DOCKER_MANIFEST),
        "the error should say which type is stored:\n{}",
        r.describe()
    );
    let r = get(url.as_str())
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await;
    assert_oci_error(&r, 404, "MANIFEST_UNKNOWN");
    assert_status(
        &head(url.as_str())
            .header("accept", OCI_MANIFEST)
            .send()
            .await,
        404,
    );

    // Accepting it: in a list, with q-values, on separate header lines, or with wildcards.
    let ok: Vec<Vec<String>> = vec![
        vec![DOCKER_MANIFEST.into()],
        vec![format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}")],
        vec![format!("{OCI_INDEX};q=0.9, {DOCKER_MANIFEST};q=0.5")],
        vec![OCI_MANIFEST.into(), DOCKER_MANIFEST.into()],
        vec![OCI_INDEX.into(), DOCKER_LIST.into(), DOCKER_MANIFEST.into()],
        vec!["*/*".into()],
        vec!["application/*".into()],
        vec![format!("{OCI_MANIFEST}, */*;q=0.1")],
        vec![],
    ];
    for accepts in ok {
        let mut req = get(url.as_str());
        for a in &accepts {
            req = req.header("accept", a);
        }
        let r = req.send().await;
        assert_status(&r, 200);
        assert_header(&r, "content-type", DOCKER_MANIFEST);
        assert!(r.body == p.bytes);
    }

    // By digest, Accept is not consulted.
    let r = get(format!("/v2/{repo}/manifests/{}", p.digest))
        .header("accept", OCI_MANIFEST)
        .send()
        .await;
    assert_status(&r, 200);
    assert_header(&r, "content-type", DOCKER_MANIFEST);
    assert!(r.body == p.bytes);
    let r = head(format!("/v2/{repo}/manifests/{}", p.digest))
        .header("accept", OCI_INDEX)
        .send()
        .await;
    assert_status(&r, 200);
}

#[tokio::test]
async fn accept_negotiation_for_an_index() {
    let repo = repo("man-accept-index");
    let child = push_image(&repo, "").await;
    let bytes = to_bytes(&index_of(OCI_INDEX, &[(OCI_MANIFEST, &child)]));
    push_manifest(&repo, "multi", OCI_INDEX, &bytes).await;
    let url = format!("/v2/{repo}/manifests/multi");
    assert_oci_error(
        &get(url.as_str())
            .header("accept", OCI_MANIFEST)
            .send()
            .await,
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_oci_error(
        &get(url.as_str()).header("accept", DOCKER_LIST).send().await,
        404,
        "MANIFEST_UNKNOWN",
    );
    let r = get(url.as_str())
        .header("accept", OCI_MANIFEST)
        .header("accept", OCI_INDEX)
        .send()
        .await;
    assert_status(&r, 200);
    assert_header(&r, "content-type", OCI_INDEX);
}

#[tokio::test]
async fn if_none_match_answers_304() {
    let repo = repo("man-304");
    let p = push_image(&repo, "v1").await;
    let etag = format!("\"{}\"", p.digest);
    for reference in ["v1".to_string(), p.digest.clone()] {
        let url = format!("/v2/{repo}/manifests/{reference}");
        let r = get(url.as_str()).send().await;
        assert_header(&r, "etag", &etag);
        let r = get(url.as_str())
            .header("if-none-match", &etag)
            .send()
            .await;
        assert_status(&r, 304);
        assert!(r.body.is_empty(), "304 with a body:\n{}", r.describe());
        let r = head(url.as_str())
            .header("if-none-match", &etag)
            .send()
            .await;
        assert_status(&r, 304);
        // A different ETag: the full answer.
        let r = get(url.as_str())
            .header("if-none-match", format!("\"{}\"", unknown_digest()))
            .send()
            .await;
        assert_status(&r, 200);
        assert!(r.body == p.bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// DELETE

#[tokio::test]
async fn delete_by_digest_removes_the_manifest_and_its_tags() {
    let repo = repo("man-delete-digest");
    let keep = push_image(&repo, "keep").await;
    let p = push_image(&repo, "one").await;
    push_manifest(&repo, "two", OCI_MANIFEST, &p.bytes).await;
    let r = delete(format!("/v2/{repo}/manifests/{}", p.digest))
        .send()
        .await;
    assert_status(&r, 202);
    for reference in [p.digest.as_str(), "one", "two"] {
        let url = format!("/v2/{repo}/manifests/{reference}");
        assert_oci_error(&get(url.as_str()).send().await, 404, "MANIFEST_UNKNOWN");
        assert_status(&head(url.as_str()).send().await, 404);
    }
    let r = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!(["keep"]), "{}", r.describe());
    assert_status(
        &get(format!("/v2/{repo}/manifests/{}", keep.digest))
            .send()
            .await,
        200,
    );
    // Again: unknown.
    let r = delete(format!("/v2/{repo}/manifests/{}", p.digest))
        .send()
        .await;
    assert_oci_error(&r, 404, "MANIFEST_UNKNOWN");
    // It can be pushed again.
    push_manifest(&repo, "one", OCI_MANIFEST, &p.bytes).await;
    assert_status(&get(format!("/v2/{repo}/manifests/one")).send().await, 200);
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let repo = repo("man-delete-tag");
    let p = push_image(&repo, "one").await;
    push_manifest(&repo, "two", OCI_MANIFEST, &p.bytes).await;
    let r = delete(format!("/v2/{repo}/manifests/one")).send().await;
    assert_status(&r, 202);
    assert_oci_error(
        &get(format!("/v2/{repo}/manifests/one")).send().await,
        404,
        "MANIFEST_UNKNOWN",
    );
    assert_status(&get(format!("/v2/{repo}/manifests/two")).send().await, 200);
    assert_status(
        &get(format!("/v2/{repo}/manifests/{}", p.digest))
            .send()
            .await,
        200,
    );
    let r = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_eq!(r.json()["tags"], json!(["two"]), "{}", r.describe());
    let r = delete(format!("/v2/{repo}/manifests/one")).send().await;
    assert_oci_error(&r, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn delete_unknown_manifest_is_404() {
    let repo = repo("man-delete-unknown");
    push_image(&repo, "exists").await;
    let r = delete(format!("/v2/{repo}/manifests/{}", unknown_digest()))
        .send()
        .await;
    assert_oci_error(&r, 404, "MANIFEST_UNKNOWN");
    let r = delete(format!("/v2/{repo}/manifests/nope")).send().await;
    assert_oci_error(&r, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn deleting_a_child_keeps_the_index_readable() {
    let repo = repo("man-delete-child");
    let child = push_image(&repo, "").await;
    let bytes = to_bytes(&index_of(OCI_INDEX, &[(OCI_MANIFEST, &child)]));
    push_manifest(&repo, "idx", OCI_INDEX, &bytes).await;
    let r = delete(format!("/v2/{repo}/manifests/{}", child.digest))
        .send()
        .await;
    assert_status(&r, 202);
    let r = get(format!("/v2/{repo}/manifests/idx")).send().await;
    assert_status(&r, 200);
}

/// PUT by tag: 201 with the digest of `bytes`, and a GET by that tag serves exactly `bytes`.
async fn push_and_check(repo: &str, tag: &str, media_type: &str, bytes: &[u8]) {
    let r = put_manifest(repo, tag, media_type, bytes).await;
    assert_manifest_created(&r, repo, bytes);
    assert_manifest(repo, Some(tag), media_type, bytes).await;
}

// ---------------------------------------------------------------------------------------------
// Tags on push by digest (`?tag=`), and DELETE racing PUT

#[tokio::test]
async fn push_by_digest_with_tag_parameters_applies_each_tag() {
    let repo = repo("man-tag-param");
    let p = push_image(&repo, "").await;
    let r = put(format!("/v2/{repo}/manifests/{}?tag=a&tag=b.1", p.digest))
        .header("content-type", OCI_MANIFEST)
        .body(p.bytes.clone())
        .send()
        .await;
    assert_manifest_created(&r, &repo, &p.bytes);
    let mut applied: Vec<String> = r
        .headers
        .get_all("oci-tag")
        .iter()
        // One field line per tag, or (RFC 9110 5.3) one line listing them: a Lambda function
        // URL carries one value per header name, so the adapter folds repeated ones.
        .flat_map(|v| v.to_str().unwrap_or_default().split(',').map(|t| t.trim().to_owned()).collect::<Vec<_>>())
        .collect();
    applied.sort();
    assert_eq!(applied, ["a", "b.1"], "an OCI-Tag value per tag:\n{}", r.describe());
    for tag in ["a", "b.1"] {
        let g = get(format!("/v2/{repo}/manifests/{tag}")).send().await;
        assert_manifest_headers(&g, OCI_MANIFEST, &p.bytes, true);
    }
    let t = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_eq!(t.json()["tags"], json!(["a", "b.1"]), "{}", t.describe());
}

#[tokio::test]
async fn one_invalid_tag_parameter_applies_none() {
    let repo = repo("man-tag-param-bad");
    let p = push_image(&repo, "").await;
    let r = put(format!("/v2/{repo}/manifests/{}?tag=good&tag=-bad", p.digest))
        .header("content-type", OCI_MANIFEST)
        .body(p.bytes.clone())
        .send()
        .await;
    assert_oci_error(&r, 400, "TAG_INVALID");
    assert_status(&get(format!("/v2/{repo}/manifests/good")).send().await, 404);
    let t = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_eq!(t.json()["tags"], json!([]), "{}", t.describe());
}

/// DELETE by digest racing a PUT by tag of the same manifest: whatever the interleaving, every
/// tag listed afterwards resolves (GET 200); none is left pointing at a deleted manifest.
#[tokio::test]
async fn delete_racing_tag_push_leaves_no_dangling_tag() {
    let repo = repo("man-delete-race");
    let p = push_image(&repo, "").await;
    const ROUNDS: usize = 50;
    for round in 0..ROUNDS {
        let tag = format!("t{round}");
        let (d, t) = tokio::join!(
            delete(format!("/v2/{repo}/manifests/{}", p.digest)).send(),
            put_manifest(&repo, &tag, OCI_MANIFEST, &p.bytes),
        );
        assert!(matches!(d.status, 202 | 404), "DELETE:\n{}", d.describe());
        assert_status(&t, 201);
        let tags = get(format!("/v2/{repo}/tags/list")).send().await;
        assert_status(&tags, 200);
        for listed in tags.json()["tags"].as_array().cloned().unwrap_or_default() {
            let listed = listed.as_str().unwrap_or_default().to_owned();
            let g = get(format!("/v2/{repo}/manifests/{listed}")).send().await;
            assert_eq!(g.status, 200, "round {round}: tag {listed} is listed but does not resolve:\n{}", g.describe());
        }
        // Next round starts from a pushed manifest again.
        push_manifest(&repo, &p.digest, OCI_MANIFEST, &p.bytes).await;
    }
}
