//! `berth quota usage`: what each quota of a running registry holds (docs/quotas.md), read from
//! its `GET /v2/_berth/quotas`, so it works against every runtime, not only a local store.

use berth_core::policy::quota::human;

#[derive(clap::Subcommand)]
pub enum QuotaCommand {
    /// Print every quota: its usage, its limit, its repositories.
    Usage {
        /// The registry, e.g. http://127.0.0.1:5000.
        #[arg(long, env = "BERTH_URL")]
        url: String,
        /// With token auth on: a bearer token granting `registry:catalog:*` (from the token
        /// endpoint, e.g. `curl -u admin 'https://HOST/token?service=berth&scope=registry:catalog:*'`).
        #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the endpoint's JSON as it is.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: QuotaCommand) -> Result<(), String> {
    let QuotaCommand::Usage { url, token, json } = cmd;
    let endpoint = format!("{}{}", url.trim_end_matches('/'), berth_core::routes::QUOTAS_PATH);
    let mut req = reqwest::Client::new().get(&endpoint);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| format!("{endpoint}: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| format!("{endpoint}: {status}: not JSON: {e}"))?;
    if !status.is_success() {
        let reason = body["errors"][0]["message"].as_str().unwrap_or("no reason given");
        return Err(format!("{endpoint}: {status}: {reason}"));
    }
    if json {
        println!("{body}");
        return Ok(());
    }
    let quotas = body["quotas"].as_array().cloned().unwrap_or_default();
    if quotas.is_empty() {
        println!("no quotas configured");
    }
    for q in quotas {
        let (used, limit) = (q["used"].as_u64().unwrap_or(0), q["limit"].as_u64().unwrap_or(0));
        let percent = if limit == 0 { 0.0 } else { used as f64 * 100.0 / limit as f64 };
        let repos: Vec<&str> = q["repositories"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        println!(
            "{}\t{} of {} ({percent:.1}%)\t{used} of {limit} bytes\t{}",
            q["name"].as_str().unwrap_or("?"),
            human(used),
            human(limit),
            repos.join(" ")
        );
    }
    Ok(())
}
