//! Token auth end to end against `berth serve --auth-config`: the 401 challenge, the token
//! endpoint (GET Basic, OAuth2 POST password/refresh/token-exchange), partial grants, anonymous
//! pull, catalog, mounts, every kind of bad token, and the OIDC exchange with a local issuer.
//!
//! This file always starts its own registry with auth on, even when BERTH_URL is set: auth needs
//! a config the test controls (keys, users, policy, a trusted issuer). By default that is
//! `berth serve --auth-config` (BERTH_BIN, else the workspace's build) on a free port the kernel picks (with the three after it free).
//! With BERTH_AUTH_LAUNCH=SCRIPT it runs `SCRIPT CONFIG_FILE PORT` instead, in its own process
//! group (stopped as a group at exit), and waits for a 401 on PORT: the Worker and the Lambda
//! function run these same tests that way (tests/edge/launch-auth.sh, tests/lambda/
//! launch-auth.sh). BERTH_AUTH_PORT fixes the port. It points BERTH_URL at that registry for
//! the harness. The OIDC issuer is a small hyper server in this process (on a port the kernel picks)
//! serving a discovery document and JWKS. Users, robots and keys are made with the real admin
//! commands (`berth key generate`, `berth user add`, `berth robot add`).
//!
//! Tokens for the bad-input cases are minted here with p256/rsa/hmac directly, independently
//! of the core's code.

mod common;
#[path = "auth/endpoints.rs"]
mod endpoints;

use std::convert::Infallible;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use p256::ecdsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The environment: an issuer, a config made by the admin commands, and berth serve

struct Env {
    issuer_port: u16,
    data: PathBuf,
    log: PathBuf,
    /// Berth's signing keys, read back from the files `berth key generate` wrote.
    new_key: p256::ecdsa::SigningKey,
    old_key: p256::ecdsa::SigningKey,
    robot_secret: String,
    gh_key: rsa::RsaPrivateKey,
    gl_key: p256::ecdsa::SigningKey,
}

const ALICE_PW: &str = "alice-password-1";
const BOB_PW: &str = "bob-password-12";
const ROOT_PW: &str = "root-password-123";

static ENV: OnceLock<Env> = OnceLock::new();
static SERVER_PID: AtomicI32 = AtomicI32::new(0);
static JWKS_FETCHES: AtomicUsize = AtomicUsize::new(0);

fn env() -> &'static Env {
    ENV.get_or_init(setup)
}

fn gh_issuer() -> String {
    format!("http://127.0.0.1:{}/gh", env().issuer_port)
}

fn gl_issuer() -> String {
    format!("http://127.0.0.1:{}/gl", env().issuer_port)
}

