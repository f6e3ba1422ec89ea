//! The client side of Docker token authentication, for `berth push`: read the registry's
//! `WWW-Authenticate: Bearer realm=…,service=…` challenge, ask the realm for a token for
//! `repository:REPO:pull,push` (with Basic credentials when given: a user's password, a robot's
//! secret, or `oidc` and a CI job's identity token), and fetch a new one before it expires, so a
//! push that outlasts one token's few minutes carries on.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Asks for a new token this long before the current one expires.
const RENEW_MARGIN: Duration = Duration::from_secs(30);

pub struct TokenSource {
    http: reqwest::Client,
    realm: String,
    service: Option<String>,
    scope: String,
    credentials: Option<(String, String)>,
    current: Mutex<Option<(String, Instant)>>,
}

impl TokenSource {
    /// Probes `GET /v2/`: `None` when the registry wants no token, else where to get one.
    pub async fn discover(
        http: &reqwest::Client,
        base: &str,
        repo: &str,
        credentials: Option<(String, String)>,
    ) -> Result<Option<TokenSource>, String> {
        let resp = http.get(format!("{base}/v2/")).send().await.map_err(|e| crate::upstream::explain("reaching the registry at", &e))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .ok_or("the registry answered 401 without a WWW-Authenticate challenge")?;
        let params = bearer_params(challenge)
            .ok_or_else(|| format!("the registry asks for {challenge:?}; berth push speaks Bearer token auth"))?;
        let realm = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v.clone()).ok_or("the challenge names no realm")?;
        let service = params.into_iter().find(|(k, _)| k == "service").map(|(_, v)| v);
        let source = TokenSource {
            http: http.clone(),
            realm,
            service,
            scope: format!("repository:{repo}:pull,push"),
            credentials,
            current: Mutex::new(None),
        };
        // Fail now, with the registry's reason, rather than halfway through a push.
        source.token().await?;
        Ok(Some(source))
    }

    /// A token valid for at least [`RENEW_MARGIN`] more.
    pub async fn token(&self) -> Result<String, String> {
        let mut current = self.current.lock().await;
        if let Some((token, renew_at)) = current.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let mut query = vec![("scope", self.scope.as_str())];
        if let Some(service) = &self.service {
            query.push(("service", service.as_str()));
        }
        let url = reqwest::Url::parse_with_params(&self.realm, &query)
            .map_err(|e| format!("the challenge's realm {:?}: {e}", self.realm))?;
        let mut req = self.http.get(url);
        if let Some((user, password)) = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().await.map_err(|e| crate::upstream::explain("the token endpoint", &e))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let reason = body["errors"][0]["message"].as_str().unwrap_or("no reason given");
            return Err(format!("token endpoint {}: {status}: {reason}", self.realm));
        }
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or("the token endpoint's answer holds no token")?
            .to_owned();
        // The token spec's default lifetime is 60 s.
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(60));
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_MARGIN).max(lifetime / 2);
        *current = Some((token.clone(), renew_at));
        Ok(token)
    }
}

/// `Bearer realm="…",service="…",scope="…"` as (name, value) pairs; `None` for other schemes.
fn bearer_params(challenge: &str) -> Option<Vec<(String, String)>> {
    let (scheme, rest) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.push((name.trim().to_ascii_lowercase(), value.to_owned()));
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::bearer_params;

    #[test]
    fn challenges() {
        let p = bearer_params(r#"Bearer realm="http://r:5000/token",service="berth",scope="repository:a/b:pull,push""#).unwrap();
        assert_eq!(p[0], ("realm".into(), "http://r:5000/token".into()));
        assert_eq!(p[1], ("service".into(), "berth".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
        assert_eq!(bearer_params("bearer realm=x, service=y").unwrap()[1], ("service".into(), "y".into()));
        assert!(bearer_params(r#"Basic realm="r""#).is_none());
        assert!(bearer_params(r#"Bearer realm="unterminated"#).is_none());
    }
}
