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

    /// Starts one with `extra` settings, on a free port, in a fresh directory.
    fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir = scratch_dir("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn_with(port, &dir, extra);
        Self { child, port, dir }
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Self::spawn_with(port, dir, &[])
    }

    fn spawn_with(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
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
                return child;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not answer on port {port}");
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
            let port = free_port();
            let dir = scratch_dir("redis-cluster");
            std::fs::create_dir_all(&dir).unwrap();
            let child = Redis::spawn_with(
                port,
                &dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ],
            );
            nodes.push(Redis { child, port, dir });
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
