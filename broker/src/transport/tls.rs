//! TLS settings: the rustls server configuration the TLS and secure WebSocket listeners share,
//! built from the PEM files the config names (at start, and again on SIGHUP with the password
//! and ACL files), and the name a client certificate gives for `tls_cert_as_username`.
//!
//! Provider: rustls' `ring` (TLS 1.2 and 1.3, its default cipher suites); session resumption
//! by stateless tickets (no state shared between shards but the ticket key). ALPN `mqtt` is
//! preferred, `http/1.1` accepted (browsers offer it for secure WebSocket).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Config, TlsClientAuth};

/// Checks the TLS keys against each other (files are read by [`server_config`]).
pub fn check(config: &Config) -> Result<(), (&'static str, String)> {
    let listener = config.tls_listen.is_some() || config.wss_listen.is_some();
    if listener && (config.tls_cert.is_none() || config.tls_key.is_none()) {
        return Err((
            "tls_cert",
            "tls_listen / wss_listen need tls_cert and tls_key".into(),
        ));
    }
    if config.tls_client_auth != TlsClientAuth::None && config.tls_ca.is_none() {
        return Err((
            "tls_ca",
            "tls_client_auth optional / required needs tls_ca".into(),
        ));
    }
    if config.tls_cert_as_username && config.tls_client_auth == TlsClientAuth::None {
        return Err((
            "tls_cert_as_username",
            "needs tls_client_auth optional or required".into(),
        ));
    }
    Ok(())
}

/// The server configuration, or `None` when no listener speaks TLS.
pub fn server_config(config: &Config) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    if config.tls_listen.is_none() && config.wss_listen.is_none() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        anyhow::bail!("tls_listen / wss_listen need tls_cert and tls_key");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(cert, "tls_cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("tls_key {}: {e}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let builder = match (&config.tls_ca, config.tls_client_auth) {
        (Some(ca), TlsClientAuth::Optional | TlsClientAuth::Required) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca, "tls_ca")? {
                roots
                    .add(c)
                    .map_err(|e| anyhow::anyhow!("tls_ca {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if config.tls_client_auth == TlsClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| anyhow::anyhow!("tls_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("tls_cert / tls_key: {e}"))?;
    server.alpn_protocols = vec![b"mqtt".to_vec(), b"http/1.1".to_vec()];
    server.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| anyhow::anyhow!("TLS tickets: {e}"))?;
    Ok(Some(Arc::new(server)))
}

fn certificates(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{key} {}: no certificate in the file", path.display());
    }
    Ok(certs)
}

/// The name a (verified) client certificate gives: its subject's first common name, else its
/// first DNS subject alternative name.
pub fn client_name(cert: &[u8]) -> Option<String> {
    let (_, cert, _) = der(cert)?;
    let (_, mut tbs, _) = der(cert)?;
    // version [0] (optional), serial, signature algorithm, issuer, validity, subject.
    let mut fields = Vec::with_capacity(8);
    while let Some((tag, body, rest)) = der(tbs) {
        fields.push((tag, body));
        tbs = rest;
    }
    let skip = usize::from(fields.first().is_some_and(|(t, _)| *t == 0xA0));
    let subject = fields.get(skip + 4).map(|(_, b)| *b)?;
    common_name(subject).or_else(|| {
        let ext = fields.iter().find(|(t, _)| *t == 0xA3).map(|(_, b)| *b)?;
        dns_san(ext)
    })
}

/// OID 2.5.4.3 (commonName).
const CN: &[u8] = &[0x55, 0x04, 0x03];
/// OID 2.5.29.17 (subjectAltName).
const SAN: &[u8] = &[0x55, 0x1D, 0x11];

fn common_name(mut name: &[u8]) -> Option<String> {
    while let Some((_, mut set, rest)) = der(name) {
        while let Some((_, attr, more)) = der(set) {
            let (tag, oid, value) = der(attr)?;
            if tag == 0x06 && oid == CN {
                let (_, text, _) = der(value)?;
                return self::name(text);
            }
            set = more;
        }
        name = rest;
    }
    None
}

fn dns_san(ext: &[u8]) -> Option<String> {
    let (_, mut list, _) = der(ext)?;
    while let Some((_, one, rest)) = der(list) {
        let (_, oid, mut value) = der(one)?;
        if oid == SAN {
            // An optional `critical` BOOLEAN, then the OCTET STRING holding GeneralNames.
            let (mut tag, mut octets, after) = der(value)?;
            if tag == 0x01 {
                value = after;
                (tag, octets, _) = der(value)?;
            }
            if tag != 0x04 {
                return None;
            }
            let (_, mut names, _) = der(octets)?;
            while let Some((tag, name, more)) = der(names) {
                if tag == 0x82 {
                    return self::name(name);
                }
                names = more;
            }
            return None;
        }
        list = rest;
    }
    None
}

/// A usable user name: UTF-8, not empty, no control characters (a BMPString's NULs).
fn name(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    (!text.is_empty() && !text.chars().any(char::is_control)).then(|| text.to_owned())
}

/// One DER element: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len, mut rest) = rest.split_first()?;
    let len = if len & 0x80 == 0 {
        usize::from(len)
    } else {
        let n = usize::from(len & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes.iter().fold(0usize, |a, b| a << 8 | usize::from(*b))
    };
    let (body, after) = rest.split_at_checked(len)?;
    Some((tag, body, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_never_panics_on_garbage() {
        for n in 0..200u32 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let _ = client_name(&bytes);
        }
        assert_eq!(der(&[0x30, 0x82, 0xFF]), None);
        assert_eq!(
            der(&[0x04, 0x02, 1, 2, 9]),
            Some((0x04, &[1u8, 2][..], &[9u8][..]))
        );
    }
}
