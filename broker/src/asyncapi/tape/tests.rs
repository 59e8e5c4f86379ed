//! The tape against serde_json + jsonschema: what it reads and leaves, equal verdicts on a
//! schema with every common keyword, and a property test over generated JSON text.

use proptest::prelude::*;

use super::*;

fn verdicts(schema: &Value, payload: &str) -> (Option<bool>, Option<bool>) {
    let slow = jsonschema::draft7::new(schema).unwrap();
    let fast = jsonschema::options_for::<TapeJson>()
        .with_draft(jsonschema::Draft::Draft7)
        .build(schema)
        .unwrap();
    let by_value = serde_json::from_str::<Value>(payload)
        .ok()
        .map(|v| slow.is_valid(&v));
    let by_tape = with_payload(payload.as_bytes(), |root| fast.is_valid(root));
    (by_value, by_tape)
}

#[test]
fn reads_what_serde_json_reads_or_leaves_it() {
    let any = serde_json::json!({});
    for ok in [
        "null",
        " true ",
        "[1, -2, 3.5e2, \"x\", {\"a\": [ ]}]",
        "{\"a\":1,\"b\":{\"c\":\"d\\n\\\"e\\\" é\"}}",
        "-0",
        "18446744073709551615",
        "-9223372036854775808",
        "\"é ∑ 😀\"",
    ] {
        assert_eq!(verdicts(&any, ok), (Some(true), Some(true)), "{ok}");
    }
    // Not JSON, or not read by the tape (serde_json decides).
    for no in [
        "",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "[1,]",
        "{\"a\":1,}",
        "nul",
        "\"a",
        "{\"a\" 1}",
        "[1] 2",
        "\"\\x\"",
        "\"\t\"",
        "1e400",
    ] {
        let (by_value, by_tape) = verdicts(&any, no);
        assert_eq!(by_tape, None, "{no:?}");
        assert_eq!(by_value, None, "{no:?}");
    }
    // Read by serde_json, left by the tape: `\u`, a duplicate key, deep nesting.
    for left in [
        "\"\\u00e9\"",
        "{\"a\":1,\"a\":2}",
        &"[".repeat(101).to_string(),
    ] {
        let closed = format!("{left}{}", "]".repeat(left.matches('[').count()));
        assert_eq!(verdicts(&any, &closed).1, None, "{closed:?}");
    }
    // Over 19 significant digits serde_json rounds its own way: left to it (a review's
    // example: 2^53 + 1 written with 753 trailing zeros and e-753).
    let long = format!("9007199254740993{}e-753", "0".repeat(753));
    assert_eq!(
        verdicts(&serde_json::json!({"maximum": 9007199254740992u64}), &long).1,
        None
    );
    assert_eq!(verdicts(&any, "1.00000000000000000001").1, None);
    assert_eq!(verdicts(&any, "123456789012345678901234567890").1, None);
    assert_eq!(
        verdicts(&any, "12345678901234567890").1,
        Some(true),
        "a u64 is read"
    );
    assert_eq!(number_of("-0"), Some(-0.0));
    assert_eq!(number_of("21.5"), Some(21.5));
}

#[test]
fn the_bench_schema_decides_alike() {
    let schema = serde_json::json!({
        "type": "object",
        "required": ["id", "t", "unit", "site"],
        "properties": {
            "id": {"type": "string", "maxLength": 8},
            "t": {"type": "number", "minimum": -50, "maximum": 150},
            "n": {"type": "integer", "minimum": 0},
            "unit": {"type": "string", "enum": ["C", "F"]},
            "site": {"type": "string", "pattern": "^[a-z]+-[0-9]+$"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
            "extra": {"const": {"k": [1, 2]}}
        },
        "additionalProperties": false
    });
    for payload in [
        r#"{"id":"d1","t":21.5,"unit":"C","site":"plant-7"}"#,
        r#"{"id":"d1","t":150.0000001,"unit":"C","site":"plant-7"}"#,
        r#"{"id":"d1","t":21,"n":1.0,"unit":"F","site":"plant-7"}"#,
        r#"{"id":"d1","t":21,"n":-1,"unit":"F","site":"plant-7"}"#,
        r#"{"id":"éééééééé","t":0,"unit":"C","site":"a-1"}"#,
        r#"{"id":"ééééééééé","t":0,"unit":"C","site":"a-1"}"#,
        r#"{"id":"d1","t":0,"unit":"K","site":"a-1"}"#,
        r#"{"id":"d1","t":0,"unit":"C","site":"A-1"}"#,
        r#"{"id":"d1","t":0,"unit":"C","site":"a-1","tags":["x","y"]}"#,
        r#"{"id":"d1","t":0,"unit":"C","site":"a-1","tags":["x","x"]}"#,
        r#"{"id":"d1","t":0,"unit":"C","site":"a-1","extra":{"k":[1,2.0]}}"#,
        r#"{"id":"d1","t":0,"unit":"C","site":"a-1","extra":{"k":[2,1]}}"#,
        r#"{"id":"d1","t":0,"unit":"C","site":"a-1","more":1}"#,
        r#"{"id":"d\"1","t":0,"unit":"C","site":"a-1"}"#,
        r#"["not", "an", "object"]"#,
    ] {
        let (by_value, by_tape) = verdicts(&schema, payload);
        assert_eq!(by_tape, by_value, "{payload}");
    }
}

/// Arbitrary JSON text (valid or nearly so).
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:e}")),
        "[a-z\\\\\"é -]{0,6}".prop_map(|s| format!("\"{s}\"")),
        "[0-9.eE+-]{1,4}",
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-c]{1,2}", inner), 0..5).prop_map(|v| {
                let members: Vec<String> = v.iter().map(|(k, x)| format!("\"{k}\":{x}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

proptest! {
    /// Where the tape reads a payload, its verdict is serde_json + jsonschema's.
    #[test]
    fn tape_verdicts_equal_values(payload in json_text()) {
        let schema = serde_json::json!({
            "anyOf": [
                {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}},
                 "required": ["a"]},
                {"type": "array", "items": {"type": ["string", "number"], "maxLength": 3,
                 "maximum": 1e18}},
                {"type": "string", "minLength": 2},
                {"type": "number", "multipleOf": 0.5}
            ]
        });
        let (by_value, by_tape) = verdicts(&schema, &payload);
        if by_tape.is_some() {
            prop_assert_eq!(by_tape, by_value, "{}", payload);
        }
    }
}
