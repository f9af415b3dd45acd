//! The htpasswd file of people and robot accounts: `user:$2y$...` lines, bcrypt only.
//!
//! Other htpasswd formats (`{SHA}`, `$apr1$`, crypt, plain text) are refused when the file is
//! loaded: they are weak or unsalted. Verification always runs bcrypt, against a dummy hash of
//! the same cost for unknown users, so response time does not tell which users exist; bcrypt
//! compares the hashes in constant time.

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};

/// The users of an htpasswd file. The hashes are secrets: `Debug` shows the users only.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    users: HashMap<String, SecretString>,
    /// A hash of the highest cost in the file, verified for unknown users.
    dummy: SecretString,
}

impl Htpasswd {
    /// Parses the file's text; `#` comments and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        let mut max_cost = 4;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or_else(|| format!("line {}: expected user:hash", n + 1))?;
            if user.is_empty() {
                return Err(format!("line {}: empty user name", n + 1));
            }
            let cost = bcrypt_cost(hash).ok_or_else(|| {
                format!("line {} ({user}): only bcrypt hashes ($2y$, $2b$, $2a$) are accepted; create them with `htpasswd -B`", n + 1)
            })?;
            max_cost = max_cost.max(cost);
            if users.insert(user.to_owned(), SecretString::from(hash)).is_some() {
                return Err(format!("line {}: user {user} appears twice", n + 1));
            }
        }
        let dummy = bcrypt::hash("portcullis-dummy-password", max_cost).map_err(|err| format!("bcrypt: {err}"))?;
        Ok(Htpasswd { users, dummy: SecretString::from(dummy) })
    }

    /// Whether `password` is `user`'s. Slow on purpose (bcrypt): call it off the async threads.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash.expose_secret()).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, self.dummy.expose_secret());
                false
            }
        }
    }

    /// Whether the file names `user`.
    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
}

/// The cost of a well-formed bcrypt hash.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = hash.strip_prefix("$2y$").or_else(|| hash.strip_prefix("$2b$")).or_else(|| hash.strip_prefix("$2a$"))?;
    let (cost, salt_and_hash) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok()?;
    ((4..=31).contains(&cost) && salt_and_hash.len() == 53).then_some(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_only() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let file = Htpasswd::parse(&format!("# people\nalice:{hash}\n\nci-robot:{hash}\n")).unwrap();
        assert!(file.verify("alice", "s3cret"));
        assert!(!file.verify("alice", "s3cret "));
        assert!(!file.verify("mallory", "s3cret"));
        assert!(file.has_user("ci-robot"));
        assert!(!format!("{file:?}").contains(&hash), "hashes leak through Debug");

        for bad in ["bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "bob:$apr1$x$y", "bob:plain", "bob", ":x"] {
            assert!(Htpasswd::parse(bad).is_err(), "{bad} was accepted");
        }
        let err = Htpasswd::parse("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").unwrap_err();
        assert!(err.contains("only bcrypt"), "{err}");
        assert!(Htpasswd::parse(&format!("a:{hash}\na:{hash}")).unwrap_err().contains("twice"));
    }
}
