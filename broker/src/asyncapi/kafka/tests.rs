//! The Kafka rules AsyncAPI bindings give: both versions alike, errors naming pointers, the
//! merge with explicit rules, overlapping filters.

use super::*;

const DOC_3: &str = r#"
asyncapi: 3.0.0
info: { title: Fleet, version: 1.0.0 }
channels:
  telemetry:
    address: devices/{deviceId}/telemetry
    parameters: { deviceId: {} }
    bindings:
      kafka: { topic: telemetry, partitions: 4 }
  events:
    address: sites/{site}/events/{id}
    parameters: { site: {}, id: {} }
    bindings:
      kafka: { topic: 'events-{site}', x-key: id }
  commands:
    address: devices/{deviceId}/commands/{kind}
    parameters: { deviceId: {}, kind: {} }
    bindings:
      kafka: { topic: commands, x-key: deviceId }
  status:
    address: fleet/status
operations:
  sendReading: { action: receive, channel: { $ref: '#/channels/telemetry' } }
  sendEvent: { action: receive, channel: { $ref: '#/channels/events' } }
  sendCommand:
    action: send
    channel: { $ref: '#/channels/commands' }
    bindings:
      kafka: { groupId: { type: string, const: cmd } }
      mqtt: { qos: 2 }
"#;

const DOC_2: &str = r#"
asyncapi: 2.6.0
info: { title: Fleet, version: 1.0.0 }
channels:
  devices/{deviceId}/telemetry:
    parameters: { deviceId: { schema: { type: string } } }
    bindings:
      kafka: { topic: telemetry, partitions: 4 }
    publish: { message: { payload: {} } }
  sites/{site}/events/{id}:
    parameters: { site: { schema: { type: string } }, id: { schema: { type: string } } }
    bindings:
      kafka: { topic: 'events-{site}', x-key: id }
    publish: { message: { payload: {} } }
  devices/{deviceId}/commands/{kind}:
    parameters: { deviceId: { schema: { type: string } }, kind: { schema: { type: string } } }
    bindings:
      kafka: { topic: commands, x-key: deviceId }
    subscribe:
      bindings:
        kafka: { groupId: { type: string, enum: [cmd] } }
        mqtt: { qos: 2 }
      message: { payload: {} }
  fleet/status: {}
"#;

fn mapping(text: &str) -> Result<Mapping, String> {
    Mapping::from_spec(&doc::parse(text)?)
}

fn rules(m: &Mapping) -> (Vec<ToKafka>, Vec<ToMqtt>) {
    let mut k: Vec<ToKafka> = m.to_kafka.iter().map(|(_, r)| r.clone()).collect();
    k.sort_by(|a, b| a.filter.cmp(&b.filter));
    (k, m.to_mqtt.iter().map(|(_, r)| r.clone()).collect())
}

#[test]
fn bindings_give_rules_both_ways_in_3_0_and_2_6_alike() {
    let m = mapping(DOC_3).unwrap();
    let (to_kafka, to_mqtt) = rules(&m);
    assert_eq!(
        to_kafka,
        vec![
            ToKafka {
                filter: "devices/+/telemetry".into(),
                topic: "telemetry".into(),
                key: "level:2".into(),
                ack: "kafka".into(),
                partitions: Some(4),
            },
            ToKafka {
                filter: "sites/+/events/+".into(),
                topic: "events-{1}".into(),
                key: "level:4".into(),
                ack: "kafka".into(),
                partitions: None,
            },
        ]
    );
    assert_eq!(
        to_mqtt,
        vec![ToMqtt {
            topic: "commands".into(),
            mqtt_topic: "devices/{key}/commands/{header:kind}".into(),
            qos: 2,
            group: "cmd".into(),
            offset_reset: "earliest".into(),
            partitions: None,
        }]
    );
    assert_eq!(rules(&mapping(DOC_2).unwrap()), (to_kafka, to_mqtt));
    let lines = m.describe();
    assert!(
        lines.contains("devices/+/telemetry -> Kafka topic telemetry (key level:2"),
        "{lines}"
    );
    assert!(
        lines.contains(
            "Kafka topic commands -> devices/{key}/commands/{header:kind} (QoS 2, group cmd"
        ),
        "{lines}"
    );
    // Every generated rule passes the Kafka config's own check.
    let mut config = KafkaConfig::default();
    m.merge_into(&mut config).unwrap();
    config.check().unwrap();
}

