//! The one-pass check against serde_json + jsonschema: which schemas it takes, and that it
//! never accepts what jsonschema refuses (generated payloads), accepting every plain valid one.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// jsonschema's verdict (None: not JSON) and the one-pass one.
fn verdicts(schema: &Value, payload: &str) -> (Option<bool>, bool) {
    let slow = jsonschema::draft7::new(schema).unwrap();
    let by_value = serde_json::from_str::<Value>(payload)
        .ok()
        .map(|v| slow.is_valid(&v));
    let flat = Flat::compile(schema).expect("a flat schema");
    let first = flat.accepts(payload.as_bytes());
    // Again, in the order the first call remembered if it was valid (the quick path).
    assert_eq!(flat.accepts(payload.as_bytes()), first, "{payload}");
    (by_value, first)
}

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "t", "unit", "site"],
        "properties": {
            "id": {"type": "string", "maxLength": 8, "minLength": 1},
            "t": {"type": "number", "minimum": -50, "exclusiveMaximum": 150.5},
            "n": {"type": "integer", "minimum": 0, "maximum": 100},
            "big": {"type": "integer"},
            "unit": {"type": "string", "enum": ["C", "F", 3]},
            "ok": {"type": "boolean", "title": "annotated", "x-note": 1},
            "none": {"type": "null"},
            "site": {"type": "string", "pattern": "^[a-z]+-\\d+$"},
            "v": {"type": "string", "const": "1"},
            "any": {},
            "gone": false,
            // Names of 7, 14 and 20 bytes (one-word, two-word and byte compares of the
            // guessed name), a non-ASCII one and one a payload must escape.
            "station": {"type": "string", "maxLength": 10},
            "temperature_c1": {"type": "number", "minimum": -100, "maximum": 100},
            "a_much_longer_name_x": {"type": "integer"},
            "ünit": {"type": "string", "enum": ["C"]},
            "q\"uote": {"type": "boolean"}
        }
    })
}

#[test]
fn takes_flat_object_schemas_only() {
    assert!(Flat::compile(&schema()).is_some());
    assert!(Flat::compile(
        &json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
        "properties": {"a": true}})
    )
    .is_some());
    for other in [
        json!({"type": "array"}),
        json!({"type": ["object", "null"]}),
        json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
        json!({"properties": {"a": {"type": "string", "format": "email"}}}),
        json!({"properties": {"a": {"type": "number", "multipleOf": 2}}}),
        json!({"properties": {"a": {"type": "object"}}}),
        json!({"properties": {"a": {"type": "integer", "enum": [1, 2]}}}),
        json!({"properties": {"a": {"maxLength": 2}}}),
        json!({"properties": {"a": {"type": "integer", "maximum": 9007199254740993u64}}}),
        json!({"properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}),
        // Not an anchored sequence: jsonschema decides it with fancy-regex, not taken here
        // (a review's example: `x{1, 2}` is a literal to fancy-regex, a repetition to regex).
        json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
            "properties": {"a": {"type": "string", "pattern": "x{1, 2}"}}}),
        json!({"properties": {"a": {"type": "string", "pattern": "a|b"}}}),
        json!({"properties": {"a": {"type": "string", "pattern": "[0-9]+"}}}),
        // A dialect jsonschema does not know (its own rules), even if it looks like one.
        json!({"$schema": "http://example.com/draft-07/schema#"}),
        json!({"properties": {"a": {"$ref": "#/x"}}}),
        json!({"required": ["b"], "properties": {"a": {}}}),
        json!({"additionalProperties": {"type": "string"}}),
        json!({"patternProperties": {"^a": {}}}),
        json!({"allOf": [{}]}),
    ] {
        assert!(Flat::compile(&other).is_none(), "{other}");
    }
}

