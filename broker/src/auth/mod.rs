//! Who may connect, publish and subscribe: anonymous access, the password file
//! ([`passwd`]) and the ACL file ([`acl`]). Loaded at start and again on SIGHUP
//! ([`reload`]), shared read-only by every shard; each shard keeps its own cache of verified passwords so that argon2 (slow by
//! design) runs once per user and password per shard, not on every CONNECT.

pub mod acl;
pub mod passwd;
pub mod reload;

use std::hash::{BuildHasher, Hasher};

use net::codec::ReasonCode;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Verified passwords a shard remembers (bounded; cleared when full).
pub const VERIFIED_CACHE_MAX: usize = 10_000;

/// The loaded auth settings.
#[derive(Debug)]
pub struct Auth {
    allow_anonymous: bool,
    passwords: Option<passwd::Passwords>,
    acl: Option<acl::Acl>,
    /// The AsyncAPI document's rules, if one is configured.
    pub api: Option<crate::asyncapi::Api>,
    /// User names come from verified client certificates (`tls_cert_as_username`): without
    /// a password file, a client without one may not give a user name.
    names_from_certificates: bool,
    /// The TLS listeners' server configuration (certificates are reloaded with the rest).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Per-process random salt for the verified-password cache digests.
    salt: [u64; 2],
}

/// A shard's cache of (user, password digest) pairs argon2 has accepted.
#[derive(Debug, Default)]
pub struct VerifiedCache {
    entries: FxHashMap<String, [u8; 32]>,
}

impl Auth {
    /// Reads the password and ACL files the config names.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let passwords = config
            .password_file
            .as_deref()
            .map(passwd::Passwords::load)
            .transpose()?;
        let acl = config.acl_file.as_deref().map(acl::Acl::load).transpose()?;
        let api = config
            .asyncapi
            .as_deref()
            .map(|p| crate::asyncapi::Api::load(p, config.asyncapi_strict))
            .transpose()?;
        let tls = crate::transport::tls::server_config(config)?;
        let random = std::collections::hash_map::RandomState::new();
        let mut a = random.build_hasher();
        a.write_u64(1);
        let mut b = random.build_hasher();
        b.write_u64(2);
        Ok(Self {
            allow_anonymous: config.allow_anonymous,
            passwords,
            acl,
            api,
            names_from_certificates: config.tls_cert_as_username,
            tls,
            salt: [a.finish(), b.finish()],
        })
    }

    /// What is loaded, for a log line: users and ACL rules.
    pub fn describe(&self) -> String {
        format!(
            "{} users, {} ACL rules, anonymous {}{}",
            self.passwords.as_ref().map_or(0, |p| p.len()),
            self.acl.as_ref().map_or(0, |a| a.len()),
            if self.allow_anonymous {
                "allowed"
            } else {
                "refused"
            },
            self.api
                .as_ref()
                .map(|a| format!(", {}", a.describe()))
                .unwrap_or_default()
        ) + if self.tls.is_some() {
            ", TLS certificate loaded"
        } else {
            ""
        }
    }

    /// Everyone may do everything (the embedded default).
    pub fn open() -> Self {
        Self {
            allow_anonymous: true,
            passwords: None,
            acl: None,
            api: None,
            names_from_certificates: false,
            tls: None,
            salt: [0, 0],
        }
    }

    fn digest(&self, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt[0].to_le_bytes());
        h.update(self.salt[1].to_le_bytes());
        h.update(password);
        h.finalize().into()
    }

    /// Checks a CONNECT's credentials: `Err(0x87)` for an anonymous client when anonymous
    /// access is off, `Err(0x86)` for an unknown user or a wrong password. `certified`: the
    /// user name is a verified client certificate's (no password needed).
    pub fn check_connect(
        &self,
        user: Option<&str>,
        password: Option<&[u8]>,
        certified: bool,
        cache: &mut VerifiedCache,
    ) -> Result<(), ReasonCode> {
        if certified {
            return Ok(());
        }
        let Some(user) = user else {
            return if self.allow_anonymous {
                Ok(())
            } else {
                Err(ReasonCode::NOT_AUTHORIZED)
            };
        };
        let Some(passwords) = &self.passwords else {
            // Unchecked names, unless names are what certificates vouch for.
            return if self.names_from_certificates {
                Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            } else {
                Ok(())
            };
        };
        let (Some(hash), Some(password)) = (passwords.hash_of(user), password) else {
            return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        };
        let digest = self.digest(password);
        if cache.entries.get(user) == Some(&digest) {
            return Ok(());
        }
        if !passwd::verify(hash, password) {
            return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        if cache.entries.len() >= VERIFIED_CACHE_MAX {
            cache.entries.clear();
        }
        cache.entries.insert(user.to_string(), digest);
        Ok(())
    }

    /// True when an ACL file is in force.
    pub fn has_acl(&self) -> bool {
        self.acl.is_some()
    }

    /// May this client publish to `topic`?
    pub fn can_publish(&self, user: Option<&str>, client: &str, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.can_publish(user, client, topic))
    }

    /// May this client subscribe to `filter` (shared subscriptions are checked on their
    /// inner filter)?
    pub fn can_subscribe(&self, user: Option<&str>, client: &str, filter: &str) -> bool {
        let inner = net::topic::split_shared(filter).map_or(filter, |(_, inner)| inner);
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.can_subscribe(user, client, inner))
    }
}