#[test]
fn bad_bindings_are_errors_naming_the_pointer() {
    let cases = [
        (
            "kafka: { partitions: 2 }",
            "/channels/c/bindings/kafka/topic: missing",
        ),
        (
            "kafka: { topic: t, x-key: nope }",
            "/channels/c/bindings/kafka/x-key: `nope`",
        ),
        (
            "kafka: { topic: t, partitions: 0 }",
            "/channels/c/bindings/kafka/partitions",
        ),
        (
            "kafka: { topic: 7 }",
            "/channels/c/bindings/kafka/topic: not a string",
        ),
        ("kafka: []", "/channels/c/bindings/kafka: not an object"),
    ];
    for (binding, want) in cases {
        let doc = format!(
            "asyncapi: 3.0.0\nchannels:\n  c:\n    address: a/{{p}}\n    parameters: {{ p: {{}} }}\n    bindings:\n      {binding}\n"
        );
        let err = mapping(&doc).unwrap_err();
        assert!(err.contains(want), "{binding}: {err}");
    }
    // Clients only subscribe: the Kafka topic is read, so it must be literal; operation
    // bindings must say one group and a QoS.
    let sub = |topic: &str, op_bindings: &str| {
        format!(
            "asyncapi: 3.0.0\nchannels:\n  c:\n    address: a/{{p}}\n    parameters: {{ p: {{}} }}\n    bindings:\n      kafka: {{ topic: '{topic}' }}\noperations:\n  o:\n    action: send\n    channel: {{ $ref: '#/channels/c' }}\n    bindings: {op_bindings}\n"
        )
    };
    let err = mapping(&sub("t-{p}", "{}")).unwrap_err();
    assert!(err.contains("must be literal"), "{err}");
    let err = mapping(&sub("t", "{ mqtt: { qos: 3 } }")).unwrap_err();
    assert!(
        err.contains("/operations/o/bindings/mqtt/qos: 0, 1 or 2"),
        "{err}"
    );
    let err = mapping(&sub("t", "{ kafka: { groupId: { type: string } } }")).unwrap_err();
    assert!(
        err.contains("/operations/o/bindings/kafka/groupId"),
        "{err}"
    );
    // Several send operations: the one with bindings gives them, whichever comes first; two
    // that disagree are an error naming both.
    let two = |first: &str, second: &str| {
        format!(
            "{}  o2:\n    action: send\n    channel: {{ $ref: '#/channels/c' }}\n    bindings: {second}\n",
            sub("t", first)
        )
    };
    let m = mapping(&two(
        "{}",
        "{ mqtt: { qos: 2 }, kafka: { groupId: { const: g } } }",
    ))
    .unwrap();
    let (_, to_mqtt) = rules(&m);
    assert_eq!(to_mqtt.len(), 1);
    assert_eq!((to_mqtt[0].qos, to_mqtt[0].group.as_str()), (2, "g"));
    let err = mapping(&two("{ mqtt: { qos: 1 } }", "{ mqtt: { qos: 2 } }")).unwrap_err();
    assert!(
        err.contains(
            "/operations/o2/bindings/mqtt/qos: 2, where /operations/o/bindings/mqtt/qos says 1"
        ),
        "{err}"
    );
    let err = mapping(&two(
        "{ kafka: { groupId: { const: a } } }",
        "{ kafka: { groupId: { const: b } } }",
    ))
    .unwrap_err();
    assert!(
        err.contains("/operations/o2/bindings/kafka/groupId: `b`"),
        "{err}"
    );
    // A channel without bindings gives nothing.
    assert!(mapping("asyncapi: 3.0.0\nchannels:\n  c: { address: a }\n")
        .unwrap()
        .is_empty());
}

