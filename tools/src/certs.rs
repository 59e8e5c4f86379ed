//! A throwaway certificate authority and a server certificate for 127.0.0.1, made with
//! Debian's `openssl` for the TLS cells of `ringmq-bench compare` (a P-256 key each, valid
//! 30 days, in a scratch directory the run removes).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The files a TLS broker and its clients need.
#[derive(Debug, Clone)]
pub struct ServerCerts {
    /// The CA certificate the clients trust (PEM).
    pub ca: PathBuf,
    /// The server's certificate, for 127.0.0.1 and localhost (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("run openssl (apt install openssl)")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A new P-256 key written to `key`, no passphrase (`openssl req` arguments).
fn new_key(key: &str) -> [&str; 7] {
    [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
    ]
}

/// Makes `ca.pem` and `server.pem` / `server.key` in `dir` (created).
pub fn make(dir: &Path) -> anyhow::Result<ServerCerts> {
    std::fs::create_dir_all(dir)?;
    let mut ca = vec!["req", "-x509"];
    ca.extend(new_key("ca.key"));
    ca.extend([
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=ringmq-bench CA",
    ]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req"];
    csr.extend(new_key("server.key"));
    csr.extend(["-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "30",
            "-extfile",
            "server.ext",
        ],
    )?;
    // mosquitto reads the key after dropping root for its own user: readable by all (a
    // throwaway key in the run's own directory).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o644),
        )?;
    }
    Ok(ServerCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files load as the generator's client configuration would (a CA it can trust).
    #[test]
    fn makes_a_ca_the_generator_trusts() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("ringmq-bench-certs-{}", std::process::id()));
        let certs = make(&dir)?;
        let config = crate::loadgen::layers::Layers::tls_config(&certs.ca, false);
        let key = std::fs::read_to_string(&certs.key)?;
        std::fs::remove_dir_all(&dir)?;
        config?;
        assert!(key.contains("PRIVATE KEY"), "{key}");
        Ok(())
    }
}
