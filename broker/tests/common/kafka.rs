//! A real Kafka-protocol broker for the tests: tansu (crates.io, installed by scripts/test.sh
//! with `cargo install tansu`), in memory, on a free port; killed on drop. And a consumer that
//! reads a topic from the beginning (partitions assigned, no group join).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::common::{accepts, free_port, scratch_dir};

/// The tansu binary: `$TANSU`, else `~/.cargo/bin/tansu`, else `tansu` on the PATH.
fn tansu_bin() -> String {
    if let Ok(t) = std::env::var("TANSU") {
        return t;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo = format!("{home}/.cargo/bin/tansu");
    if std::path::Path::new(&cargo).exists() {
        cargo
    } else {
        "tansu".into()
    }
}

pub struct Tansu {
    pub child: Child,
    pub port: u16,
    pub dir: std::path::PathBuf,
    storage: String,
}

impl Tansu {
    /// In memory (gone when killed).
    pub fn start() -> Self {
        let dir = scratch_dir("tansu");
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_on(free_port(), dir, "memory://tansu/")
    }

    /// On SQLite in its directory: what it acknowledged survives [`Tansu::restart`].
    pub fn start_sqlite() -> Self {
        let dir = scratch_dir("tansu");
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_on(free_port(), dir, "sqlite://tansu.db")
    }

    fn start_on(port: u16, dir: std::path::PathBuf, storage: &str) -> Self {
        let child = spawn(port, &dir, storage);
        Self {
            child,
            port,
            dir,
            storage: storage.to_string(),
        }
    }

    /// Starts it again (after [`Tansu::kill`]) on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port, &self.dir, &self.storage);
    }
}

/// Starts tansu on `port` in `dir` and waits until it listens.
fn spawn(port: u16, dir: &std::path::Path, storage: &str) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(tansu_bin())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", storage])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu (installed by scripts/test.sh: cargo install tansu)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !accepts(("127.0.0.1", port)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tansu did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Tansu {
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A record as read back: key, payload, headers.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `want` records of `topic` from the beginning of every partition, within `wait`.
pub fn consume(brokers: &str, topic: &str, want: usize, wait: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "ringmq-test")
        .set("enable.auto.commit", "false")
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    assert!(partitions > 0, "topic {topic} has partitions");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(m) = result else { continue };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// A record to produce: key, payload, headers.
pub type Produced = (Option<String>, Vec<u8>, Vec<(String, String)>);

/// Produces `records` (key, payload, headers) to `topic`, idempotent, acks = all; waits until
/// Kafka acknowledged every one.
pub fn produce(brokers: &str, topic: &str, records: &[Produced]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    for (key, payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = BaseRecord::to(topic).payload(payload).headers(h);
        if let Some(k) = key {
            record = record.key(k.as_bytes());
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Creates `topic` with `partitions` (replication 1); waits for Kafka's answer.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics(&topics, &options)).unwrap();
    for r in results {
        r.unwrap();
    }
}
