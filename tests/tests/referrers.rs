//! end-12a/12b: `GET /v2/<name>/referrers/<digest>[?artifactType=]`, and `OCI-Subject` on PUT.

mod common;

use common::*;
use serde_json::{json, Value};

const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG_CONFIG: &str = "application/vnd.example.signature.config.v1+json";

/// An artifact manifest (OCI image manifest with a subject). With `artifact_type`, the empty
/// config; without, a config of media type SIG_CONFIG (its artifactType then).
async fn artifact(
    repo: &str,
    subject: &Pushed,
    artifact_type: Option<&str>,
    annotations: Option<Value>,
) -> Vec<u8> {
    let layer = random_bytes(40);
    push_blob(repo, &layer).await;
    let mut m = match artifact_type {
        Some(at) => {
            push_blob(repo, b"{}").await;
            let mut m = image_manifest(
                json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2 }),
                vec![descriptor("application/octet-stream", &layer)],
            );
            m["artifactType"] = json!(at);
            m
        }
        None => {
            let config = config_bytes();
            push_blob(repo, &config).await;
            image_manifest(
                descriptor(SIG_CONFIG, &config),
                vec![descriptor("application/octet-stream", &layer)],
            )
        }
    };
    m["subject"] =
        json!({ "mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.bytes.len() });
    if let Some(a) = annotations {
        m["annotations"] = a;
    }
    to_bytes(&m)
}

/// PUTs by digest; asserts 201 and OCI-Subject.
async fn push_referrer(repo: &str, bytes: &[u8], subject: &str) -> String {
    let d = sha256(bytes);
    let r = put_manifest(repo, &d, OCI_MANIFEST, bytes).await;
    assert_status(&r, 201);
    assert_header(&r, "docker-content-digest", &d);
    assert_header(&r, "oci-subject", subject);
    d
}

async fn referrers(repo: &str, subject: &str, artifact_type: Option<&str>) -> (Resp, Vec<Value>) {
    let url = match artifact_type {
        Some(at) => format!(
            "/v2/{repo}/referrers/{subject}?artifactType={}",
            percent_encode(at)
        ),
        None => format!("/v2/{repo}/referrers/{subject}"),
    };
    let r = get(url.as_str()).send().await;
    assert_status(&r, 200);
    assert_header(&r, "content-type", OCI_INDEX);
    let v = r.json();
    assert_eq!(v["schemaVersion"], json!(2), "{}", r.describe());
    assert_eq!(v["mediaType"], json!(OCI_INDEX), "{}", r.describe());
    let list = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no `manifests` list:\n{}", r.describe()))
        .clone();
    (r, list)
}

fn find<'a>(list: &'a [Value], digest: &str) -> &'a Value {
    list.iter()
        .find(|d| d["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not among the referrers: {list:?}"))
}