fn setup() -> Env {
    let data = std::env::temp_dir().join(format!("berth-auth-tests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("temp dir");
    let bin = std::env::var_os("BERTH_BIN").map(PathBuf::from).unwrap_or_else(default_bin);
    assert!(bin.exists(), "berth binary {} not found: build it first or set BERTH_BIN", bin.display());
    let config = data.join("auth.toml");
    let admin = |args: &[&str], stdin: &str| -> String {
        let mut child = Command::new(&bin)
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run berth admin command");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    admin(&["key", "generate", "--kid", "old"], "");
    admin(&["key", "generate", "--kid", "new"], "");
    admin(&["user", "add", "alice", "--group", "devs"], &format!("{ALICE_PW}\n"));
    admin(&["user", "add", "bob", "--group", "readers"], &format!("{BOB_PW}\n"));
    admin(&["user", "add", "root", "--group", "admins"], &format!("{ROOT_PW}\n"));
    let robot_secret = admin(&["robot", "add", "builder", "--group", "ci"], "").trim().to_owned();
    assert!(robot_secret.starts_with("berth_"), "robot secret: {robot_secret:?}");
    // Adding a name twice is refused; listing shows the users and their groups.
    let dup = Command::new(&bin)
        .args(["user", "add", "alice", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!dup.status.success());
    let users = admin(&["user", "list"], "");
    assert!(users.contains("alice\tdevs") && users.contains("bob\treaders"), "{users}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains(ALICE_PW) && !text.contains(&robot_secret), "secrets stored in clear");

    let issuer = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("a free port for the OIDC issuer");
    let issuer_port = issuer.local_addr().unwrap().port();
    let gh_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("rsa key");
    let gl_key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    start_issuer(issuer, issuer_port, gh_key.to_public_key(), *gl_key.verifying_key());

    let mut text = text;
    text.push_str(&format!(
        r#"
[catalog]
principals = ["group:admins"]

[[access]]
repositories = ["public/**"]
public = true

[[access]]
repositories = ["team/**", "public/**"]
principals = ["group:devs"]
actions = ["pull", "push"]

[[access]]
repositories = ["team/**"]
principals = ["group:readers"]
actions = ["pull"]

[[access]]
repositories = ["**"]
principals = ["group:admins"]
actions = ["*"]

[[access]]
repositories = ["ci/**"]
principals = ["oidc:gh-main", "oidc:gl", "robot:builder"]
actions = ["pull", "push"]

[login]
# Per account only, in practice: every test here logs in from 127.0.0.1.
max_failures_per_client = 1000
max_failures_per_account = 5
window_secs = 600

[[oidc]]
name = "gh-main"
issuer = "http://127.0.0.1:{issuer_port}/gh"
audience = "berth"
token_ttl_secs = 120
[oidc.claims]
repository = "org/*"
ref = "refs/heads/main"

[[oidc]]
name = "gl"
issuer = "http://127.0.0.1:{issuer_port}/gl"
jwks_uri = "http://127.0.0.1:{issuer_port}/gl/keys"
audience = "berth"
[oidc.claims]
project_path = "group/app"
"#
    ));
    std::fs::write(&config, text).unwrap();
    let read_key = |kid: &str| {
        let b64 = std::fs::read_to_string(data.join(format!("keys/{kid}.key"))).unwrap();
        p256::ecdsa::SigningKey::from_slice(&URL_SAFE_NO_PAD.decode(b64.trim()).unwrap()).unwrap()
    };

    let port = match std::env::var("BERTH_AUTH_PORT") {
        Ok(p) => p.parse().expect("BERTH_AUTH_PORT is a port number"),
        Err(_) => free_port_run(4),
    };
    let log = data.join("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let launcher = std::env::var_os("BERTH_AUTH_LAUNCH").map(PathBuf::from);
    let (pid, exited) = match &launcher {
        Some(script) => launch_group(script, &config, port, log_file),
        None => {
            let args = vec![
                "serve".to_string(),
                "--addr".into(),
                format!("127.0.0.1:{port}"),
                "--data-dir".into(),
                data.join("store").to_string_lossy().into_owned(),
                "--auth-config".into(),
                config.to_string_lossy().into_owned(),
            ];
            spawn_owned(&bin, args, log_file)
        }
    };
    SERVER_PID.store(pid, Ordering::SeqCst);
    unsafe { libc::atexit(stop_server) };
    // The harness sends relative paths to BERTH_URL: this server.
    std::env::set_var("BERTH_URL", format!("http://127.0.0.1:{port}"));
    // wrangler dev and cargo lambda watch take longer to start than berth serve.
    let deadline = Instant::now() + Duration::from_secs(if launcher.is_some() { 180 } else { 60 });
    while !answers_401(port) {
        assert!(
            Instant::now() < deadline && !exited.load(Ordering::SeqCst),
            "the registry with auth ({}) did not come up on {port}; log:\n{}",
            launcher.as_ref().map_or("berth serve --auth-config".into(), |l| l.display().to_string()),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Env { issuer_port, data: data.clone(), log, new_key: read_key("new"), old_key: read_key("old"), robot_secret, gh_key, gl_key }
}

/// Runs `script CONFIG PORT` as the leader of a new process group, so that everything it
/// starts (wrangler's workerd processes, cargo lambda's function) is stopped with it. Returns
/// the group id negated, which `kill` takes as "the whole group".
fn launch_group(script: &std::path::Path, config: &std::path::Path, port: u16, log: std::fs::File) -> (i32, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(script);
    cmd.arg(config).arg(port.to_string()).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let pid = child.id() as i32;
    let exited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = exited.clone();
    std::thread::spawn(move || {
        let _ = child.wait();
        flag.store(true, Ordering::SeqCst);
    });
    (-pid, exited)
}

extern "C" fn stop_server() {
    // Negative: a launched process group (see launch_group).
    let pid = SERVER_PID.load(Ordering::SeqCst);
    if pid != 0 {
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(if pid < 0 { 2000 } else { 300 }));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if std::env::var_os("BERTH_KEEP_DATA").is_none() {
        if let Some(env) = ENV.get() {
            let _ = std::fs::remove_dir_all(&env.data);
        }
    }
}

fn answers_401(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 401"
}

/// A port the kernel picked, with the `len - 1` ports after it free too: the Worker and Lambda
/// launchers take PORT..PORT+3 (their inspectors and side servers). Never a fixed range: two
/// runs of this suite at once (CI beside a developer's run) once collided on one.
fn free_port_run(len: u16) -> u16 {
    for _ in 0..200 {
        let Ok(first) = std::net::TcpListener::bind(("127.0.0.1", 0)) else { continue };
        let Ok(base) = first.local_addr().map(|a| a.port()) else { continue };
        if base.checked_add(len).is_none() {
            continue;
        }
        // Held together, then all dropped: each was free at one moment.
        let rest: Vec<_> = (1..len).map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if rest.len() == usize::from(len - 1) {
            return base;
        }
    }
    panic!("no run of {len} free ports on 127.0.0.1");
}

/// The local OIDC issuer: `/gh` with discovery and an RSA key (like GitHub Actions), `/gl`
/// with only a JWKS at a configured URL and a P-256 key.
fn start_issuer(listener: std::net::TcpListener, port: u16, gh: rsa::RsaPublicKey, gl: p256::ecdsa::VerifyingKey) {
    let gh_jwks = json!({"keys": [
        {"kty": "RSA", "kid": "gh1", "use": "sig", "alg": "RS256", "n": b64(&gh.n().to_bytes_be()), "e": b64(&gh.e().to_bytes_be())},
        {"kty": "oct", "kid": "junk", "k": "c2VjcmV0"}
    ]});
    let point = gl.to_encoded_point(false);
    let gl_jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "gl1", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}]});
    let discovery = json!({"issuer": format!("http://127.0.0.1:{port}/gh"), "jwks_uri": format!("http://127.0.0.1:{port}/gh/jwks")});
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (gh_jwks, gl_jwks, discovery) = (gh_jwks.clone(), gl_jwks.clone(), discovery.clone());
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = match req.uri().path() {
                        "/gh/.well-known/openid-configuration" => Some(discovery.clone()),
                        "/gh/jwks" => {
                            JWKS_FETCHES.fetch_add(1, Ordering::SeqCst);
                            Some(gh_jwks.clone())
                        }
                        "/gl/keys" => Some(gl_jwks.clone()),
                        _ => None,
                    };
                    let response = match body {
                        Some(v) => hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(v.to_string()))),
                        None => {
                            let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                            r
                        }
                    };
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Minting tokens (independently of the core)

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

fn es256(key: &p256::ecdsa::SigningKey, header: Value, claims: Value) -> String {
    let input = signing_input(&header, &claims);
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

fn rs256(key: &rsa::RsaPrivateKey, header: Value, claims: Value) -> String {
    let input = signing_input(&header, &claims);
    let signer = rsa::pkcs1v15::SigningKey::<sha2_10::Sha256>::new(key.clone());
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

fn hs256(secret: &[u8], header: Value, claims: Value) -> String {
    use hmac::{KeyInit, Mac};
    let input = signing_input(&header, &claims);
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Claims of a Berth access token as the registry would issue them.
fn berth_claims(sub: &str, access: Value) -> Value {
    let t = now();
    json!({"iss": "berth", "sub": sub, "aud": "berth", "jti": format!("t{t}"), "token_use": "access",
           "exp": t + 300, "nbf": t - 5, "iat": t - 5, "access": access})
}

fn pull_push(repo: &str) -> Value {
    json!([{"type": "repository", "name": repo, "actions": ["pull", "push"]}])
}

fn header(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid})
}

/// An identity token as GitHub Actions would send it, for repository `org/app` on main.
fn gh_claims(aud: &str, git_ref: &str) -> Value {
    let t = now();
    json!({"iss": gh_issuer(), "aud": aud, "sub": format!("repo:org/app:ref:{git_ref}"), "repository": "org/app",
           "ref": git_ref, "environment": "prod", "exp": t + 300, "nbf": t - 5, "iat": t - 5})
}

fn gh_token(claims: Value) -> String {
    rs256(&env().gh_key, json!({"alg": "RS256", "typ": "JWT", "kid": "gh1"}), claims)
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// `GET /token` with these scopes and optional Basic credentials.
async fn token_get(credentials: Option<(&str, &str)>, scopes: &[&str]) -> Resp {
    env();
    let mut target = "/token?service=berth".to_string();
    for s in scopes {
        target.push_str(&format!("&scope={}", percent_encode(s)));
    }
    let mut req = get(target);
    if let Some((u, p)) = credentials {
        req = req.header("authorization", basic(u, p));
    }
    req.send().await
}

async fn token_post(form: &[(&str, &str)]) -> Resp {
    let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
    post("/token").header("content-type", "application/x-www-form-urlencoded").body(body.join("&")).send().await
}

/// A token from a 200 token response, and its decoded claims.
#[track_caller]
fn token_of(resp: &Resp) -> (String, Value) {
    assert_eq!(resp.status, 200, "token request failed:\n{}", resp.describe());
    let token = resp.json()["token"].as_str().expect("token field").to_owned();
    assert_eq!(resp.json()["access_token"].as_str(), Some(token.as_str()));
    (token.clone(), claims_of(&token))
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn login(user: &str, password: &str, scopes: &[&str]) -> String {
    token_of(&token_get(Some((user, password)), scopes).await).0
}

fn auth(req: Req, token: &str) -> Req {
    req.header("authorization", format!("Bearer {token}"))
}

/// Pushes a config blob, a layer and a manifest with `token`; returns the manifest's digest.
async fn push_as(token: &str, repo: &str, tag: &str) -> String {
    let config = config_bytes();
    let layer = random_bytes(200);
    for blob in [&config, &layer] {
        let r = auth(post(format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob))), token).body(blob.clone()).send().await;
        assert_status(&r, 201);
    }
    let m = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![descriptor(OCI_LAYER, &layer)]));
    let r = auth(put(format!("/v2/{repo}/manifests/{tag}")), token).header("content-type", OCI_MANIFEST).body(m.clone()).send().await;
    assert_status(&r, 201);
    sha256(&m)
}

/// A repository name of its own for one test. Also brings up the environment: the harness's
/// target must be this file's server before any request goes out.
fn name(namespace: &str, label: &str) -> String {
    env();
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{namespace}/{}-{label}-{}", run_id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A 401 UNAUTHORIZED with a Bearer challenge; returns the challenge.
#[track_caller]
fn assert_challenge(resp: &Resp) -> String {
    assert_oci_error(resp, 401, "UNAUTHORIZED");
    let challenge = resp.header("www-authenticate").unwrap_or_else(|| panic!("401 without a challenge:\n{}", resp.describe()));
    let realm = format!("Bearer realm=\"{}/token\",service=\"berth\"", target().base_url());
    assert!(challenge.starts_with(&realm), "challenge {challenge:?} does not start with {realm:?}");
    challenge
}

// ---------------------------------------------------------------------------------------------
// The challenge and the token endpoint

#[tokio::test]
async fn base_challenges_until_a_token_is_presented() {
    env();
    let r = get("/v2/").send().await;
    let c = assert_challenge(&r);
    assert!(!c.contains("scope="), "{c}");
    // Behind a TLS-terminating proxy the realm follows X-Forwarded-Proto and Host.
    let r = get("/v2/").header("x-forwarded-proto", "https").send().await;
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        format!("Bearer realm=\"https://{}/token\",service=\"berth\"", target().host_header())
    );
    // Basic credentials on registry requests are not a login: tokens only.
    let r = get("/v2/").header("authorization", basic("alice", ALICE_PW)).send().await;
    assert_challenge(&r);
    let anon = token_of(&token_get(None, &[]).await).0;
    assert_status(&auth(get("/v2/"), &anon).send().await, 200);
}

#[tokio::test]
async fn token_claims_and_partial_grants() {
    let repo = name("team", "claims");
    let secret = name("secret", "x");
    let scope_all = format!("repository:{repo}:pull,push,delete");
    let scope_secret = format!("repository:{secret}:pull");
    let r = token_get(Some(("alice", ALICE_PW)), &[&scope_all, &scope_secret]).await;
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let (token, claims) = token_of(&r);
    let expires_in = r.json()["expires_in"].as_i64().unwrap();
    assert!((1..=300).contains(&expires_in), "expires_in {expires_in}");
    assert_eq!(claims["iss"], "berth");
    assert_eq!(claims["aud"], "berth");
    assert_eq!(claims["sub"], "user:alice");
    for c in ["exp", "nbf", "iat"] {
        assert!(claims[c].is_i64(), "claim {c} missing: {claims}");
    }
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), expires_in);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    // Only the allowed subset is granted: no delete, nothing on the secret repository.
    assert_eq!(claims["access"], pull_push(&repo));
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "new");
    // Two tokens never share a jti.
    let (_, again) = token_of(&token_get(Some(("alice", ALICE_PW)), &[&scope_all]).await);
    assert_ne!(again["jti"], claims["jti"]);

    let digest = push_as(&token, &repo, "v1").await;
    assert_status(&auth(get(format!("/v2/{repo}/manifests/v1")), &token).send().await, 200);
    // Delete was asked for but not granted, and the policy does not allow it: 403 DENIED.
    let r = auth(delete(format!("/v2/{repo}/manifests/{digest}")), &token).send().await;
    assert_oci_error(&r, 403, "DENIED");
    // The admin may delete.
    let root = login("root", ROOT_PW, &[&format!("repository:{repo}:delete")]).await;
    assert_status(&auth(delete(format!("/v2/{repo}/manifests/{digest}")), &root).send().await, 202);
}