#[test]
fn explicit_rules_win_and_overlaps_are_errors() {
    let explicit = |filter: &str| ToKafka {
        filter: filter.into(),
        topic: "mine".into(),
        key: "none".into(),
        ack: "kafka".into(),
        partitions: None,
    };
    // The same filter: the explicit rule replaces the binding's.
    let mut config = KafkaConfig {
        to_kafka: vec![explicit("devices/+/telemetry")],
        ..KafkaConfig::default()
    };
    mapping(DOC_3).unwrap().merge_into(&mut config).unwrap();
    assert_eq!(config.to_kafka.len(), 2);
    assert_eq!(config.to_kafka[0].topic, "mine");
    assert_eq!(config.to_mqtt.len(), 1);
    // An overlapping filter: both would produce the message.
    let mut config = KafkaConfig {
        to_kafka: vec![explicit("devices/d1/#")],
        ..KafkaConfig::default()
    };
    let err = mapping(DOC_3).unwrap().merge_into(&mut config).unwrap_err();
    assert!(
        err.contains("kafka.to_kafka[0]") && err.contains("telemetry"),
        "{err}"
    );
    // An explicit to_mqtt rule for the same Kafka topic replaces the binding's.
    let mut config = KafkaConfig {
        to_mqtt: vec![ToMqtt {
            topic: "commands".into(),
            mqtt_topic: "cmd/{key}".into(),
            qos: 0,
            group: "g".into(),
            offset_reset: "latest".into(),
            partitions: None,
        }],
        ..KafkaConfig::default()
    };
    mapping(DOC_3).unwrap().merge_into(&mut config).unwrap();
    assert_eq!(config.to_mqtt.len(), 1);
    assert_eq!(config.to_mqtt[0].mqtt_topic, "cmd/{key}");
    // A generated rule in an explicit rule's group starts where that group does.
    let mut config = KafkaConfig {
        to_mqtt: vec![ToMqtt {
            topic: "other".into(),
            mqtt_topic: "o/{key}".into(),
            qos: 0,
            group: "cmd".into(),
            offset_reset: "latest".into(),
            partitions: None,
        }],
        ..KafkaConfig::default()
    };
    mapping(DOC_3).unwrap().merge_into(&mut config).unwrap();
    assert_eq!(config.to_mqtt[1].offset_reset, "latest");
    config.check().unwrap();
    // Two channels of the document that overlap.
    let doc = "asyncapi: 3.0.0\nchannels:\n  a:\n    address: x/{p}\n    parameters: { p: {} }\n    bindings: { kafka: { topic: ta } }\n  b:\n    address: x/y\n    bindings: { kafka: { topic: tb } }\n";
    let err = mapping(doc)
        .unwrap()
        .merge_into(&mut KafkaConfig::default())
        .unwrap_err();
    assert!(err.contains("channel a's binding"), "{err}");
    // A placeholder that is no parameter, and a topic Kafka cannot have: errors naming the
    // binding.
    let one = |topic: &str| {
        format!("asyncapi: 3.0.0\nchannels:\n  c:\n    address: x/{{p}}\n    parameters: {{ p: {{}} }}\n    bindings: {{ kafka: {{ topic: '{topic}' }} }}\n")
    };
    let err = mapping(&one("t-{q}")).unwrap_err();
    assert!(
        err.contains("/channels/c/bindings/kafka/topic: `{q}`"),
        "{err}"
    );
    let err = mapping(&one("a/b")).unwrap_err();
    assert!(err.starts_with("/channels/c/bindings/kafka: "), "{err}");
    // Parameters mapped by name, whatever their order in the topic.
    let doc = "asyncapi: 3.0.0\nchannels:\n  c:\n    address: s/{a}/{b}\n    parameters: { a: {}, b: {} }\n    bindings: { kafka: { topic: 't.{b}.{a}.{client_id}' } }\n";
    let (to_kafka, _) = rules(&mapping(doc).unwrap());
    assert_eq!(to_kafka[0].topic, "t.{2}.{1}.{client_id}");
    // Partitions: only for a topic the broker creates, and agreeing with other rules.
    let err = mapping(&one("t-{p}").replace("topic: 't-{p}'", "topic: 't-{p}', partitions: 2"))
        .unwrap_err();
    assert!(
        err.contains("/channels/c/bindings/kafka/partitions: only for a topic"),
        "{err}"
    );
    let mut config = KafkaConfig {
        to_mqtt: vec![ToMqtt {
            topic: "t".into(),
            mqtt_topic: "o/{key}".into(),
            qos: 0,
            group: "g".into(),
            offset_reset: "latest".into(),
            partitions: Some(3),
        }],
        ..KafkaConfig::default()
    };
    let err = mapping(&one("t").replace("topic: 't'", "topic: 't', partitions: 2"))
        .unwrap()
        .merge_into(&mut config)
        .unwrap_err();
    assert!(
        err.contains("channel c: its binding gives Kafka topic `t` 2 partitions, another rule 3"),
        "{err}"
    );
}
