//! Real client libraries against the real binary with 2 shards, publisher and subscriber
//! homed on different shards: rumqttc (MQTT 3.1.1 and 5), mosquitto_pub/sub, paho-mqtt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{id_on, Broker};

fn wait_until(deadline: Instant, what: &str) {
    assert!(Instant::now() < deadline, "timed out waiting for {what}");
}

#[test]
fn rumqttc_v4_cross_shard_qos1_and_qos2_in_order() {
    use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
    let broker = Broker::start(&[]);
    let mut sub_opts = MqttOptions::new(id_on("rsub", 0), "127.0.0.1", broker.port());
    sub_opts.set_keep_alive(Duration::from_secs(30));
    let (sub, mut sub_conn) = Client::new(sub_opts, 100);
    sub.subscribe("rumq/#", QoS::ExactlyOnce).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        wait_until(deadline, "SUBACK");
        if let Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) =
            sub_conn.recv_timeout(Duration::from_secs(5))
        {
            break;
        }
    }
    let (publ, mut pub_conn) = Client::new(
        MqttOptions::new(id_on("rpub", 1), "127.0.0.1", broker.port()),
        100,
    );
    // The publisher's event loop runs on its own thread so publish() never waits on it.
    let pump = std::thread::spawn(move || {
        let mut acked = 0;
        for event in pub_conn.iter() {
            match event {
                Ok(Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_))) => {
                    acked += 1;
                    if acked == 200 {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    for i in 0..200u32 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publ.publish("rumq/t", qos, false, i.to_be_bytes().to_vec())
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 200 {
        wait_until(deadline, "200 messages");
        if let Ok(Ok(Event::Incoming(Incoming::Publish(p)))) =
            sub_conn.recv_timeout(Duration::from_secs(5))
        {
            got.push(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
        }
    }
    pump.join().unwrap();
    assert_eq!(
        got,
        (0..200).collect::<Vec<_>>(),
        "every message, once, in publish order"
    );
}

#[test]
fn rumqttc_v5_cross_shard_with_properties() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Event, MqttOptions};
    let broker = Broker::start(&[]);
    let (sub, mut sub_conn) = Client::new(
        MqttOptions::new(id_on("r5sub", 1), "127.0.0.1", broker.port()),
        100,
    );
    sub.subscribe("r5/+", QoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        wait_until(deadline, "SUBACK");
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
            sub_conn.recv_timeout(Duration::from_secs(5))
        {
            break;
        }
    }
    let (publ, mut pub_conn) = Client::new(
        MqttOptions::new(id_on("r5pub", 0), "127.0.0.1", broker.port()),
        100,
    );
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    publ.publish_with_properties("r5/a", QoS::AtLeastOnce, false, "hello v5", props)
        .unwrap();
    let pump = std::thread::spawn(move || {
        for event in pub_conn.iter().take(20) {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = event {
                break;
            }
        }
    });
    loop {
        wait_until(deadline, "the v5 message");
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            sub_conn.recv_timeout(Duration::from_secs(5))
        {
            assert_eq!(&p.payload[..], b"hello v5");
            let props = p.properties.unwrap();
            assert_eq!(props.content_type.as_deref(), Some("text/plain"));
            assert_eq!(
                props.user_properties,
                vec![("k".to_string(), "v".to_string())]
            );
            break;
        }
    }
    pump.join().unwrap();
}

#[test]
fn mosquitto_pub_and_sub_cross_shard() {
    let broker = Broker::start(&[]);
    let port = broker.port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-i",
                &id_on("msub", 0),
                "-t",
                "mosq/#",
                "-q",
                "2",
                "-C",
                "3",
                "-W",
                "10",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (installed by scripts/test.sh)");
        std::thread::sleep(Duration::from_millis(300));
        for (i, qos) in ["0", "1", "2"].iter().enumerate() {
            let status = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    version,
                    "-i",
                    &id_on("mpub", 1),
                    "-t",
                    &format!("mosq/{i}"),
                    "-q",
                    qos,
                    "-m",
                    &format!("msg{i}"),
                ])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let out = sub.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_sub {version}: {:?}",
            out.status
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "msg0\nmsg1\nmsg2\n");
    }
}

#[test]
fn paho_mqtt_v311_and_v5() {
    let broker = Broker::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_p2p.py");
    for version in ["v311", "v5"] {
        let status = Command::new("python3")
            .args([
                script,
                &broker.port().to_string(),
                version,
                &id_on("paho-sub", 0),
                &id_on("paho-pub", 1),
            ])
            .status()
            .expect("python3 with paho-mqtt (installed by scripts/test.sh)");
        assert!(status.success(), "paho {version}");
    }
}
