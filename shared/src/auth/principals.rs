//! Users (Argon2id password hashes) and robot accounts (generated secrets), as listed in the
//! config file. Secrets are compared through their hashes only and never logged.

use sha2::Digest as _;

use super::config::{AuthConfig, RobotConfig, UserConfig};
use super::policy::Principal;

/// The username a CI job logs in with to present an OIDC identity token as its password.
pub const OIDC_USERNAME: &str = "oidc";

/// What `berth robot add` prefixes generated secrets with, so leaked ones are easy to scan for.
pub const ROBOT_SECRET_PREFIX: &str = "berth_";

pub(crate) struct Directory {
    users: Vec<UserConfig>,
    robots: Vec<RobotConfig>,
    /// Hash checked when the user does not exist, so a wrong name costs as much as a wrong
    /// password and timing does not reveal which names exist.
    decoy: String,
}

impl Directory {
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut names: Vec<&str> = Vec::new();
        for name in config.users.iter().map(|u| &u.name).chain(config.robots.iter().map(|r| &r.name)) {
            validate_name(name)?;
            if names.contains(&name.as_str()) {
                return Err(format!("principal name {name:?} is used twice (users and robots share names)"));
            }
            names.push(name);
        }
        for user in &config.users {
            argon2::PasswordHash::new(&user.password_hash)
                .map_err(|e| format!("user {:?}: password_hash is not a PHC string: {e}", user.name))?;
        }
        for robot in &config.robots {
            if parse_sha256(&robot.secret_hash).is_none() {
                return Err(format!("robot {:?}: secret_hash must be sha256:<64 hex digits>", robot.name));
            }
        }
        let decoy = config
            .users
            .first()
            .map(|u| u.password_hash.clone())
            .unwrap_or_default();
        Ok(Directory { users: config.users.clone(), robots: config.robots.clone(), decoy })
    }

    /// Checks a username and password (or robot secret). None when either is wrong.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<Principal> {
        if let Some(robot) = self.robots.iter().find(|r| r.name == username) {
            let want = parse_sha256(&robot.secret_hash)?;
            let got: [u8; 32] = sha2::Sha256::digest(password.as_bytes()).into();
            // Comparing digests of a 256-bit random secret leaks nothing usable through timing.
            return (got == want).then(|| robot_principal(robot));
        }
        match self.users.iter().find(|u| u.name == username) {
            Some(user) => verify_password(&user.password_hash, password).then(|| user_principal(user)),
            None => {
                if !self.decoy.is_empty() {
                    let _ = verify_password(&self.decoy, password);
                }
                None
            }
        }
    }

    /// The principal a token's `sub` names, with its groups as the config has them now.
    /// A user or robot removed from the config keeps no groups.
    pub fn lookup(&self, subject: &str) -> Principal {
        if let Some(name) = subject.strip_prefix("user:") {
            if let Some(user) = self.users.iter().find(|u| u.name == name) {
                return user_principal(user);
            }
        }
        if let Some(name) = subject.strip_prefix("robot:") {
            if let Some(robot) = self.robots.iter().find(|r| r.name == name) {
                return robot_principal(robot);
            }
        }
        Principal { subject: subject.to_owned(), groups: Vec::new() }
    }

    /// Whether a user or robot of that subject still exists (refresh tokens die with it).
    pub fn exists(&self, subject: &str) -> bool {
        match (subject.strip_prefix("user:"), subject.strip_prefix("robot:")) {
            (Some(name), _) => self.users.iter().any(|u| u.name == name),
            (_, Some(name)) => self.robots.iter().any(|r| r.name == name),
            _ => false,
        }
    }
}

fn user_principal(user: &UserConfig) -> Principal {
    Principal { subject: format!("user:{}", user.name), groups: user.groups.clone() }
}

fn robot_principal(robot: &RobotConfig) -> Principal {
    Principal { subject: format!("robot:{}", robot.name), groups: robot.groups.clone() }
}

fn verify_password(phc: &str, password: &str) -> bool {
    use argon2::PasswordVerifier as _;
    match argon2::PasswordHash::new(phc) {
        Ok(hash) => argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// `sha256:<hex>` as stored for robot secrets.
pub fn robot_secret_hash(secret: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(secret.as_bytes())))
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.strip_prefix("sha256:")?).ok()?;
    bytes.try_into().ok()
}

/// Names of users and robots: short, and free of the characters that Basic auth (`:`) or the
/// principal syntax would misread.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name != OIDC_USERNAME;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "principal name {name:?}: use 1-64 of A-Z a-z 0-9 . _ - (and not {OIDC_USERNAME:?}, \
             which CI uses to log in with an OIDC token)"
        ))
    }
}

/// An Argon2id PHC string for `password` (default parameters: 19 MiB, 2 passes), with a salt
/// from the caller's RNG (the core has none).
pub fn hash_password(password: &str, salt: &[u8; 16]) -> Result<String, String> {
    use argon2::PasswordHasher as _;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_robots() {
        let hash = hash_password("s3cret", &[1; 16]).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let config = AuthConfig::from_toml(&format!(
            "[[users]]\nname = \"alice\"\npassword_hash = '{hash}'\ngroups = [\"devs\"]\n\
             [[robots]]\nname = \"builder\"\nsecret_hash = \"{}\"\n",
            robot_secret_hash("berth_robotsecret")
        ))
        .unwrap();
        let dir = Directory::new(&config).unwrap();
        let alice = dir.authenticate("alice", "s3cret").unwrap();
        assert_eq!(alice.subject, "user:alice");
        assert_eq!(alice.groups, vec!["devs".to_string()]);
        assert!(dir.authenticate("alice", "wrong").is_none());
        assert!(dir.authenticate("bob", "s3cret").is_none());
        assert_eq!(dir.authenticate("builder", "berth_robotsecret").unwrap().subject, "robot:builder");
        assert!(dir.authenticate("builder", "berth_other").is_none());
        assert!(dir.exists("user:alice") && dir.exists("robot:builder") && !dir.exists("user:builder"));
        assert!(validate_name("oidc").is_err() && validate_name("a:b").is_err() && validate_name("ok-1.x").is_ok());
    }
}
