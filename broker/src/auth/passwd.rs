//! The password file: one `user:hash` line per user, the hash in argon2id PHC form
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`). `ringmq passwd FILE USER` adds or replaces a
//! user; the broker reads the file once at start.

use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use password_hash::rand_core::OsRng;
use rustc_hash::FxHashMap;

/// Users and their password hashes.
#[derive(Debug, Default)]
pub struct Passwords {
    users: FxHashMap<String, String>,
}

fn parse_line(line: &str) -> Option<(&str, &str)> {
    let (user, hash) = line.split_once(':')?;
    (!user.is_empty() && hash.starts_with("$argon2")).then_some((user, hash))
}

impl Passwords {
    /// Reads a password file; a bad line is an error naming the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("password file {}: {e}", path.display()))?;
        let mut users = FxHashMap::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = parse_line(line) else {
                anyhow::bail!(
                    "password file {} line {}: expected `user:$argon2id$...`",
                    path.display(),
                    n + 1
                );
            };
            PasswordHash::new(hash).map_err(|e| {
                anyhow::anyhow!("password file {} line {}: {e}", path.display(), n + 1)
            })?;
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Self { users })
    }

    /// Users known.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file has no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The stored hash of `user`.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }
}

/// An argon2id hash of `password` with a fresh random salt, in PHC form.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

/// True when `password` matches the PHC hash `phc` (slow by design: tens of milliseconds).
pub fn verify(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password, &h).is_ok())
        .unwrap_or(false)
}

/// Adds or replaces `user` in the password file at `path` (created if missing), keeping the
/// other lines; written to a temporary file and renamed over the old one.
pub fn add_user(path: &Path, user: &str, password: &str) -> anyhow::Result<()> {
    if user.is_empty() || user.contains([':', '\n', '\r']) {
        anyhow::bail!("a user name must be non-empty and contain no ':' or line break");
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("password file {}: {e}", path.display()),
    };
    let mut out = String::new();
    for line in existing.lines() {
        if parse_line(line.trim()).is_some_and(|(u, _)| u == user) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("{user}:{}\n", hash(password)?));
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_replace_load_verify() {
        let dir = std::env::temp_dir().join(format!("ringmq-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("passwd");
        add_user(&file, "alice", "one").unwrap();
        add_user(&file, "bob", "two").unwrap();
        add_user(&file, "alice", "three").unwrap();
        let p = Passwords::load(&file).unwrap();
        assert_eq!(p.len(), 2);
        assert!(verify(p.hash_of("alice").unwrap(), b"three"));
        assert!(!verify(p.hash_of("alice").unwrap(), b"one"));
        assert!(verify(p.hash_of("bob").unwrap(), b"two"));
        std::fs::write(&file, "alice:plaintext\n").unwrap();
        let e = Passwords::load(&file).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(add_user(&file, "a:b", "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
