//! Avro datums written by hand from the specification's binary encoding, checked against
//! compiled schemas; schemas the compiler refuses.

use serde_json::json;

use super::*;

/// A zig-zag varint.
fn long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn string(s: &str) -> Vec<u8> {
    let mut out = long(s.len() as i64);
    out.extend_from_slice(s.as_bytes());
    out
}

fn reading_schema() -> Value {
    json!({
        "type": "record", "name": "Reading", "namespace": "fleet",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "t", "type": "double"},
            {"name": "seq", "type": "int"},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "ok", "type": "boolean"},
            {"name": "unit", "type": {"type": "enum", "name": "Unit", "symbols": ["C", "F"]}},
            {"name": "note", "type": ["null", "string"]},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "attrs", "type": {"type": "map", "values": "long"}},
            {"name": "mac", "type": {"type": "fixed", "name": "Mac", "size": 6}},
            {"name": "unit2", "type": "Unit"},
            {"name": "raw", "type": "bytes"},
            {"name": "f", "type": "float"},
            {"name": "nothing", "type": "null"}
        ]
    })
}

/// A valid datum of [`reading_schema`].
fn reading() -> Vec<u8> {
    let mut d = string("device-42");
    d.extend(21.5f64.to_le_bytes());
    d.extend(long(7));
    d.extend(long(1_764_580_000_000));
    d.push(1);
    d.extend(long(1)); // F
    d.extend(long(1)); // the string branch
    d.extend(string("ok"));
    d.extend(long(2)); // a block of two tags
    d.extend(string("a"));
    d.extend(string("b"));
    d.extend(long(0));
    d.extend(long(-1)); // a block of one entry, its size in bytes follows
    d.extend(long(3));
    d.extend(string("k"));
    d.extend(long(5));
    d.extend(long(0));
    d.extend([1, 2, 3, 4, 5, 6]);
    d.extend(long(0)); // C
    d.extend(long(2));
    d.extend([0xff, 0x00]);
    d.extend(1.5f32.to_le_bytes());
    d
}

