use proptest::prelude::*;

use super::*;

const V3: &str = include_str!("../../tests/asyncapi/fleet-3.0.yaml");
const V2: &str = include_str!("../../tests/asyncapi/fleet-2.6.yaml");

fn api(text: &str, strict: bool) -> Api {
    Api::from_text(text, strict).unwrap()
}

#[test]
fn versions_2_6_and_3_0_of_one_api_give_the_same_topic_map() {
    let shape = |a: &Api| -> Vec<(String, bool, bool)> {
        let mut v: Vec<_> = a
            .channels
            .iter()
            .map(|c| (c.address.clone(), c.publish, c.subscribe))
            .collect();
        v.sort();
        v
    };
    let (v3, v2) = (api(V3, false), api(V2, false));
    assert_eq!(shape(&v3), shape(&v2));
    assert_eq!(
        shape(&v3),
        vec![
            ("devices/{deviceId}/commands".to_string(), false, true),
            ("devices/{deviceId}/telemetry".to_string(), true, true),
            ("devices/{deviceId}/uplink".to_string(), true, false),
            ("fleet/status".to_string(), true, true),
        ]
    );
    assert!(v3.topic_map().contains("devices/+/telemetry"));
}

#[test]
fn payloads_topics_and_operations_are_checked() {
    for text in [V3, V2] {
        let a = api(text, false);
        let ok = br#"{"t": 21.5, "unit": "C"}"#;
        assert_eq!(
            a.check_publish("devices/d1/telemetry", ok, None, false),
            Verdict::Valid
        );
        let Verdict::Invalid(why) = a.check_publish(
            "devices/d1/telemetry",
            br#"{"t": "hot", "unit": "C"}"#,
            None,
            false,
        ) else {
            panic!("a string temperature must be invalid");
        };
        assert!(why.contains("/t"), "{why}");
        assert!(matches!(
            a.check_publish("devices/d1/telemetry", br#"{"t": 1}"#, None, false),
            Verdict::Invalid(w) if w.contains("unit")
        ));
        assert!(matches!(
            a.check_publish("devices/d1/telemetry", b"not json", None, false),
            Verdict::Invalid(w) if w.contains("not JSON")
        ));
        assert!(matches!(
            a.check_publish("devices/d9/telemetry", ok, None, false),
            Verdict::BadParameter(w) if w.contains("deviceId")
        ));
        assert!(matches!(
            a.check_publish("devices/d1/commands", br#"{"op":"reboot"}"#, None, false),
            Verdict::NotAllowed(_)
        ));
        assert_eq!(
            a.check_publish("devices/d1/uplink", b"\x00raw", None, false),
            Verdict::Valid
        );
        assert!(matches!(
            a.check_publish("devices/d1/telemetry", ok, Some("text/plain"), false),
            Verdict::Invalid(w) if w.contains("content type")
        ));
        assert_eq!(
            a.check_publish("devices/d1/telemetry", ok, Some("application/json"), false),
            Verdict::Valid
        );
        // A text message: no JSON parsing, but the UTF-8 promise is kept.
        assert_eq!(
            a.check_publish("fleet/status", b"all good", None, true),
            Verdict::Valid
        );
        assert!(matches!(
            a.check_publish("fleet/status", &[0xff, 0xfe], None, true),
            Verdict::Invalid(_)
        ));
        // Not strict: other topics pass; strict: refused.
        assert_eq!(
            a.check_publish("other/topic", b"x", None, false),
            Verdict::Valid
        );
        let strict = api(text, true);
        assert_eq!(
            strict.check_publish("other/topic", b"x", None, false),
            Verdict::NoChannel
        );
        // Subscriptions.
        assert_eq!(
            a.check_subscribe("devices/+/commands"),
            SubscribeVerdict::Allowed
        );
        assert_eq!(
            a.check_subscribe("devices/d1/telemetry"),
            SubscribeVerdict::Allowed
        );
        assert_eq!(
            a.check_subscribe("devices/d1/uplink"),
            SubscribeVerdict::NotAllowed
        );
        assert_eq!(a.check_subscribe("devices/#"), SubscribeVerdict::NotAllowed);
        assert_eq!(a.check_subscribe("fleet/+"), SubscribeVerdict::Allowed);
        assert_eq!(a.check_subscribe("other/#"), SubscribeVerdict::Allowed);
        assert_eq!(
            strict.check_subscribe("other/#"),
            SubscribeVerdict::NoChannel
        );
        assert_eq!(strict.check_subscribe("fleet/#"), SubscribeVerdict::Allowed);
    }
}

#[test]
fn malformed_documents_give_one_clear_error() {
    let cases = [
        ("asyncapi: 3.0.0\nchannels: [", "not YAML"),
        ("info: {}\n", "/asyncapi"),
        ("asyncapi: 1.2.0\n", "version 1.2.0"),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m:\n        $ref: '#/components/messages/nope'\n",
            "/channels/a/messages/m/$ref: #/components/messages/nope points at nothing",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m:\n        payload: { type: 12 }\n",
            "/channels/a/messages/m/payload: invalid JSON Schema",
        ),
        (
            "asyncapi: 3.0.0\ncomponents:\n  x: { $ref: '#/components/y' }\n  y: { $ref: '#/components/x' }\n",
            "cycle",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a/b{x}\n",
            "whole level",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    $ref: 'other.yaml#/a'\n",
            "needs the document read from a file",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    $ref: 'https://example.com/a.yaml#/a'\n",
            "remote references are not read",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m:\n        payload: { schemaFormat: application/x-protobuf, schema: 'message M {}' }\n",
            "/channels/a/messages/m/payload/schemaFormat: application/x-protobuf (JSON Schema, AsyncAPI and Avro schemas are read)",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m:\n        payload:\n          schemaFormat: application/vnd.apache.avro+yaml;version=1.9.0\n          schema: { type: record, name: L, fields: [ { name: next, type: [ 'null', L ] } ] }\n",
            "/channels/a/messages/m/payload/schema/fields/0/type/1: `L` refers to itself",
        ),
        (
            "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m:\n        contentType: application/json\n        payload: { schemaFormat: application/vnd.apache.avro, schema: int }\n",
            "Avro's JSON encoding is not validated",
        ),
    ];
    for (text, expected) in cases {
        let err = Api::from_text(text, false).unwrap_err();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

proptest! {
    /// The broker's verdict on a payload equals the jsonschema crate's on the same schema.
    #[test]
    fn the_verdict_equals_the_jsonschema_crates(
        t in prop_oneof![
            (-100.0f64..200.0).prop_map(|v| serde_json::json!(v)),
            "[a-z]{0,5}".prop_map(|s| serde_json::json!(s)),
            Just(serde_json::Value::Null),
        ],
        unit in prop_oneof![Just("C"), Just("F"), Just("K"), Just("")],
        with_unit in any::<bool>(),
    ) {
        let a = api(V3, false);
        let mut obj = serde_json::json!({ "t": t });
        if with_unit {
            obj["unit"] = serde_json::json!(unit);
        }
        let payload = serde_json::to_vec(&obj).unwrap();
        let schema: serde_json::Value = serde_json::json!({
            "type": "object", "required": ["t", "unit"],
            "properties": {
                "t": { "type": "number", "minimum": -50, "maximum": 150 },
                "unit": { "type": "string", "enum": ["C", "F"] }
            }
        });
        let expected = jsonschema::validator_for(&schema).unwrap().is_valid(&obj);
        let got = a.check_publish("devices/d2/telemetry", &payload, None, false) == Verdict::Valid;
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn reviewed_edges() {
    // A branching recursive schema is refused at once, not expanded forever.
    let tree = "asyncapi: 3.0.0\ncomponents:\n  schemas:\n    node:\n      properties:\n        l: { $ref: '#/components/schemas/node' }\n        r: { $ref: '#/components/schemas/node' }\n";
    let err = Api::from_text(tree, false).unwrap_err();
    assert!(err.contains("cycle"), "{err}");
    // An operation must name a channel that exists.
    let dangling = "asyncapi: 3.0.0\nchannels: {}\noperations:\n  x:\n    action: send\n    channel: { $ref: '#/channels/none' }\n";
    let err = Api::from_text(dangling, false).unwrap_err();
    assert!(err.contains("/operations/x/channel"), "{err}");
    let a = api(V3, true);
    // An empty level is a (refused) parameter value, not a way around the channel.
    assert!(matches!(
        a.check_publish("devices//telemetry", b"{}", None, false),
        Verdict::BadParameter(_)
    ));
    // A media type with parameters is compared by its media type.
    assert_eq!(
        a.check_publish(
            "devices/d1/telemetry",
            br#"{"t": 1, "unit": "C"}"#,
            Some("application/json; charset=utf-8"),
            false
        ),
        Verdict::Valid
    );
    // `$` filters are the broker's, even in strict mode.
    assert_eq!(a.check_subscribe("$SYS/#"), SubscribeVerdict::Allowed);
    // A 2.6 integer parameter accepts numeric levels; reason strings stay short.
    let ints = "asyncapi: 2.6.0\nchannels:\n  rooms/{n}:\n    parameters:\n      n:\n        schema: { type: integer, maximum: 10 }\n    publish:\n      message:\n        payload: { type: string, maxLength: 1 }\n";
    let a = api(ints, false);
    assert_eq!(
        a.check_publish("rooms/7", br#""x""#, None, false),
        Verdict::Valid
    );
    assert!(matches!(
        a.check_publish("rooms/70", br#""x""#, None, false),
        Verdict::BadParameter(_)
    ));
    // Topics of more levels than are split on the stack, a trailing `/` (one level more).
    let deep = "asyncapi: 3.0.0\nchannels:\n  d:\n    address: a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/{x}\n    parameters: { x: { enum: [z] } }\n";
    let d = api(deep, true);
    let topic = "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q";
    assert_eq!(
        d.check_publish(&format!("{topic}/z"), b"", None, false),
        Verdict::Valid
    );
    assert!(matches!(
        d.check_publish(&format!("{topic}/y"), b"", None, false),
        Verdict::BadParameter(_)
    ));
    assert_eq!(
        d.check_publish(&format!("{topic}/z/"), b"", None, false),
        Verdict::NoChannel
    );
    let long = format!("\"{}\"", "y".repeat(100_000));
    let Verdict::Invalid(why) = a.check_publish("rooms/7", long.as_bytes(), None, false) else {
        panic!("too long");
    };
    assert!(why.len() <= 256, "{}", why.len());
}

#[test]
fn refusals_are_counted_per_channel_and_survive_a_reload() {
    let a = api(V3, true);
    assert!(a.check_publish("devices/d1/telemetry", b"{}", None, false) != Verdict::Valid);
    assert!(a.check_publish("devices/d1/telemetry", b"[", None, false) != Verdict::Valid);
    assert!(a.check_publish("nowhere", b"{}", None, false) == Verdict::NoChannel);
    assert!(
        a.check_publish(
            "devices/d1/telemetry",
            br#"{"t": 20, "unit": "C"}"#,
            None,
            false
        ) == Verdict::Valid
    );
    let count = |a: &Api, name: Option<&str>| {
        a.refusals()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
    };
    assert_eq!(count(&a, Some("telemetry")), Some(2));
    assert_eq!(count(&a, Some("status")), Some(0));
    assert_eq!(count(&a, None), Some(1));
    let reloaded = api(V3, true);
    reloaded.carry_counts(&a);
    assert_eq!(count(&reloaded, Some("telemetry")), Some(2));
    assert_eq!(count(&reloaded, None), Some(1));
}

#[test]
fn a_document_split_over_files_validates_with_the_schemas_it_references() {
    let dir = std::env::temp_dir().join(format!("ringmq-asyncapi-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("messages")).unwrap();
    std::fs::write(
        dir.join("api.yaml"),
        "asyncapi: 3.0.0\ninfo: { title: t, version: '1' }\n\
         channels:\n  telemetry:\n    address: devices/{id}/telemetry\n    messages:\n      \
         reading: { $ref: 'messages/reading.yaml' }\n",
    )
    .unwrap();
    // The message file refers to a schema file next to it.
    std::fs::write(
        dir.join("messages/reading.yaml"),
        "contentType: application/json\npayload: { $ref: 'schemas.json#/Reading' }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("messages/schemas.json"),
        r#"{"Reading": {"type": "object", "required": ["t"], "properties": {"t": {"type": "number"}}}}"#,
    )
    .unwrap();
    let a = Api::load(&dir.join("api.yaml"), false).unwrap();
    let topic = "devices/d1/telemetry";
    assert_eq!(
        a.check_publish(topic, br#"{"t": 1.5}"#, None, false),
        Verdict::Valid
    );
    assert!(matches!(
        a.check_publish(topic, br#"{"t": "x"}"#, None, false),
        Verdict::Invalid(w) if w.contains("/t")
    ));
    // The same document given as text cannot follow them, and says why.
    let text = std::fs::read_to_string(dir.join("api.yaml")).unwrap();
    let err = Api::from_text(&text, false).unwrap_err();
    assert!(err.contains("needs the document read from a file"), "{err}");
    // A missing file is an error naming the pointer and the path.
    std::fs::remove_file(dir.join("messages/schemas.json")).unwrap();
    let err = format!("{:#}", Api::load(&dir.join("api.yaml"), false).unwrap_err());
    assert!(
        err.contains("messages/reading.yaml#/payload/$ref") && err.contains("schemas.json"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn message_traits_are_applied_as_each_version_says() {
    // 2.6: a trait's values replace the message's (JSON Merge Patch in order): the Avro
    // format and the content type come from the traits.
    let v2 = "asyncapi: 2.6.0\ncomponents:\n  messageTraits:\n    avro: { schemaFormat: 'application/vnd.apache.avro;version=1.9.0', contentType: text/plain }\n    binary: { contentType: application/octet-stream }\nchannels:\n  m/{id}:\n    parameters: { id: { schema: { type: string } } }\n    publish:\n      message:\n        contentType: application/json\n        traits: [ { $ref: '#/components/messageTraits/avro' }, { $ref: '#/components/messageTraits/binary' } ]\n        payload: { type: record, name: R, fields: [ { name: n, type: int } ] }\n";
    let a = api(v2, false);
    assert_eq!(a.check_publish("m/1", &[0x04], None, false), Verdict::Valid);
    let Verdict::Invalid(why) = a.check_publish("m/1", &[0x04, 0x00], None, false) else {
        panic!("a byte after the datum");
    };
    assert!(why.contains("not an Avro datum"), "{why}");
    assert!(matches!(
        a.check_publish("m/1", &[0x04], Some("application/json"), false),
        Verdict::Invalid(_)
    ));
    assert_eq!(
        a.check_publish("m/1", &[0x04], Some("application/octet-stream"), false),
        Verdict::Valid
    );
    // 3.0: a trait fills what the message does not say and overrides nothing.
    let v3 = "asyncapi: 3.0.0\ncomponents:\n  messageTraits:\n    text: { contentType: text/plain }\n    json: { contentType: application/json }\nchannels:\n  a:\n    address: a\n    messages:\n      own: { contentType: text/csv, traits: [ { $ref: '#/components/messageTraits/text' } ], payload: { type: string } }\n  b:\n    address: b\n    messages:\n      filled: { traits: [ { $ref: '#/components/messageTraits/json' }, { $ref: '#/components/messageTraits/text' } ] }\n";
    let a = api(v3, false);
    assert_eq!(
        a.check_publish("a", b"x,y", Some("text/csv"), false),
        Verdict::Valid
    );
    assert!(matches!(
        a.check_publish("a", b"x", Some("text/plain"), false),
        Verdict::Invalid(_)
    ));
    // Traits in order: the later one wins among traits.
    assert_eq!(
        a.check_publish("b", b"x", Some("text/plain"), false),
        Verdict::Valid
    );
    assert!(matches!(
        a.check_publish("b", b"{}", Some("application/json"), false),
        Verdict::Invalid(_)
    ));
    // The message's own nulls stay (a merge patch of the message would have dropped them).
    let nulls = "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m: { traits: [ { contentType: application/json } ], payload: { type: object, properties: { x: { const: null } } } }\n";
    let a = api(nulls, false);
    assert_eq!(
        a.check_publish("a", br#"{"x": null}"#, None, false),
        Verdict::Valid
    );
    assert!(matches!(
        a.check_publish("a", br#"{"x": 1}"#, None, false),
        Verdict::Invalid(_)
    ));
    let bad = "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m: { traits: {} }\n";
    assert!(Api::from_text(bad, false)
        .unwrap_err()
        .contains("/channels/a/messages/m/traits: a list of message traits"));
}