#[tokio::test]
async fn anonymous_pull_of_public_repositories_only() {
    let public = name("public", "anon");
    let private = name("team", "anon");
    let alice = login("alice", ALICE_PW, &[&format!("repository:{public}:push,pull"), &format!("repository:{private}:push,pull")]).await;
    let public_digest = push_as(&alice, &public, "v1").await;
    let private_digest = push_as(&alice, &private, "v1").await;
    // Digest-addressed content is cacheable for ever, but shared caches must never keep
    // private content: `public` for the public repository, `private` for the other.
    let r = get(format!("/v2/{public}/manifests/{public_digest}")).send().await;
    assert_header(&r, "cache-control", IMMUTABLE);
    let r = auth(get(format!("/v2/{private}/manifests/{private_digest}")), &alice).send().await;
    assert_header(&r, "cache-control", "private, max-age=31536000, immutable");

    // Without any token: public pull works, private pull gets the challenge with its scope.
    assert_status(&get(format!("/v2/{public}/manifests/v1")).send().await, 200);
    assert_status(&get(format!("/v2/{public}/tags/list")).send().await, 200);
    let r = get(format!("/v2/{private}/manifests/v1")).send().await;
    let c = assert_challenge(&r);
    assert!(c.contains(&format!("scope=\"repository:{private}:pull\"")), "{c}");
    // A blob HEAD is how pushes start: its challenge offers pull,push (granted as allowed).
    let r = head(format!("/v2/{private}/blobs/{}", unknown_digest())).send().await;
    assert_eq!(r.status, 401, "{}", r.describe());
    let c = r.header("www-authenticate").unwrap_or_default();
    assert!(c.contains(&format!("scope=\"repository:{private}:pull,push\"")), "{c}");
    // Pushing anonymously to the public repository is refused with a push challenge.
    let r = post(format!("/v2/{public}/blobs/uploads/")).send().await;
    let c = assert_challenge(&r);
    assert!(c.contains(&format!("scope=\"repository:{public}:pull,push\"")), "{c}");

    // Docker's anonymous flow: a token without credentials carries public pull only.
    let (anon, claims) = token_of(&token_get(None, &[&format!("repository:{public}:pull,push"), &format!("repository:{private}:pull")]).await);
    assert_eq!(claims["sub"], "anonymous");
    assert_eq!(claims["access"], json!([{"type": "repository", "name": public, "actions": ["pull"]}]));
    assert_status(&auth(get(format!("/v2/{public}/manifests/v1")), &anon).send().await, 200);
    // An anonymous token lacking a scope gets 401 (logging in may help), not 403.
    let r = auth(get(format!("/v2/{private}/manifests/v1")), &anon).send().await;
    assert!(assert_challenge(&r).contains("error=\"insufficient_scope\""));
    let r = token_post(&[("grant_type", "refresh_token"), ("refresh_token", &anon), ("service", "berth")]).await;
    assert_oci_error(&r, 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn scope_escalation_is_refused() {
    let a = name("team", "esc-a");
    let b = name("team", "esc-b");
    let elsewhere = name("other", "esc");
    let alice = login("alice", ALICE_PW, &[&format!("repository:{a}:pull,push")]).await;
    push_as(&alice, &a, "v1").await;
    // bob may only pull team/**: asking for push yields a pull-only token...
    let (bob, claims) = token_of(&token_get(Some(("bob", BOB_PW)), &[&format!("repository:{a}:push,pull")]).await);
    assert_eq!(claims["access"], json!([{"type": "repository", "name": a, "actions": ["pull"]}]));
    assert_status(&auth(get(format!("/v2/{a}/manifests/v1")), &bob).send().await, 200);
    // ...and pushing with it is denied outright.
    let r = auth(post(format!("/v2/{a}/blobs/uploads/")), &bob).send().await;
    assert_oci_error(&r, 403, "DENIED");
    let r = auth(put(format!("/v2/{a}/manifests/v2")), &bob).header("content-type", OCI_MANIFEST).body("{}").send().await;
    assert_oci_error(&r, 403, "DENIED");
    // A token for repository A used on B: B is allowed to bob, so 401 asking for B's scope.
    let r = auth(get(format!("/v2/{b}/tags/list")), &bob).send().await;
    let c = assert_challenge(&r);
    assert!(c.contains(&format!("scope=\"repository:{b}:pull\"")) && c.contains("insufficient_scope"), "{c}");
    // ...and on a repository bob may never read: 403.
    assert_oci_error(&auth(get(format!("/v2/{elsewhere}/tags/list")), &bob).send().await, 403, "DENIED");
    // A hand-made token claiming more than granted cannot be forged without the key: one
    // signed by an unknown key with bob as subject and push access is refused.
    let rogue = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let forged = es256(&rogue, header("new"), berth_claims("user:bob", pull_push(&a)));
    assert_challenge(&auth(post(format!("/v2/{a}/blobs/uploads/")), &forged).send().await);
}

#[tokio::test]
async fn catalog_needs_the_catalog_scope() {
    env();
    let (alice, claims) = token_of(&token_get(Some(("alice", ALICE_PW)), &["registry:catalog:*"]).await);
    assert_eq!(claims["access"], json!([]));
    assert_oci_error(&auth(get("/v2/_catalog"), &alice).send().await, 403, "DENIED");
    let c = assert_challenge(&get("/v2/_catalog").send().await);
    assert!(c.contains("scope=\"registry:catalog:*\""), "{c}");
    let root = login("root", ROOT_PW, &["registry:catalog:*"]).await;
    assert_status(&auth(get("/v2/_catalog"), &root).send().await, 200);
}

/// Every name `/v2/_berth/repositories` lists for `token` (anonymous when None), following its
/// Links (a bounded number of pages).
async fn pullable(token: Option<&str>, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut next = Some(format!("/v2/_berth/repositories?n={n}"));
    for _ in 0..200 {
        let Some(path) = next.take() else { return names };
        let req = get(path);
        let r = match token {
            Some(t) => auth(req, t).send().await,
            None => req.send().await,
        };
        assert_status(&r, 200);
        let page: Vec<String> = serde_json::from_value(r.json()["repositories"].clone()).unwrap();
        assert!(page.len() <= n, "{}", r.describe());
        names.extend(page);
        next = r.header("link").map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_owned());
    }
    panic!("more than 200 pages of repositories");
}

#[tokio::test]
async fn the_pullable_catalog_lists_what_the_caller_may_pull() {
    let public = name("public", "listed");
    let team = name("team", "listed");
    let other = name("other", "listed");
    let alice = login("alice", ALICE_PW, &[&format!("repository:{public}:push,pull"), &format!("repository:{team}:push,pull")]).await;
    push_as(&alice, &public, "v1").await;
    push_as(&alice, &team, "v1").await;
    let root = login("root", ROOT_PW, &[&format!("repository:{other}:push,pull")]).await;
    push_as(&root, &other, "v1").await;

    // Anonymous: the full catalog is refused, the pullable one lists the public repository only.
    assert_challenge(&get("/v2/_catalog").send().await);
    let anonymous = pullable(None, 1000).await;
    assert!(anonymous.contains(&public), "{anonymous:?}");
    assert!(!anonymous.contains(&team) && !anonymous.contains(&other), "{anonymous:?}");
    // A reader of team/**: whatever the token's scopes, the policy decides what is listed.
    let bob = login("bob", BOB_PW, &[]).await;
    let listed = pullable(Some(&bob), 1000).await;
    assert!(listed.contains(&team) && !listed.contains(&other), "{listed:?}");
    // Pages of one, as the catalog pages (n and a Link with last). Other tests push meanwhile:
    // compare what this one made.
    let paged = pullable(Some(&bob), 1).await;
    assert!(paged.contains(&team) && !paged.contains(&other), "{paged:?}");
    // The admin sees every repository, as in /v2/_catalog.
    let all = pullable(Some(&root), 1000).await;
    assert!([&public, &team, &other].iter().all(|r| all.contains(r)), "{all:?}");
    // A bad token is challenged, not treated as anonymous.
    assert_challenge(&auth(get("/v2/_berth/repositories"), "not-a-token").send().await);
}

#[tokio::test]
async fn token_endpoint_flows_and_refusals() {
    let repo = name("team", "flows");
    let scope = format!("repository:{repo}:pull,push");
    // Wrong password, unknown user, malformed Basic: 401, same message for the first two.
    let wrong = token_get(Some(("alice", "not-her-password")), &[&scope]).await;
    let unknown = token_get(Some(("mallory", ALICE_PW)), &[&scope]).await;
    assert_eq!(assert_oci_error(&wrong, 401, "UNAUTHORIZED")["message"], assert_oci_error(&unknown, 401, "UNAUTHORIZED")["message"]);
    assert_oci_error(&get("/token?service=berth").header("authorization", "Basic !!!").send().await, 401, "UNAUTHORIZED");
    assert_oci_error(&get("/token?service=berth").header("authorization", "Bearer x").send().await, 401, "UNAUTHORIZED");
    // A token for another service is not issued.
    assert_oci_error(&get("/token?service=elsewhere").send().await, 400, "UNSUPPORTED");
    assert_oci_error(&token_post(&[("username", "alice")]).await, 400, "UNSUPPORTED");
    assert_oci_error(&token_post(&[("grant_type", "client_credentials")]).await, 400, "UNSUPPORTED");
    assert_oci_error(&token_post(&[("grant_type", "password"), ("username", "alice")]).await, 400, "UNSUPPORTED");
    assert_oci_error(&request("PUT", "/token").send().await, 405, "UNSUPPORTED");

    // docker login's OAuth2 flow: password grant with access_type=offline gives a refresh token.
    let r = token_post(&[("grant_type", "password"), ("username", "alice"), ("password", ALICE_PW), ("service", "berth"),
                         ("scope", &scope), ("client_id", "docker"), ("access_type", "offline")]).await;
    let (token, _) = token_of(&r);
    let refresh = r.json()["refresh_token"].as_str().expect("refresh_token").to_owned();
    assert_eq!(claims_of(&refresh)["token_use"], "refresh");
    push_as(&token, &repo, "v1").await;
    // The refresh token is no access token...
    assert_challenge(&auth(get(format!("/v2/{repo}/tags/list")), &refresh).send().await);
    // ...but buys new access tokens; an access token is no refresh token.
    let r = token_post(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("service", "berth"), ("scope", &scope)]).await;
    let (again, claims) = token_of(&r);
    assert_eq!(claims["sub"], "user:alice");
    assert_status(&auth(get(format!("/v2/{repo}/tags/list")), &again).send().await, 200);
    let r = token_post(&[("grant_type", "refresh_token"), ("refresh_token", &token), ("service", "berth")]).await;
    assert_oci_error(&r, 401, "UNAUTHORIZED");
    // GET without offline_token: no refresh token.
    assert!(token_get(Some(("alice", ALICE_PW)), &[&scope]).await.json().get("refresh_token").is_none());

    // Robot accounts log in with their generated secret.
    let ci = name("ci", "robot");
    let (robot, claims) = token_of(&token_get(Some(("builder", &env().robot_secret)), &[&format!("repository:{ci}:push,pull")]).await);
    assert_eq!(claims["sub"], "robot:builder");
    push_as(&robot, &ci, "v1").await;
    assert_oci_error(&token_get(Some(("builder", "berth_wrong")), &[]).await, 401, "UNAUTHORIZED");
}

