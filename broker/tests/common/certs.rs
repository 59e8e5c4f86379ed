//! Test certificates made with Debian's `openssl`: a CA, a server certificate for
//! 127.0.0.1 / localhost, client certificates (valid, expired, from another CA).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key, no passphrase (`openssl req` arguments).
const NEW_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
];

/// `openssl req` with a new key written to `NAME.key`, then `rest`.
fn request(dir: &Path, first: &[&str], name: &str, rest: &[&str]) {
    let key = format!("{name}.key");
    let mut args = first.to_vec();
    args.extend_from_slice(&NEW_KEY);
    args.push(&key);
    args.extend_from_slice(rest);
    openssl(dir, &args);
}

/// A directory of PEM files: `NAME.pem` and `NAME.key`.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    /// A CA named `ca` in a fresh directory.
    pub fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Self { dir };
        certs.ca("ca");
        certs
    }

    pub fn pem(&self, name: &str) -> String {
        self.dir
            .join(format!("{name}.pem"))
            .to_str()
            .unwrap()
            .to_owned()
    }

    pub fn key(&self, name: &str) -> String {
        self.dir
            .join(format!("{name}.key"))
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// A self-signed CA certificate `name`.
    pub fn ca(&self, name: &str) {
        let (pem, subject) = (format!("{name}.pem"), format!("/CN=ringmq test {name}"));
        let rest = ["-out", &pem, "-days", "30", "-subj", &subject];
        request(&self.dir, &["req", "-x509"], name, &rest);
    }

    /// A certificate `name` with subject CN `cn`, signed by CA `ca`, valid for `days` (a
    /// negative count: already expired); `ext` is an openssl extension line.
    pub fn issue(&self, name: &str, cn: &str, ca: &str, days: i32, ext: &str) {
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext_file), format!("{ext}\n")).unwrap();
        let (csr, subject) = (format!("{name}.csr"), format!("/CN={cn}"));
        request(
            &self.dir,
            &["req"],
            name,
            &["-out", &csr, "-subj", &subject],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                &days.to_string(),
                "-extfile",
                &ext_file,
            ],
        );
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str, ca: &str) {
        self.issue(
            name,
            "localhost",
            ca,
            30,
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        );
    }

    /// A client certificate with CN `cn`.
    pub fn client(&self, name: &str, cn: &str, ca: &str, days: i32) {
        self.issue(name, cn, ca, days, "extendedKeyUsage=clientAuth");
    }
}
