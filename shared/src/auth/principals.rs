//! Users (Argon2id password hashes) and robot accounts (generated secrets), as listed in the
//! config file. Secrets are compared through their hashes only and never logged.

use sha2::Digest as _;

use super::config::{AuthConfig, RobotConfig, UserConfig};
use super::policy::Principal;

/// The username a CI job logs in with to present an OIDC identity token as its password.
pub const OIDC_USERNAME: &str = "oidc";

/// What `berth robot add` prefixes generated secrets with, so leaked ones are easy to scan for.
pub const ROBOT_SECRET_PREFIX: &str = "berth_";

/// The outcome of [`Directory::check`].
pub(crate) enum Check {
    /// Decided without Argon2 (a robot's right secret; or no users at all).
    Done(Option<Principal>),
    /// Verify `password` against the PHC string; on a match the login is `principal` (None
    /// for a decoy, which fails whatever the password).
    Argon2 { phc: String, password: String, principal: Option<Principal> },
}

impl Check {
    /// Runs the check inline or on the adapter's pool.
    pub async fn finish(self, pool: Option<&dyn super::cpu::CpuPool>) -> Option<Principal> {
        match self {
            Check::Done(who) => who,
            Check::Argon2 { phc, password, principal } => {
                let matched = super::cpu::run(pool, Box::new(move || verify_password(&phc, &password))).await;
                principal.filter(|_| matched)
            }
        }
    }
}

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

    /// Checks a username and password (or robot secret) as far as it can without Argon2:
    /// what is left is an [`Check::Argon2`] job for the caller to run (off the async workers
    /// where the runtime can). Every failed check costs the same one Argon2 verification,
    /// whether the name is a user, a robot or unknown, so timing tells no names apart.
    pub fn check(&self, username: &str, password: &str) -> Check {
        if let Some(robot) = self.robots.iter().find(|r| r.name == username) {
            let got: [u8; 32] = sha2::Sha256::digest(password.as_bytes()).into();
            // Comparing digests of a 256-bit random secret leaks nothing usable through timing.
            if parse_sha256(&robot.secret_hash) == Some(got) {
                return Check::Done(Some(robot_principal(robot)));
            }
            return self.decoy(password);
        }
        match self.users.iter().find(|u| u.name == username) {
            Some(user) => Check::Argon2 {
                phc: user.password_hash.clone(),
                password: password.to_owned(),
                principal: Some(user_principal(user)),
            },
            None => self.decoy(password),
        }
    }

    /// A check that fails, after the same work as a real one.
    fn decoy(&self, password: &str) -> Check {
        if self.decoy.is_empty() {
            // No users: no check anywhere costs Argon2, so all cost the same.
            return Check::Done(None);
        }
        Check::Argon2 { phc: self.decoy.clone(), password: password.to_owned(), principal: None }
    }

    /// A fingerprint of the account's credential (its password or secret hash), which refresh
    /// tokens carry: a password reset, a new robot secret or a re-created account changes it,
    /// and so revokes every refresh token issued before. None: no such account.
    /// It is a salted hash of a hash: it tells the token's holder nothing about the password.
    pub fn credential_fingerprint(&self, subject: &str) -> Option<String> {
        let hash = match (subject.strip_prefix("user:"), subject.strip_prefix("robot:")) {
            (Some(name), _) => &self.users.iter().find(|u| u.name == name)?.password_hash,
            (_, Some(name)) => &self.robots.iter().find(|r| r.name == name)?.secret_hash,
            _ => return None,
        };
        let mut h = sha2::Sha256::new();
        h.update(b"berth refresh credential\0");
        h.update(subject.as_bytes());
        h.update([0]);
        h.update(hash.as_bytes());
        Some(hex::encode(&h.finalize()[..16]))
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
}

fn user_principal(user: &UserConfig) -> Principal {
    Principal { subject: format!("user:{}", user.name), groups: user.groups.clone() }
}

fn robot_principal(robot: &RobotConfig) -> Principal {
    Principal { subject: format!("robot:{}", robot.name), groups: robot.groups.clone() }
}

pub(crate) fn verify_password(phc: &str, password: &str) -> bool {
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

    fn directory(alice_password: &str, salt: u8, robot_secret: &str) -> Directory {
        let hash = hash_password(alice_password, &[salt; 16]).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let config = AuthConfig::from_toml(&format!(
            "[[users]]\nname = \"alice\"\npassword_hash = '{hash}'\ngroups = [\"devs\"]\n\
             [[robots]]\nname = \"builder\"\nsecret_hash = \"{}\"\n",
            robot_secret_hash(robot_secret)
        ))
        .unwrap();
        Directory::new(&config).unwrap()
    }

    #[tokio::test]
    async fn users_and_robots() {
        let dir = directory("s3cret", 1, "berth_robotsecret");
        let login = |u: &str, p: &str| dir.check(u, p).finish(None);
        let alice = login("alice", "s3cret").await.unwrap();
        assert_eq!(alice.subject, "user:alice");
        assert_eq!(alice.groups, vec!["devs".to_string()]);
        assert!(login("alice", "wrong").await.is_none());
        assert!(login("bob", "s3cret").await.is_none());
        assert_eq!(login("builder", "berth_robotsecret").await.unwrap().subject, "robot:builder");
        assert!(login("builder", "berth_other").await.is_none());
        assert!(validate_name("oidc").is_err() && validate_name("a:b").is_err() && validate_name("ok-1.x").is_ok());
    }

    /// A robot's wrong secret used to fail without Argon2, unlike a user's or an unknown name:
    /// timing told robot names apart. Every failure is now one Argon2 verification.
    #[test]
    fn every_failed_check_costs_one_argon2() {
        let dir = directory("s3cret", 1, "berth_robotsecret");
        for (user, password) in [("alice", "wrong"), ("nobody", "x"), ("builder", "berth_other"), ("builder", "")] {
            assert!(matches!(dir.check(user, password), Check::Argon2 { .. }), "{user}");
        }
        assert!(matches!(dir.check("builder", "berth_robotsecret"), Check::Done(Some(_))));
    }

    #[test]
    fn credential_fingerprints_change_with_the_credential() {
        let before = directory("s3cret", 1, "berth_one");
        let same = directory("s3cret", 1, "berth_one");
        // A reset (or a re-created account) hashes with a new salt; a new robot secret.
        let after = directory("s3cret", 2, "berth_two");
        for who in ["user:alice", "robot:builder"] {
            let fp = before.credential_fingerprint(who).unwrap();
            assert_eq!(Some(&fp), same.credential_fingerprint(who).as_ref());
            assert_ne!(Some(&fp), after.credential_fingerprint(who).as_ref());
        }
        assert_eq!(before.credential_fingerprint("user:bob"), None);
        assert_eq!(before.credential_fingerprint("oidc:x"), None);
    }
}