// ---------------------------------------------------------------------------------------------
// Bad tokens: each one is a 401 with a challenge, never a 500

#[tokio::test]
async fn bad_tokens_are_refused() {
    let repo = name("team", "bad");
    let alice = login("alice", ALICE_PW, &[&format!("repository:{repo}:pull,push")]).await;
    push_as(&alice, &repo, "v1").await;
    let e = env();
    let good = berth_claims("user:alice", pull_push(&repo));
    // The test's own minting is right: a token it signs with the current key is accepted...
    let minted = es256(&e.new_key, header("new"), good.clone());
    assert_status(&auth(get(format!("/v2/{repo}/manifests/v1")), &minted).send().await, 200);
    // ...and with the previous key too (rotation: old tokens stay valid until they expire).
    let rotated = es256(&e.old_key, header("old"), good.clone());
    assert_status(&auth(get(format!("/v2/{repo}/manifests/v1")), &rotated).send().await, 200);

    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let public_point = e.new_key.verifying_key().to_encoded_point(false);
    let mut tampered = minted.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let swapped_payload = {
        let parts: Vec<&str> = minted.split('.').collect();
        let other = b64(with(json!({"sub": "user:root"})).to_string().as_bytes());
        format!("{}.{other}.{}", parts[0], parts[2])
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", format!("{}.{}.", b64(br#"{"alg":"none","kid":"new"}"#), b64(good.to_string().as_bytes()))),
        ("HS256 keyed with the public key", hs256(public_point.as_bytes(), json!({"alg": "HS256", "kid": "new"}), good.clone())),
        ("HS256 keyed with the base64 public key", hs256(b64(public_point.as_bytes()).as_bytes(), json!({"alg": "HS256", "kid": "new"}), good.clone())),
        ("bad signature", tampered),
        ("payload swapped under a valid signature", swapped_payload),
        ("signed with the wrong key for its kid", es256(&e.old_key, header("new"), good.clone())),
        ("expired", es256(&e.new_key, header("new"), with(json!({"exp": now() - 120, "iat": now() - 600, "nbf": now() - 600})))),
        ("not yet valid", es256(&e.new_key, header("new"), with(json!({"nbf": now() + 3600, "exp": now() + 7200})))),
        ("no expiry", { let mut c = good.clone(); c.as_object_mut().unwrap().remove("exp"); es256(&e.new_key, header("new"), c) }),
        ("wrong audience (replayed from another registry)", es256(&e.new_key, header("new"), with(json!({"aud": "other-registry"})))),
        ("audience as a list", es256(&e.new_key, header("new"), with(json!({"aud": ["berth"]})))),
        ("wrong issuer", es256(&e.new_key, header("new"), with(json!({"iss": "someone-else"})))),
        ("unknown kid", es256(&e.new_key, header("k9"), good.clone())),
        ("no kid", es256(&e.new_key, json!({"alg": "ES256"}), good.clone())),
        ("refresh token as access token", es256(&e.new_key, header("new"), with(json!({"token_use": "refresh"})))),
        ("an OIDC identity token", gh_token(gh_claims("berth", "refs/heads/main"))),
        ("malformed header", format!("{}.{}.{}", b64(b"{not json"), b64(good.to_string().as_bytes()), b64(b"sig"))),
        ("not base64", "!!!.???.***".into()),
        ("two parts", "abc.def".into()),
        ("empty", "".into()),
        ("oversized", format!("{}.{}.{}", b64(header("new").to_string().as_bytes()), "A".repeat(9000), b64(b"sig"))),
    ];
    for (what, token) in cases {
        let r = auth(get(format!("/v2/{repo}/manifests/v1")), &token).send().await;
        assert_eq!(r.status, 401, "{what}: expected 401, got:\n{}", r.describe());
        let c = assert_challenge(&r);
        assert!(c.contains("error=\"invalid_token\"") || what == "empty", "{what}: {c}");
        // The same token cannot push either.
        let r = auth(post(format!("/v2/{repo}/blobs/uploads/")), &token).send().await;
        assert_eq!(r.status, 401, "{what} (push): {}", r.describe());
    }
}