#[test]
fn accepts_only_what_jsonschema_accepts() {
    let s = schema();
    for (payload, accepted) in [
        (r#"{"id":"d1","t":21.5,"unit":"C","site":"plant-7"}"#, true),
        (
            r#" { "id" : "d1" , "t" : -50 , "unit" : "F" , "site" : "a-1" } "#,
            true,
        ),
        (r#"{"site":"a-1","unit":"C","t":1e2,"id":"éééééééé"}"#, true),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","n":100,"ok":false,"none":null,"v":"1"}"#,
            true,
        ),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","big":-9223372036854775809}"#,
            true,
        ),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","big":1234567890123456789}"#,
            true,
        ),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","any":{"k":[1,"x\n",{"z":null}]},"extra":[true]}"#,
            true,
        ),
        // Refused by jsonschema.
        (r#"{"id":"ééééééééé","t":0,"unit":"C","site":"a-1"}"#, false),
        (r#"{"id":"","t":0,"unit":"C","site":"a-1"}"#, false),
        (r#"{"id":"d1","t":150.5,"unit":"C","site":"a-1"}"#, false),
        (
            r#"{"id":"d1","t":-50.000001,"unit":"C","site":"a-1"}"#,
            false,
        ),
        (r#"{"id":"d1","t":0,"unit":"K","site":"a-1"}"#, false),
        (r#"{"id":"d1","t":0,"unit":"C","site":"A-1"}"#, false),
        (r#"{"id":"d1","t":0,"unit":"C","site":"a-١"}"#, false),
        (r#"{"id":"d1","t":0,"unit":"C"}"#, false),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","n":1.5}"#,
            false,
        ),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","n":101}"#,
            false,
        ),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","ok":"true"}"#,
            false,
        ),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","gone":1}"#,
            false,
        ),
        (r#"{"id":"d1","t":"0","unit":"C","site":"a-1"}"#, false),
        (r#"{"id":"d1","t":0,"unit":"C","site":"a-1",}"#, false),
        (r#"{"id":"d1","t":01,"unit":"C","site":"a-1"}"#, false),
        (r#"{"id":"d1","t":1e400,"unit":"C","site":"a-1"}"#, false),
        (r#"["id"]"#, false),
        (r#"{"id":"d1","t":0,"unit":"C","site":"a-1"} x"#, false),
        // Valid, left to the slow path: escapes, 1.0 as an integer, a duplicate key.
        (r#"{"id":"d\"1","t":0,"unit":"C","site":"a-1"}"#, false),
        (r#"{"i\u0064":"d1","t":0,"unit":"C","site":"a-1"}"#, false),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","n":1.0}"#,
            false,
        ),
        (
            r#"{"id":"x","id":"d1","t":0,"unit":"C","site":"a-1"}"#,
            false,
        ),
        (
            r#"{"id":"d1","t":0,"unit":"C","site":"a-1","any":"\u00e9"}"#,
            false,
        ),
    ] {
        let (by_value, flat) = verdicts(&s, payload);
        assert_eq!(flat, accepted, "{payload}");
        if flat {
            assert_eq!(by_value, Some(true), "{payload}");
        }
    }
    // Long integers against bounds: exact to jsonschema, rounded as f64s; left to it (a
    // review's example: 2^53 + 1 under a maximum of 2^53).
    let wide = json!({"properties": {
        "a": {"type": "number", "maximum": 9007199254740992u64},
        "b": {"type": "number", "minimum": -1e16},
        "c": {"type": "number"}
    }});
    for (payload, accepted) in [
        (r#"{"a":9007199254740993}"#, false),
        (r#"{"a":9007199254740992}"#, false),
        (r#"{"a":900719925474099}"#, true),
        (r#"{"b":-10000000000000001}"#, false),
        (r#"{"c":-10000000000000001}"#, true),
    ] {
        let (by_value, flat) = verdicts(&wide, payload);
        assert_eq!(flat, accepted, "{payload}");
        if flat {
            assert_eq!(by_value, Some(true), "{payload}");
        }
    }
    // The 2020-12 dialect: the same verdicts as jsonschema's for it.
    let modern = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
        "required": ["a"], "properties": {"a": {"type": "integer", "exclusiveMinimum": 0}}});
    let v = jsonschema::validator_for(&modern).unwrap();
    let flat = Flat::compile(&modern).unwrap();
    for payload in [r#"{"a":1}"#, r#"{"a":0}"#, r#"{"a":-1}"#, r#"{}"#] {
        let value: Value = serde_json::from_str(payload).unwrap();
        assert!(
            !flat.accepts(payload.as_bytes()) || v.is_valid(&value),
            "{payload}"
        );
        assert_eq!(
            flat.accepts(payload.as_bytes()),
            v.is_valid(&value),
            "{payload}"
        );
    }
    // No additional properties.
    let closed = json!({"properties": {"a": {"type": "integer"}}, "additionalProperties": false});
    assert_eq!(verdicts(&closed, r#"{"a":1}"#), (Some(true), true));
    assert_eq!(verdicts(&closed, r#"{"a":1,"b":2}"#), (Some(false), false));
    // Nesting past the bound is left to serde_json.
    let deep = format!(r#"{{"any":{}1{}}}"#, "[".repeat(70), "]".repeat(70));
    assert_eq!(
        verdicts(&json!({"properties": {"any": {}}}), &deep),
        (Some(true), false)
    );
}

#[test]
fn topic_levels_are_checked_as_strings() {
    let level = Check::compile(&json!({"type": "string", "enum": ["a", "b"]})).unwrap();
    assert!(level.accepts_level("a"));
    assert!(!level.accepts_level("c"));
    assert!(Check::compile(&json!({}))
        .unwrap()
        .accepts_level("anything"));
    let shaped =
        Check::compile(&json!({"type": "string", "pattern": "^[a-z]+-\\d+$", "maxLength": 6}))
            .unwrap();
    assert!(shaped.accepts_level("ab-12"));
    assert!(!shaped.accepts_level("abc-123"), "too long");
    assert!(!shaped.accepts_level("ab-x"));
    assert!(
        !shaped.accepts_level("ab-١"),
        "\\d is ASCII digits, as jsonschema has it"
    );
    let number = Check::compile(&json!({"type": "integer"})).unwrap();
    assert!(
        !number.accepts_level("7"),
        "numbers are left to the slow path"
    );
}

/// A value for one of [`schema`]'s properties, near its limits, sometimes of the wrong type.
fn member() -> impl Strategy<Value = (String, String)> {
    let key = prop_oneof![
        Just("id"),
        Just("t"),
        Just("n"),
        Just("big"),
        Just("unit"),
        Just("ok"),
        Just("none"),
        Just("site"),
        Just("v"),
        Just("any"),
        Just("gone"),
        Just("extra"),
        Just("station"),
        Just("temperature_c1"),
        Just("a_much_longer_name_x"),
        Just("ünit"),
        Just("q\\\"uote"),
        Just("statio"),
        Just("temperature_c12"),
    ];
    let value = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        (-60i64..160).prop_map(|n| n.to_string()),
        (-60.0f64..160.0).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:e}")),
        "(-?[0-9]{1,3}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?)",
        "[a-zé\\\\\"1-]{0,10}".prop_map(|s| format!("\"{s}\"")),
        prop_oneof![
            Just("C"),
            Just("F"),
            Just("K"),
            Just("plant-7"),
            Just("1"),
            Just("a-")
        ]
        .prop_map(|s| format!("\"{s}\"")),
        Just("[1,{\"a\":\"b\"}]".to_string()),
        "[\\[\\]{},:\"a0-9 ]{0,6}",
    ];
    (key.prop_map(str::to_string), value)
}

/// The object of `members` joined by `sep`: the one-pass check accepts it only if jsonschema
/// does, and accepts every plain one jsonschema does (no escape, no duplicate member, no
/// negative exponent, the integer properties written as integers; every bounded number
/// property is bounded on both sides, so an integer of over 15 digits is out of range).
fn judge(members: &[(String, String)], sep: &str) -> Result<(), TestCaseError> {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let payload = format!("{{{}}}", body.join(sep));
    let (by_value, flat) = verdicts(&schema(), &payload);
    if flat {
        prop_assert_eq!(by_value, Some(true), "{}", payload);
    }
    let keys: std::collections::HashSet<&String> = members.iter().map(|(k, _)| k).collect();
    let plain = !payload.contains('\\')
        && keys.len() == members.len()
        && !payload.contains("e-")
        && !payload.contains("E-")
        && !members.iter().any(|(k, v)| {
            matches!(k.as_str(), "n" | "big" | "a_much_longer_name_x")
                && v.contains(['.', 'e', 'E'])
        });
    if plain && by_value == Some(true) {
        prop_assert!(flat, "{}", payload);
    }
    Ok(())
}

proptest! {
    /// The one-pass check never accepts a payload jsonschema refuses.
    #[test]
    fn never_accepts_what_jsonschema_refuses(
        members in prop::collection::vec(member(), 0..9),
        spaced in any::<bool>(),
    ) {
        judge(&members, if spaced { " , " } else { "," })?;
    }
}

proptest! {
    /// Mostly valid payloads: the required members near their limits, in any order, with
    /// generated extra members; the verdicts are jsonschema's whenever the payload is plain.
    #[test]
    fn near_valid_payloads_decide_alike(
        id in "[a-zé]{0,9}",
        t in prop_oneof![(-51.0f64..151.0).prop_map(|v| v.to_string()), (-51i64..152).prop_map(|v| v.to_string())],
        unit in prop_oneof![Just("C"), Just("F"), Just("3"), Just("c")],
        site in "[a-z]{0,3}-?[0-9]{0,2}",
        extra in prop::collection::vec(member(), 0..4),
        order in any::<prop::sample::Index>(),
    ) {
        let mut members = vec![
            ("id".to_string(), format!("\"{id}\"")),
            ("t".to_string(), t),
            ("unit".to_string(), format!("\"{unit}\"")),
            ("site".to_string(), format!("\"{site}\"")),
        ];
        let by = order.index(members.len());
        members.rotate_left(by);
        for (k, v) in extra {
            if !members.iter().any(|(m, _)| *m == k) {
                members.push((k, v));
            }
        }
        judge(&members, ",")?;
    }
}

proptest! {
    /// Short decimals converted without `str::parse` are its correctly rounded values.
    #[test]
    fn decimals_convert_as_str_parse_does(int in prop_oneof![Just(0u64), 0u64..1_000_000_000],
        frac in "[0-9]{1,9}",
        negative in any::<bool>()) {
        let text = format!("{}{int}.{frac}", if negative { "-" } else { "" });
        let mut scan = Scan::new(text.as_bytes());
        let n = scan.number().unwrap();
        prop_assert_eq!(n.float.map(f64::to_bits), Some(text.parse::<f64>().unwrap().to_bits()),
            "{}", text);
    }

    /// The short path's numbers are `str::parse`'s, or left to the long path.
    #[test]
    fn short_numbers_are_str_parses(text in "-?(0|[1-9][0-9]{0,17})(\\.[0-9]{1,9})?([eE][0-9])?") {
        let payload = format!("{text},");
        let mut scan = Scan::new(payload.as_bytes());
        match scan.short_number() {
            Some((v, integral)) => {
                prop_assert_eq!(v.to_bits(), text.parse::<f64>().unwrap().to_bits(), "{}", text);
                prop_assert_eq!(integral, !text.contains('.'));
                prop_assert_eq!(scan.pos, text.len());
            }
            None => {
                let digits = text.bytes().filter(u8::is_ascii_digit).count();
                prop_assert!(digits > EXACT_DIGITS_MAX || text.contains(['e', 'E']), "{}", text);
                prop_assert_eq!(scan.pos, 0);
            }
        }
    }
}

proptest! {
    /// Strings of any length with a quote, backslash, control character or non-ASCII letter
    /// anywhere (the byte-at-a-time and the word-at-a-time parts of the scan alike).
    #[test]
    fn strings_of_any_length_decide_alike(
        text in prop::collection::vec(prop_oneof![
            8 => Just("a"), 1 => Just("é"), 1 => Just("\""), 1 => Just("\\\\"),
            1 => Just("\\n"), 1 => Just("\n"), 1 => Just("\\u0041")], 0..60),
    ) {
        let schema = json!({"properties": {"s": {"type": "string", "maxLength": 40}},
            "required": ["s"]});
        let payload = format!("{{\"s\":\"{}\",\"x\":\"{}\"}}", text.concat(), text.concat());
        let (by_value, flat) = verdicts(&schema, &payload);
        if flat {
            prop_assert_eq!(by_value, Some(true), "{}", payload);
        }
        if by_value == Some(true) && !payload.contains('\\') {
            prop_assert!(flat, "{}", payload);
        }
    }
}

/// One compiled schema for every case below, so the guessed member order carries over from
/// payload to payload as it does in the broker.
fn shared_flat() -> &'static Flat {
    static FLAT: std::sync::OnceLock<Flat> = std::sync::OnceLock::new();
    FLAT.get_or_init(|| Flat::compile(&schema()).expect("a flat schema"))
}

proptest! {
    /// Payloads in changing member orders through one compiled schema: the verdict is the
    /// fresh schema's, whatever order the previous payloads left it guessing.
    #[test]
    fn guessed_orders_change_no_verdict(
        members in prop::collection::vec(member(), 0..9),
        rounds in 1usize..4,
    ) {
        let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let payload = format!("{{{}}}", body.join(","));
        let fresh = Flat::compile(&schema()).expect("a flat schema").accepts(payload.as_bytes());
        for _ in 0..rounds {
            prop_assert_eq!(shared_flat().accepts(payload.as_bytes()), fresh, "{}", payload);
        }
    }

    /// Bytes that are not UTF-8 (or are, as multi-byte characters) anywhere in a valid
    /// payload: accepted only if the payload is UTF-8 and jsonschema accepts it.
    #[test]
    fn payloads_are_utf8_or_refused(
        at in any::<prop::sample::Index>(),
        bytes in prop::collection::vec(prop_oneof![0x80u8..=0xff, Just(0xc3), Just(0xa9)], 1..4),
    ) {
        let valid = r#"{"id":"d1abc","t":21.5,"unit":"C","site":"plant-7","extra":"padding text"}"#;
        let mut payload = valid.as_bytes().to_vec();
        let at = at.index(payload.len());
        payload.splice(at..at, bytes);
        let flat = shared_flat().accepts(&payload);
        let by_value = std::str::from_utf8(&payload).ok().and_then(|text| {
            serde_json::from_str::<Value>(text).ok()
        }).map(|v| jsonschema::draft7::new(&schema()).unwrap().is_valid(&v));
        if flat {
            prop_assert_eq!(by_value, Some(true), "{:?}", payload);
        }
    }
}

proptest! {
    /// Payloads in an order a valid payload left remembered, their values anything: the
    /// quick path's verdict is a fresh full scan's.
    #[test]
    fn remembered_orders_decide_as_a_fresh_scan(
        values in prop::collection::vec(member(), 7),
        learned_spaced in any::<bool>(),
        sep in prop::sample::select(vec![",", ", ", " ,", ",\n  ", ",\t", ",\u{b}", ",\u{a0}"]),
        colon in prop::sample::select(vec![":", ": ", " :", ":\u{c}", ":\u{2028}"]),
        ends in prop::sample::select(vec!["", " ", "\n", "\u{c}"]),
    ) {
        let keys = ["id", "t", "unit", "site", "extra", "n", "ok"];
        let learned = if learned_spaced {
            r#" { "id": "d1", "t": 1, "unit": "C", "site": "a-1", "extra": "x", "n": 2, "ok": true } "#
        } else {
            r#"{"id":"d1","t":1,"unit":"C","site":"a-1","extra":"x","n":2,"ok":true}"#
        };
        let flat = Flat::compile(&schema()).expect("a flat schema");
        prop_assert!(flat.accepts(learned.as_bytes()));
        prop_assert!(quick::accepts(&flat, learned.as_bytes()), "the order is remembered");
        let body: Vec<String> = keys.iter().zip(&values)
            .map(|(k, (_, v))| format!("\"{k}\"{colon}{v}")).collect();
        let payload = format!("{ends}{{{ends}{}{ends}}}{ends}", body.join(sep));
        let fresh = Flat::compile(&schema()).expect("a flat schema").accepts(payload.as_bytes());
        prop_assert_eq!(flat.accepts(payload.as_bytes()), fresh, "{}", payload);
    }

    /// Whatever codes the remembered order holds (a write racing a read mixes two orders),
    /// the quick path accepts only what a full scan accepts.
    #[test]
    fn any_remembered_order_accepts_only_valid_payloads(
        codes in prop::collection::vec(prop_oneof![0u8..20, Just(u8::MAX)], 0..10),
        spaced in any::<bool>(),
        members in prop::collection::vec(member(), 0..8),
        sep in prop::sample::select(vec![",", ", ", "\n,\t", ",\u{b}"]),
        colon in prop::sample::select(vec![":", ": ", " :", ":\u{a0}"]),
        ends in prop::sample::select(vec!["", " ", "\u{c}"]),
    ) {
        let flat = Flat::compile(&schema()).expect("a flat schema");
        flat.order.store_codes(&codes, spaced);
        let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\"{colon}{v}")).collect();
        let payload = format!("{{{ends}{}{ends}}}", body.join(sep));
        if quick::accepts(&flat, payload.as_bytes()) {
            let fresh = Flat::compile(&schema()).expect("a flat schema");
            prop_assert!(fresh.accepts(payload.as_bytes()), "{}", payload);
        }
    }
}

#[test]
fn non_ascii_strings_are_counted_in_characters() {
    let flat = shared_flat();
    // "id" has maxLength 8: eight two-byte characters pass, nine do not.
    let ok = r#"{"id":"éééééééé","t":1,"unit":"C","site":"a-1"}"#;
    let long = r#"{"id":"ééééééééé","t":1,"unit":"C","site":"a-1"}"#;
    assert!(flat.accepts(ok.as_bytes()));
    assert!(!flat.accepts(long.as_bytes()));
    // A lone continuation byte in a key, a value or a skipped member.
    for bad in [
        &b"{\"id\":\"d\x80\",\"t\":1,\"unit\":\"C\",\"site\":\"a-1\"}"[..],
        &b"{\"i\xc3\":\"d\",\"id\":\"d\",\"t\":1,\"unit\":\"C\",\"site\":\"a-1\"}"[..],
        &b"{\"x\":\"\xff\",\"id\":\"d\",\"t\":1,\"unit\":\"C\",\"site\":\"a-1\"}"[..],
    ] {
        assert!(!flat.accepts(bad), "{bad:?}");
    }
}
