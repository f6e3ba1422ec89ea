//! The configs the serverless runtimes are given as text (the Worker's `AUTH_CONFIG` and
//! `POLICY_CONFIG`, the Lambda function's auth config and `BERTH_POLICY_CONFIG`): JSON, as
//! `berth auth export --json` prints it, or TOML, as the files are written. The Worker is built
//! without a TOML parser (issue 19: `toml` and its parts were 11 % of the request Worker's code, 48.6 KB of its gzip) and reads JSON only;
//! every other runtime reads both.

use serde::de::DeserializeOwned;

/// A JSON config is an object; no TOML document starts with `{`.
fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// The config in `text`; errors start with `what`.
pub(crate) fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, String> {
    if is_json(text) {
        return serde_json::from_str(text).map_err(|e| format!("{what}: {e}"));
    }
    from_toml(text, what)
}

#[cfg(not(target_arch = "wasm32"))]
fn from_toml<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| format!("{what}: {e}"))
}

#[cfg(target_arch = "wasm32")]
fn from_toml<T: DeserializeOwned>(_text: &str, what: &str) -> Result<T, String> {
    Err(format!(
        "{what}: not JSON; the Worker reads its configs as JSON, as `berth auth export --json --config FILE` \
         prints them"
    ))
}

/// A TOML config as the JSON the Worker reads: the same tables and values (`berth auth export
/// --json`). Date-times, which no config takes, become objects that every config refuses.
#[cfg(not(target_arch = "wasm32"))]
pub fn toml_to_json(text: &str) -> Result<String, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    serde_json::to_string(&table).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn json_and_toml_name_the_same_tables() {
        let toml = "[policies]\n[[webhooks.endpoints]]\nname = \"a\"\n";
        let json = toml_to_json(toml).unwrap();
        assert_eq!(json, r#"{"policies":{},"webhooks":{"endpoints":[{"name":"a"}]}}"#);
        let keys = |t: &str| parse::<BTreeMap<String, serde::de::IgnoredAny>>(t, "x").unwrap().into_keys().collect::<Vec<_>>();
        assert_eq!(keys(toml), keys(&json));
        assert_eq!(keys(&format!("  \n{json}")), ["policies", "webhooks"]);
        let error = parse::<BTreeMap<String, serde::de::IgnoredAny>>("{\"a\": ", "policy config").unwrap_err();
        assert!(error.starts_with("policy config: EOF while parsing"), "{error}");
    }
}