// ---------------------------------------------------------------------------------------------
// CI: OIDC identity token -> short-lived push token

#[tokio::test]
async fn oidc_exchange_with_a_local_issuer() {
    let repo = name("ci", "oidc");
    let scope = format!("repository:{repo}:pull,push");
    let id_token = gh_token(gh_claims("berth", "refs/heads/main"));
    // As docker login does it: username `oidc`, the identity token as password.
    let r = token_get(Some(("oidc", &id_token)), &[&scope]).await;
    let (token, claims) = token_of(&r);
    assert_eq!(claims["sub"], "oidc:gh-main");
    assert_eq!(claims["access"], pull_push(&repo));
    assert_eq!(r.json()["expires_in"], 120, "the trust policy's lifetime: minutes, not hours");
    push_as(&token, &repo, "v1").await;
    // No refresh token for CI identities, even when asked for.
    let r = token_post(&[("grant_type", "password"), ("username", "oidc"), ("password", &id_token), ("scope", &scope), ("access_type", "offline")]).await;
    assert!(token_of(&r).1["sub"] == "oidc:gh-main" && r.json().get("refresh_token").is_none());
    // RFC 8693 token exchange works the same.
    let r = token_post(&[("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", &id_token),
                         ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"), ("scope", &scope)]).await;
    assert_eq!(token_of(&r).1["access"], pull_push(&repo));
    // The policy grants ci/** only.
    let (_, claims) = token_of(&token_get(Some(("oidc", &id_token)), &["repository:team/x:pull"]).await);
    assert_eq!(claims["access"], json!([]));
    // Keys were fetched once (discovery, then JWKS) and cached.
    assert_eq!(JWKS_FETCHES.load(Ordering::SeqCst), 1);

    // GitLab-like issuer: ES256, JWKS at a configured URL (no discovery served).
    let t = now();
    let gl = es256(&env().gl_key, json!({"alg": "ES256", "kid": "gl1"}),
                   json!({"iss": gl_issuer(), "aud": ["berth", "other"], "sub": "project_path:group/app:ref_type:branch:ref:main",
                          "project_path": "group/app", "exp": t + 300, "iat": t}));
    let (_, claims) = token_of(&token_get(Some(("oidc", &gl)), &[&scope]).await);
    assert_eq!(claims["sub"], "oidc:gl");
}

#[tokio::test]
async fn bad_identity_tokens_are_refused() {
    let repo = name("ci", "oidc-bad");
    let scope = format!("repository:{repo}:pull,push");
    let good = gh_claims("berth", "refs/heads/main");
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let other_rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let gh_public = env().gh_key.to_public_key();
    let rs_header = json!({"alg": "RS256", "kid": "gh1"});
    let unauthorized: Vec<(&str, String)> = vec![
        ("wrong audience", gh_token(with(json!({"aud": "another-registry"})))),
        ("expired", gh_token(with(json!({"exp": now() - 600, "iat": now() - 1200})))),
        ("not yet valid", gh_token(with(json!({"nbf": now() + 3600, "exp": now() + 7200})))),
        ("unknown issuer", gh_token(with(json!({"iss": "https://issuer.invalid"})))),
        ("signed by another key", rs256(&other_rsa, rs_header.clone(), good.clone())),
        ("unknown kid", rs256(&env().gh_key, json!({"alg": "RS256", "kid": "nope"}), good.clone())),
        ("alg none", format!("{}.{}.", b64(br#"{"alg":"none","kid":"gh1"}"#), b64(good.to_string().as_bytes()))),
        ("HS256 keyed with the issuer's public key", hs256(&rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&gh_public).unwrap().into_vec(), json!({"alg": "HS256", "kid": "gh1"}), good.clone())),
        ("ES256 claimed for an RSA key", es256(&env().gl_key, json!({"alg": "ES256", "kid": "gh1"}), good.clone())),
        ("garbage", "not-a-jwt".into()),
        ("oversized", format!("{}.{}.x", b64(rs_header.to_string().as_bytes()), "A".repeat(20_000))),
    ];
    for (what, id_token) in unauthorized {
        let r = token_get(Some(("oidc", &id_token)), &[&scope]).await;
        assert_eq!(r.status, 401, "{what}: expected 401, got:\n{}", r.describe());
        assert_oci_error(&r, 401, "UNAUTHORIZED");
    }
    // Valid identity, but no trust policy admits it (a feature branch): 403.
    let r = token_get(Some(("oidc", &gh_token(with(json!({"ref": "refs/heads/feature/x"}))))), &[&scope]).await;
    assert_oci_error(&r, 403, "DENIED");
    let r = token_get(Some(("oidc", &gh_token(with(json!({"repository": "evil/app"}))))), &[&scope]).await;
    assert_oci_error(&r, 403, "DENIED");
    // A registry token is no identity token.
    let berth = es256(&env().new_key, header("new"), berth_claims("user:alice", pull_push(&repo)));
    assert_oci_error(&token_get(Some(("oidc", &berth)), &[&scope]).await, 401, "UNAUTHORIZED");
}

// ---------------------------------------------------------------------------------------------
// Audit log

#[tokio::test]
async fn audit_log_records_tokens_pushes_and_deletes() {
    let repo = name("team", "audit");
    let alice = login("alice", ALICE_PW, &[&format!("repository:{repo}:pull,push")]).await;
    let digest = push_as(&alice, &repo, "v1").await;
    let bob = login("bob", BOB_PW, &[&format!("repository:{repo}:delete")]).await;
    assert_oci_error(&auth(delete(format!("/v2/{repo}/manifests/{digest}")), &bob).send().await, 403, "DENIED");
    // Log lines are written asynchronously; give the server a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&env().log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("audit") && l.contains(&repo)).collect();
        let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
        let token = has(&["event=\"token\"", "subject=user:alice", "client=127.0.0.1", &format!("granted=repository:{repo}:pull,push")]);
        let push = has(&["event=\"push\"", "subject=user:alice", "reference=v1", "status=201", "client=127.0.0.1"]);
        let blob = has(&["event=\"push\"", "subject=user:alice", "reference=sha256:", "status=201"]);
        let denied = has(&["event=\"delete\"", "subject=user:bob", "status=403", "outcome=\"refused\""]);
        if token && push && blob && denied {
            assert!(!log.contains(ALICE_PW) && !log.contains(&alice), "a secret or token is in the log");
            return;
        }
        assert!(Instant::now() < deadline, "audit lines missing (token {token}, push {push}, blob {blob}, denied delete {denied}):\n{}", lines.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lines of the server log with `audit` and every one of `needles`, waited for (log lines are
/// written asynchronously). Panics with the audit lines seen when they do not come.
async fn wait_for_audit(what: &[(&str, Vec<String>)], about: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&env().log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("audit") && l.contains(about)).collect();
        let missing: Vec<&str> = what
            .iter()
            .filter(|(_, needles)| !lines.iter().any(|l| needles.iter().all(|n| l.contains(n.as_str()))))
            .map(|(label, _)| *label)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "audit lines missing: {missing:?}\n{}", lines.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn needles(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A username, a scope and a mount source with newlines and control characters used to start
/// forged lines in the text log. Every occurrence of the marker must stay inside an escaped
/// value: right after a literal backslash-n (or `%0A` in a logged URI), never at the start of
/// a line.
#[tokio::test]
async fn audit_log_values_cannot_forge_lines() {
    let marker = format!("FORGED-{}", name("x", "m").replace('/', "-"));
    let forged = format!("\r\n{marker} audit event=\"push\" subject=user:root outcome=\"ok\"\u{7}");
    let r = token_get(Some((&format!("mallory{forged}"), "pw")), &[]).await;
    assert_oci_error(&r, 401, "UNAUTHORIZED");
    // Scopes are split at spaces: this one has none.
    let r = token_get(None, &[&format!("repository:team/a\r\n{marker}\u{7}:pull")]).await;
    assert_status(&r, 200);
    let r = post(format!("/v2/team/x/blobs/uploads/?mount={}&from={}", unknown_digest(), percent_encode(&format!("team/b{forged}")))).send().await;
    assert_challenge(&r);
    let expect = |label| (label, needles(&["audit"]));
    wait_for_audit(&[expect("login"), expect("scope"), expect("mount")], &marker).await;
    // Three records written: each holds the marker once, escaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&env().log).unwrap_or_default();
        let at: Vec<usize> = log.match_indices(&marker).map(|(i, _)| i).collect();
        for &i in &at {
            let line_start = log[..i].rfind('\n').map_or(0, |n| n + 1);
            assert!(log[..i].ends_with("\\n") || log[..i].ends_with("%0A"), "marker not escaped in:\n{}", &log[line_start..(i + marker.len()).min(log.len())]);
        }
        assert!(!log.contains('\u{7}'), "a raw control character reached the log");
        let audited = log.lines().filter(|l| l.contains("audit:") && l.contains(&marker)).count();
        if audited >= 3 {
            return;
        }
        assert!(Instant::now() < deadline, "expected 3 audit records with the marker, found {audited}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Refused reads, refused upload starts and chunks, cancels, the parts endpoint and mounts
/// (with their source, and the 202 fallback as not mounted) were not in the audit log.
#[tokio::test]
async fn audit_log_records_refusals_mounts_cancels_and_parts() {
    let repo = name("team", "audit-gaps");
    let secret = name("other", "audit-src");
    let scope = format!("repository:{repo}:pull,push");
    let alice = login("alice", ALICE_PW, &[&scope]).await;
    let bob = login("bob", BOB_PW, &[&scope]).await;
    // bob may only read team/**: his upload start, his chunk and his read elsewhere are refused.
    assert_oci_error(&auth(post(format!("/v2/{repo}/blobs/uploads/")), &bob).send().await, 403, "DENIED");
    let r = auth(post(format!("/v2/{repo}/blobs/uploads/")), &alice).send().await;
    assert_status(&r, 202);
    let upload = location_path(&r.location());
    let r = auth(patch(upload.clone()), &bob).header("content-type", "application/octet-stream").body(vec![1u8; 10]).send().await;
    assert_oci_error(&r, 403, "DENIED");
    assert_challenge(&get(format!("/v2/{repo}/manifests/v1")).send().await);
    // The parts endpoint (direct uploads): audited whatever this runtime answers.
    let (path, query) = upload.split_once('?').unwrap_or((upload.as_str(), ""));
    let parts = if query.is_empty() { format!("{path}/parts") } else { format!("{path}/parts?{query}") };
    let r = auth(post(parts), &alice).send().await;
    assert_below_500(&r);
    assert!(auth(delete(upload.clone()), &alice).send().await.status < 300, "cancel");
    // Mounts: refused source (alice cannot read other/**) falls back to 202; root's mounts.
    let root = login("root", ROOT_PW, &[&format!("repository:{secret}:push,pull")]).await;
    let blob = random_bytes(50);
    let digest = sha256(&blob);
    let r = auth(post(format!("/v2/{secret}/blobs/uploads/?digest={digest}")), &root).body(blob).send().await;
    assert_status(&r, 201);
    let alice2 = login("alice", ALICE_PW, &[&scope, &format!("repository:{secret}:pull")]).await;
    let r = auth(post(format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={secret}")), &alice2).send().await;
    assert_status(&r, 202);
    let root2 = login("root", ROOT_PW, &[&scope, &format!("repository:{secret}:pull")]).await;
    let r = auth(post(format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={secret}")), &root2).send().await;
    assert_status(&r, 201);

    let from = format!("from={secret}");
    wait_for_audit(
        &[
            ("refused start", needles(&["event=\"upload-start\"", "subject=user:bob", "status=403", "outcome=\"refused\""])),
            ("refused chunk", needles(&["event=\"upload-chunk\"", "subject=user:bob", "status=403"])),
            ("refused read", needles(&["event=\"pull\"", "subject=anonymous", "reference=v1", "status=401"])),
            ("parts", needles(&["event=\"upload-parts\"", "subject=user:alice"])),
            ("cancel", needles(&["event=\"cancel\"", "subject=user:alice", "outcome=\"ok\""])),
            ("not mounted", needles(&["event=\"mount\"", "subject=user:alice", &from, "status=202", "outcome=\"not-mounted\""])),
            ("mounted", needles(&["event=\"mount\"", "subject=user:root", &from, "status=201", "outcome=\"ok\""])),
        ],
        &repo,
    )
    .await;
    // Successful reads stay out of the log.
    let log = std::fs::read_to_string(&env().log).unwrap_or_default();
    assert!(!log.lines().any(|l| l.contains(&repo) && l.contains("event=\"pull\"") && l.contains("outcome=\"ok\"")));
}

/// Password guessing had no limit. Five failures on one account (this suite's config), then
/// 429 with Retry-After for that account, decided before any password work.
#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let account = name("x", "guessed").replace('/', "-");
    for i in 0..5 {
        assert_oci_error(&token_get(Some((&account, &format!("guess-{i}"))), &[]).await, 401, "UNAUTHORIZED");
    }
    let r = token_get(Some((&account, "guess-5")), &[]).await;
    assert_oci_error(&r, 429, "TOOMANYREQUESTS");
    let wait: u64 = r.header("retry-after").expect("Retry-After").parse().expect("Retry-After in seconds");
    assert!((1..=600).contains(&wait), "Retry-After {wait}");
    // Other accounts are not locked out by it.
    assert_status(&token_get(Some(("alice", ALICE_PW)), &[]).await, 200);
}

/// Thousands of scopes per request were accepted (CPU, log volume), and tokens larger than the
/// registry accepts were issued.
#[tokio::test]
async fn token_requests_are_bounded() {
    env();
    let many: Vec<String> = (0..65).map(|i| format!("repository:public/r{i}:pull")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = token_get(None, &many).await;
    assert!(assert_oci_error(&r, 400, "UNSUPPORTED")["message"].as_str().unwrap().contains("at most 64"));
    assert_status(&token_get(None, &many[..64]).await, 200);
    let long: Vec<String> = (0..60).map(|i| format!("repository:team/{}{i}:pull,push", "n".repeat(200))).collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let r = token_get(Some(("alice", ALICE_PW)), &long).await;
    assert!(assert_oci_error(&r, 400, "UNSUPPORTED")["message"].as_str().unwrap().contains("fewer repositories"));
}