#[tokio::test]
async fn referrers_list_descriptors_of_every_referrer() {
    let repo = repo("ref-list");
    let subject = push_image(&repo, "v1").await;
    let a_bytes = artifact(
        &repo,
        &subject,
        Some(SBOM),
        Some(json!({ "org.example.kind": "sbom", "n": "1" })),
    )
    .await;
    let a = push_referrer(&repo, &a_bytes, &subject.digest).await;
    let b_bytes = artifact(&repo, &subject, None, None).await;
    let b = push_referrer(&repo, &b_bytes, &subject.digest).await;
    // An unrelated manifest with a subject elsewhere.
    let other = push_image(&repo, "v2").await;
    let c_bytes = artifact(&repo, &other, Some(SBOM), None).await;
    push_referrer(&repo, &c_bytes, &other.digest).await;

    let (r, list) = referrers(&repo, &subject.digest, None).await;
    assert_api_version(&r);
    assert_eq!(list.len(), 2, "{}", r.describe());
    let da = find(&list, &a);
    assert_eq!(da["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(da["size"], json!(a_bytes.len()));
    assert_eq!(da["artifactType"], json!(SBOM));
    assert_eq!(
        da["annotations"],
        json!({ "org.example.kind": "sbom", "n": "1" })
    );
    let db = find(&list, &b);
    assert_eq!(db["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(db["size"], json!(b_bytes.len()));
    assert_eq!(
        db["artifactType"],
        json!(SIG_CONFIG),
        "artifactType falls back to the config's mediaType"
    );
    assert_eq!(
        r.header("oci-filters-applied"),
        None,
        "no filter was asked for:\n{}",
        r.describe()
    );

    let (_, list) = referrers(&repo, &other.digest, None).await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn referrers_filtered_by_artifact_type() {
    let repo = repo("ref-filter");
    let subject = push_image(&repo, "v1").await;
    let a = push_referrer(
        &repo,
        &artifact(&repo, &subject, Some(SBOM), None).await,
        &subject.digest,
    )
    .await;
    let a2 = push_referrer(
        &repo,
        &artifact(&repo, &subject, Some(SBOM), None).await,
        &subject.digest,
    )
    .await;
    let b = push_referrer(
        &repo,
        &artifact(&repo, &subject, None, None).await,
        &subject.digest,
    )
    .await;

    let (r, list) = referrers(&repo, &subject.digest, Some(SBOM)).await;
    assert_header(&r, "oci-filters-applied", "artifactType");
    let mut got: Vec<&str> = list.iter().map(|d| d["digest"].as_str().unwrap()).collect();
    got.sort();
    let mut want = vec![a.as_str(), a2.as_str()];
    want.sort();
    assert_eq!(got, want, "{}", r.describe());

    let (r, list) = referrers(&repo, &subject.digest, Some(SIG_CONFIG)).await;
    assert_header(&r, "oci-filters-applied", "artifactType");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], json!(b));

    let (r, list) = referrers(&repo, &subject.digest, Some("application/x-none")).await;
    assert_header(&r, "oci-filters-applied", "artifactType");
    assert!(list.is_empty(), "{}", r.describe());
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_is_an_empty_list() {
    let repo = repo("ref-unknown");
    push_image(&repo, "v1").await;
    let (r, list) = referrers(&repo, &unknown_digest(), None).await;
    assert!(list.is_empty(), "{}", r.describe());
    let (r, list) = referrers(&repo, &sha512(b"nothing"), None).await;
    assert!(list.is_empty(), "{}", r.describe());
    // A repository with nothing at all.
    let never = common::repo("ref-never");
    let (r, list) = referrers(&never, &unknown_digest(), None).await;
    assert!(list.is_empty(), "{}", r.describe());
}

#[tokio::test]
async fn referrers_with_malformed_digest_is_digest_invalid() {
    let repo = repo("ref-bad-digest");
    push_image(&repo, "v1").await;
    for d in [
        "sha256:abc",
        "latest",
        "sha256:",
        &format!("sha256:{}", "G".repeat(64)),
    ] {
        let r = get(format!("/v2/{repo}/referrers/{d}")).send().await;
        assert_oci_error(&r, 400, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn subject_need_not_exist() {
    let repo = repo("ref-dangling");
    push_image(&repo, "v1").await;
    let ghost = Pushed {
        digest: unknown_digest(),
        bytes: vec![0; 500],
    };
    let bytes = artifact(&repo, &ghost, Some(SBOM), None).await;
    let d = push_referrer(&repo, &bytes, &ghost.digest).await;
    // Pushed by tag as well.
    let r = put_manifest(&repo, "sbom", OCI_MANIFEST, &bytes).await;
    assert_status(&r, 201);
    assert_header(&r, "oci-subject", &ghost.digest);
    let (_, list) = referrers(&repo, &ghost.digest, None).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], json!(d));
}

#[tokio::test]
async fn index_with_a_subject_is_a_referrer() {
    let repo = repo("ref-index");
    let subject = push_image(&repo, "v1").await;
    let child = push_image(&repo, "").await;
    let mut idx = index_of(OCI_INDEX, &[(OCI_MANIFEST, &child)]);
    idx["artifactType"] = json!("application/vnd.example.bundle");
    idx["subject"] =
        json!({ "mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.bytes.len() });
    idx["annotations"] = json!({ "k": "v" });
    let bytes = to_bytes(&idx);
    let d = sha256(&bytes);
    let r = put_manifest(&repo, &d, OCI_INDEX, &bytes).await;
    assert_status(&r, 201);
    assert_header(&r, "oci-subject", &subject.digest);
    let (_, list) = referrers(&repo, &subject.digest, None).await;
    let e = find(&list, &d);
    assert_eq!(e["mediaType"], json!(OCI_INDEX));
    assert_eq!(e["artifactType"], json!("application/vnd.example.bundle"));
    assert_eq!(e["size"], json!(bytes.len()));
    assert_eq!(e["annotations"], json!({ "k": "v" }));
}

#[tokio::test]
async fn deleted_referrer_leaves_the_list() {
    let repo = repo("ref-delete");
    let subject = push_image(&repo, "v1").await;
    let a = push_referrer(
        &repo,
        &artifact(&repo, &subject, Some(SBOM), None).await,
        &subject.digest,
    )
    .await;
    let b = push_referrer(
        &repo,
        &artifact(&repo, &subject, Some(SBOM), None).await,
        &subject.digest,
    )
    .await;
    assert_status(
        &delete(format!("/v2/{repo}/manifests/{a}")).send().await,
        202,
    );
    let (r, list) = referrers(&repo, &subject.digest, None).await;
    assert_eq!(list.len(), 1, "{}", r.describe());
    assert_eq!(list[0]["digest"], json!(b));
}

#[tokio::test]
async fn referrers_are_scoped_to_the_repository() {
    let a = repo("ref-scope-a");
    let b = repo("ref-scope-b");
    let subject = push_image(&a, "v1").await;
    push_image(&b, "v1").await;
    push_referrer(
        &a,
        &artifact(&a, &subject, Some(SBOM), None).await,
        &subject.digest,
    )
    .await;
    let (_, list) = referrers(&b, &subject.digest, None).await;
    assert!(
        list.is_empty(),
        "a referrer in {a} shows up in {b}: {list:?}"
    );
}

#[tokio::test]
async fn manifest_without_subject_has_no_oci_subject_header() {
    let repo = repo("ref-no-subject");
    let config = config_bytes();
    push_blob(&repo, &config).await;
    let bytes = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![]));
    let r = put_manifest(&repo, "v1", OCI_MANIFEST, &bytes).await;
    assert_status(&r, 201);
    assert_eq!(r.header("oci-subject"), None, "{}", r.describe());
}
