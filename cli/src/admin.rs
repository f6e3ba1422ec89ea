//! Admin commands: `berth key generate`, `berth user add|list|remove`, `berth robot
//! add|list|remove`. They edit the auth config file in place (comments and order kept) that
//! `berth serve --auth-config` reads; restart the server to apply. Secrets are printed once
//! (robot secrets) or read from stdin (passwords), never logged.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use berth_core::auth::{self, AuthConfig};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

#[derive(clap::Args)]
pub struct ConfigArg {
    /// The auth config file (TOML) that `berth serve --auth-config` reads; created if missing.
    #[arg(long = "config", env = "BERTH_AUTH_CONFIG", default_value = "./berth-auth.toml")]
    path: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Generate an ES256 signing key. It becomes the signing key; older keys stay listed so
    /// tokens they signed still verify until they expire (remove them after that).
    Generate {
        #[command(flatten)]
        config: ConfigArg,
        /// Key id (`kid`); default: key-<unix time>.
        #[arg(long)]
        kid: Option<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum AuthCommand {
    /// Print the auth config with its key files inlined: one self-contained text for runtimes
    /// without a filesystem (the Worker's AUTH_CONFIG secret, the Lambda function's secret
    /// named in BERTH_AUTH_CONFIG_SECRET). It holds private keys: pipe it straight into the
    /// secret store. A policies-only file (only [policies] and [webhooks]: --policy-config,
    /// the Worker's POLICY_CONFIG) is checked and printed as it is.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// As JSON, the only form the Worker reads (its bundle has no TOML parser).
        #[arg(long)]
        json: bool,
    },
}

/// `berth user …` and `berth robot …`: the same three verbs for both kinds of account.
#[derive(clap::Subcommand)]
pub enum AccountCommand {
    /// Add an account. A user's password is read from stdin (one line) and stored as an
    /// Argon2id hash; a robot gets a generated secret, printed once on stdout.
    Add {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Groups the account is in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List accounts and their groups.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove an account (its refresh tokens stop working; access tokens lapse within minutes).
    Remove {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub fn key(cmd: KeyCommand) -> Result<(), String> {
    let KeyCommand::Generate { config, kid } = cmd;
    let kid = kid.unwrap_or_else(|| format!("key-{}", unix_now()));
    if kid.is_empty() || !kid.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("kid {kid:?}: use A-Z a-z 0-9 . _ -"));
    }
    let mut doc = load(&config.path)?;
    let keys = keys_of(&mut doc)?;
    if keys.iter().any(|t| t.get("kid").and_then(Item::as_str) == Some(kid.as_str())) {
        return Err(format!("a key with kid {kid:?} exists already"));
    }
    let (private, public) = loop {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
        // A seed outside the curve order is astronomically rare; draw again if it happens.
        if let Ok(pair) = auth::key_pair_from_seed(&seed) {
            break pair;
        }
    };
    let key_file = format!("keys/{kid}.key");
    let key_path = crate::auth::relative_to(&config.path, &key_file);
    if let Some(dir) = key_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    write_private(&key_path, format!("{private}\n").as_bytes())?;
    let mut table = Table::new();
    table.insert("kid", value(kid.as_str()));
    table.insert("private_key_file", value(key_file.as_str()));
    table.insert("public_key", value(public.as_str()));
    // New key first: the first private key signs.
    let mut reordered = ArrayOfTables::new();
    reordered.push(table);
    for old in keys.iter() {
        reordered.push(old.clone());
    }
    *keys = reordered;
    save(&config.path, &doc)?;
    println!("generated key {kid} ({}); it signs from the next restart of berth serve", key_path.display());
    Ok(())
}

pub fn auth(cmd: AuthCommand) -> Result<(), String> {
    let AuthCommand::Export { config, json } = cmd;
    let doc = load(&config.path)?;
    let policies_only = doc.iter().all(|(table, _)| table == "policies" || table == "webhooks");
    let text = if policies_only { doc.to_string() } else { inline_keys(doc, &config.path)? };
    // What the serverless runtimes will do with it, checked now rather than at their start.
    let check = |text: &str| -> Result<(), String> {
        if policies_only {
            berth_core::policy::Policies::from_policy_file(text)?;
            berth_core::webhooks::Webhooks::from_settings(None, Some(text), "")?;
        } else {
            auth::Auth::parse(text)?;
        }
        Ok(())
    };
    check(&text)?;
    if json {
        let json = berth_core::config_text::toml_to_json(&text).map_err(|e| format!("{}: {e}", config.path.display()))?;
        check(&json)?;
        println!("{json}");
    } else {
        print!("{text}");
    }
    Ok(())
}

/// The auth config's text with each `private_key_file` replaced by the key itself.
fn inline_keys(mut doc: DocumentMut, path: &Path) -> Result<String, String> {
    for key in keys_of(&mut doc)?.iter_mut() {
        let Some(file) = key.get("private_key_file").and_then(Item::as_str).map(str::to_owned) else {
            continue;
        };
        let key_path = crate::auth::relative_to(path, &file);
        let secret = std::fs::read_to_string(&key_path).map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
        key.remove("private_key_file");
        key.insert("private_key", value(secret.trim()));
    }
    Ok(doc.to_string())
}

pub fn user(cmd: AccountCommand) -> Result<(), String> {
    match cmd {
        AccountCommand::Add { name, config, groups } => {
            auth::validate_name(&name)?;
            let mut doc = load(&config.path)?;
            refuse_taken(&doc, &name)?;
            let password = read_password(&name)?;
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
            let hash = auth::hash_password(&password, &salt)?;
            let mut table = Table::new();
            table.insert("name", value(name.as_str()));
            table.insert("password_hash", value(hash));
            table.insert("groups", value(Array::from_iter(groups.iter().map(String::as_str))));
            tables_of(&mut doc, "users")?.push(table);
            save(&config.path, &doc)?;
            eprintln!("added user {name}");
            Ok(())
        }
        AccountCommand::List { config } => list(&config.path, |c| c.users.iter().map(|u| (u.name.clone(), u.groups.clone())).collect()),
        AccountCommand::Remove { name, config } => remove(&config.path, "users", &name),
    }
}

pub fn robot(cmd: AccountCommand) -> Result<(), String> {
    match cmd {
        AccountCommand::Add { name, config, groups } => {
            auth::validate_name(&name)?;
            let mut doc = load(&config.path)?;
            refuse_taken(&doc, &name)?;
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
            let secret = format!("{}{}", auth::ROBOT_SECRET_PREFIX, hex::encode(raw));
            let mut table = Table::new();
            table.insert("name", value(name.as_str()));
            table.insert("secret_hash", value(auth::robot_secret_hash(&secret)));
            table.insert("groups", value(Array::from_iter(groups.iter().map(String::as_str))));
            tables_of(&mut doc, "robots")?.push(table);
            save(&config.path, &doc)?;
            eprintln!("added robot {name}; its secret (shown once, store it now):");
            println!("{secret}");
            Ok(())
        }
        AccountCommand::List { config } => list(&config.path, |c| c.robots.iter().map(|r| (r.name.clone(), r.groups.clone())).collect()),
        AccountCommand::Remove { name, config } => remove(&config.path, "robots", &name),
    }
}

fn list(path: &Path, pick: impl Fn(&AuthConfig) -> Vec<(String, Vec<String>)>) -> Result<(), String> {
    let config = AuthConfig::from_toml(&load(path)?.to_string())?;
    for (name, groups) in pick(&config) {
        println!("{name}\t{}", groups.join(","));
    }
    Ok(())
}

fn remove(path: &Path, kind: &str, name: &str) -> Result<(), String> {
    let mut doc = load(path)?;
    let tables = tables_of(&mut doc, kind)?;
    let before = tables.len();
    tables.retain(|t| t.get("name").and_then(Item::as_str) != Some(name));
    if tables.len() == before {
        return Err(format!("no {} named {name:?}", kind.trim_end_matches('s')));
    }
    save(path, &doc)?;
    eprintln!("removed {name}");
    Ok(())
}

fn refuse_taken(doc: &DocumentMut, name: &str) -> Result<(), String> {
    let config = AuthConfig::from_toml(&doc.to_string())?;
    if config.users.iter().any(|u| u.name == name) || config.robots.iter().any(|r| r.name == name) {
        return Err(format!("a user or robot named {name:?} exists already"));
    }
    Ok(())
}

fn read_password(name: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {name} (input is shown; pipe it in to avoid that): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.len() < 8 {
        return Err("the password needs at least 8 characters".into());
    }
    Ok(password)
}

fn load(path: &Path) -> Result<DocumentMut, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let doc: DocumentMut = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
    AuthConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(doc)
}

fn save(path: &Path, doc: &DocumentMut) -> Result<(), String> {
    let text = doc.to_string();
    // Never write a file berth serve would refuse.
    AuthConfig::from_toml(&text)?;
    let tmp = path.with_extension("toml.tmp");
    write_private(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

fn tables_of<'a>(doc: &'a mut DocumentMut, key: &str) -> Result<&'a mut ArrayOfTables, String> {
    doc.entry(key)
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| format!("`{key}` in the auth config must be an array of tables ([[{key}]])"))
}

fn keys_of(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables, String> {
    let token = doc
        .entry("token")
        .or_insert(Item::Table(Table::new()))
        .as_table_mut()
        .ok_or("`token` in the auth config must be a table")?;
    token
        .entry("keys")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| "`token.keys` must be an array of tables ([[token.keys]])".to_string())
}

fn write_private(path: &Path, content: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(content).and_then(|_| file.sync_all()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