#[test]
fn a_datum_is_checked_to_its_last_byte() {
    let s = AvroSchema::compile(&reading_schema(), "/p").unwrap();
    let good = reading();
    assert_eq!(s.check(&good), Ok(()));
    // Every truncation fails; a byte more fails.
    for n in 0..good.len() {
        assert!(s.check(&good[..n]).is_err(), "{n}");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(s.check(&longer), Err("1 byte after the datum".into()));
    // Values out of range, each naming its field.
    let id_len = string("device-42").len();
    let seq_at = id_len + 8;
    let mut big = good[..seq_at].to_vec();
    big.extend(long(1 << 33));
    big.extend(&good[seq_at + 1..]);
    let why = s.check(&big).unwrap_err();
    assert!(
        why.contains("field seq: int 8589934592 out of range"),
        "{why}"
    );
    // An int of more than 5 bytes, even of a small value (a non-canonical encoding).
    let mut wide = good[..seq_at].to_vec();
    wide.extend([0x8e, 0x80, 0x80, 0x80, 0x80, 0x00]);
    wide.extend(&good[seq_at + 1..]);
    assert!(s.check(&wide).unwrap_err().contains("over 5 bytes"));
    let ok_at = seq_at + 1 + long(1_764_580_000_000).len();
    let mut bad = good.clone();
    bad[ok_at] = 2;
    assert!(s.check(&bad).unwrap_err().contains("field ok: a boolean"));
    bad = good.clone();
    bad[ok_at + 1] = long(2)[0];
    assert!(s
        .check(&bad)
        .unwrap_err()
        .contains("field unit: enum index 2 of 2"));
    bad = good.clone();
    bad[ok_at + 2] = long(2)[0];
    assert!(s
        .check(&bad)
        .unwrap_err()
        .contains("field note: union index 2"));
    bad = good.clone();
    bad[1] = 0xff; // inside "device-42"
    assert!(s.check(&bad).unwrap_err().contains("not UTF-8"));
    // A string or block longer than the payload, a negative length.
    let strings = AvroSchema::compile(&json!("string"), "/p").unwrap();
    assert!(strings
        .check(&long(1000))
        .unwrap_err()
        .contains("past the payload"));
    assert!(strings
        .check(&long(-1))
        .unwrap_err()
        .contains("a negative length -1"));
    let arrays = AvroSchema::compile(&json!({"type": "array", "items": "long"}), "/p").unwrap();
    let mut huge = long(i64::MAX);
    huge.extend(long(0));
    assert!(arrays
        .check(&huge)
        .unwrap_err()
        .contains("past the payload"));
    // Items of no bytes: counts within the payload all the same, a block size of 0.
    let nulls = AvroSchema::compile(&json!({"type": "array", "items": "null"}), "/p").unwrap();
    let mut many = long(i64::MAX);
    many.extend(long(0));
    assert!(nulls.check(&many).unwrap_err().contains("past the payload"));
    assert_eq!(nulls.check(&[long(1), long(0)].concat()), Ok(()));
    assert_eq!(nulls.check(&[long(-1), long(0), long(0)].concat()), Ok(()));
    assert!(nulls
        .check(&[long(-1), long(1), long(0)].concat())
        .unwrap_err()
        .contains("no bytes says 1"));
    // A varint of more than ten bytes.
    assert!(AvroSchema::compile(&json!("long"), "/p")
        .unwrap()
        .check(&[0xff; 11])
        .unwrap_err()
        .contains("varint"));
}

#[test]
fn fields_of_no_bytes_are_not_walked_and_namespaces_come_from_named_types() {
    // A record of an int and many nulls: checked as the int alone.
    let mut fields = vec![json!({"name": "a", "type": "int"})];
    fields.extend((0..500).map(|i| json!({"name": format!("n{i}"), "type": "null"})));
    let wide = json!({"type": "array", "items": {"type": "record", "name": "W", "fields": fields}});
    let s = AvroSchema::compile(&wide, "/p").unwrap();
    let Node::Array(items, false) = &s.root else {
        panic!("an array of records that take bytes");
    };
    assert!(matches!(&**items, Node::Record(f) if f.len() == 1));
    assert_eq!(
        s.check(&[long(2), long(1), long(2), long(0)].concat()),
        Ok(())
    );
    // A record of nulls only is a null; an error type is a record; a fixed of 0 takes nothing.
    let nothing = json!({"type": "error", "name": "E", "fields": [
        {"name": "z", "type": {"type": "fixed", "name": "Z", "size": 0}},
        {"name": "n", "type": "null"}]});
    let s = AvroSchema::compile(&nothing, "/p").unwrap();
    assert!(matches!(s.root, Node::Null));
    assert_eq!(s.check(&[]), Ok(()));
    // A namespace on an array is no namespace of the types inside it; a dotted name is full.
    let spaced = |items: &str| {
        json!({"type": "record", "name": "R", "namespace": "a", "fields": [
            {"name": "p", "type": {"type": "fixed", "name": "c.Q", "size": 1}},
            {"name": "q", "type": {"type": "array", "namespace": "c", "items": items}}
        ]})
    };
    assert!(AvroSchema::compile(&spaced("c.Q"), "/p").is_ok());
    let err = AvroSchema::compile(&spaced("Q"), "/p").unwrap_err();
    assert!(
        err.contains("/p/fields/1/type/items: unknown type `Q`"),
        "{err}"
    );
}

#[test]
fn named_types_are_expanded_and_recursion_refused() {
    // A type used twice, by full and by short name.
    let twice = json!({"type": "record", "name": "P", "namespace": "geo", "fields": [
        {"name": "a", "type": {"type": "record", "name": "Pt", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "b", "type": "geo.Pt"},
        {"name": "c", "type": "Pt"}
    ]});
    let s = AvroSchema::compile(&twice, "/p").unwrap();
    assert_eq!(s.check(&[2, 4, 6]), Ok(()));
    assert!(s.check(&[2, 4]).is_err());
    for (bad, why) in [
        (
            json!({"type": "record", "name": "Node", "fields": [
                {"name": "next", "type": ["null", "Node"]}]}),
            "/p/fields/0/type/1: `Node` refers to itself",
        ),
        (json!("Nope"), "/p: unknown type `Nope`"),
        (
            json!({"type": "record", "name": "R"}),
            "/p/fields: a list of fields",
        ),
        (
            json!({"type": "enum", "name": "E", "symbols": []}),
            "/p/symbols",
        ),
        (json!({"type": "fixed", "name": "F", "size": -1}), "/p/size"),
        (json!({"type": "array"}), "/p/items: missing"),
        (json!([["int"]]), "/p/0: a union cannot hold a union"),
        (json!([]), "/p: an empty union"),
        (json!(7), "/p: an Avro schema is"),
        (
            json!([{"type": "fixed", "name": "F", "size": 1}, {"type": "fixed", "name": "F", "size": 2}]),
            "`F` is defined twice",
        ),
    ] {
        let err = AvroSchema::compile(&bad, "/p").unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
    // Nesting and expansion are bounded.
    let mut deep = json!("int");
    for _ in 0..70 {
        deep = json!({"type": "array", "items": deep});
    }
    assert!(AvroSchema::compile(&deep, "/p")
        .unwrap_err()
        .contains("nested deeper than 64"));
    let mut fields = vec![
        json!({"name": "f0", "type": {"type": "record", "name": "T0",
        "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "int"}]}}),
    ];
    for i in 1..20 {
        fields.push(json!({"name": format!("f{i}"), "type": {"type": "record",
            "name": format!("T{i}"), "fields": [
                {"name": "a", "type": format!("T{}", i - 1)},
                {"name": "b", "type": format!("T{}", i - 1)}]}}));
    }
    let doubling = json!({"type": "record", "name": "Top", "fields": fields});
    assert!(AvroSchema::compile(&doubling, "/p")
        .unwrap_err()
        .contains("more than 10000 types"));
    // Depth counts expanded types: each type nests 40 arrays in a shallow text.
    let arrays = |inner: Value| {
        let mut v = inner;
        for _ in 0..40 {
            v = json!({"type": "array", "items": v});
        }
        v
    };
    let layered = json!({"type": "record", "name": "Top", "fields": [
        {"name": "a", "type": {"type": "record", "name": "A", "fields": [{"name": "x", "type": arrays(json!("int"))}]}},
        {"name": "b", "type": {"type": "record", "name": "B", "fields": [{"name": "y", "type": arrays(json!("A"))}]}}
    ]});
    let err = AvroSchema::compile(&layered, "/p").unwrap_err();
    assert!(
        err.contains("nested deeper than 64 once `A` is expanded"),
        "{err}"
    );
}
