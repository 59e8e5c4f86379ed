//! A real redis-server (Debian's, installed by scripts/test.sh) on a free loopback port, with
//! `appendonly yes` and `appendfsync always` in its own directory; killed on drop.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{free_port, scratch_dir};

/// A redis-server process.
pub struct Redis {
    pub child: Child,
    pub port: u16,
    pub dir: std::path::PathBuf,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one whose default user needs `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(&["--requirepass", password])
    }

    /// Starts one that also speaks TLS, with the certificate `redis` of the directory `certs`
    /// signed by its CA `ca`; clients must present a certificate of that CA
    /// (`tls-auth-clients yes`, Redis's default). The plain port stays for `cli`. Returns the
    /// TLS port too (a fresh one for each try).
    pub fn start_tls(certs: &std::path::Path) -> (Self, u16) {
        let file = |name: &str| certs.join(name).to_str().unwrap().to_string();
        let tls_port = std::cell::Cell::new(0);
        let redis = Self::start_in("redis-tls", |_| {
            tls_port.set(free_port());
            vec![
                "--tls-port".into(),
                tls_port.get().to_string(),
                "--tls-cert-file".into(),
                file("redis.pem"),
                "--tls-key-file".into(),
                file("redis.key"),
                "--tls-ca-cert-file".into(),
                file("ca.pem"),
            ]
        });
        (redis, tls_port.get())
    }

    /// Starts one with `extra` settings, on a free port, in a fresh directory.
    fn start_with(extra: &[&str]) -> Self {
        Self::start_in("redis", |_| extra.iter().map(|s| s.to_string()).collect())
    }

    /// Starts one in a fresh directory named after `what`, with the settings `extra` gives for
    /// its port. A free port can be taken by another test between the probe and redis-server's
    /// bind, so a server that does not come up is tried again on fresh ports (five times).
    fn start_in(what: &str, extra: impl Fn(u16) -> Vec<String>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = scratch_dir(what);
            std::fs::create_dir_all(&dir).unwrap();
            let args = extra(port);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Some(child) = Self::try_spawn(port, &dir, &args) {
                return Self { child, port, dir };
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("redis-server did not come up on five free ports");
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Self::try_spawn(port, dir, &[])
            .unwrap_or_else(|| panic!("redis-server did not answer on port {port}"))
    }

    /// Starts redis-server on `port`; `None` (and the process reaped) when it does not answer
    /// within ten seconds.
    fn try_spawn(port: u16, dir: &std::path::Path, extra: &[&str]) -> Option<Child> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/test.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Up: PONG, or NOAUTH when it has a password.
            let answer = Self::cli_at(port, &["PING"]);
            if answer.trim() == "PONG" || answer.starts_with("NOAUTH") {
                return Some(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None; // exited: the port (or the bus port) was taken
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (what was fsynced to the append-only file stays).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: connections stay open, nothing answers.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    /// SIGCONT.
    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.dir);
    }

    /// One redis-cli command; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        Self::cli_at(self.port, args)
    }

    fn cli_at(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An integer reply (`PTTL`, `HLEN`, ...).
    pub fn int(&self, args: &[&str]) -> i64 {
        self.cli(args).trim().parse().unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas), each a redis-server with `appendonly yes`
/// and `appendfsync always` on a free port; created with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The cluster bus port is named: the default (port + 10000) can be past 65535 or
            // in use when the port is an ephemeral one.
            nodes.push(Redis::start_in("redis-cluster", |_| {
                let bus = free_port().to_string();
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ]
                .into_iter()
                .map(String::from)
                .chain(["--cluster-port".to_string(), bus])
                .collect()
            }));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    /// `redis://` of the first node (the seed).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Keys on each master.
    pub fn key_counts(&self) -> Vec<i64> {
        self.nodes.iter().map(|n| n.int(&["DBSIZE"])).collect()
    }

    /// Moves `slots` slots from the first master to the second (`redis-cli --cluster reshard`).
    pub fn reshard(&self, slots: u32) {
        let id = |n: &Redis| n.cli(&["CLUSTER", "MYID"]).trim().to_string();
        let out = Command::new("redis-cli")
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", self.nodes[0].port),
            ])
            .args(["--cluster-from", &id(&self.nodes[0])])
            .args(["--cluster-to", &id(&self.nodes[1])])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
