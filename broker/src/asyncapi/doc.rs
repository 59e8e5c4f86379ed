//! Reading an AsyncAPI document (3.0 or 2.6, YAML or JSON) into the channels the broker
//! enforces: `$ref`s resolved (`refs`), channel addresses split into levels, parameters,
//! who may publish or subscribe, and the messages clients publish with their payload
//! schemas. Errors name the JSON pointer of what is wrong.
//!
//! Perspective: the document describes the broker's API, as Zilla's do. In 3.0 an operation
//! with `action: receive` is one the broker receives (clients publish on its channel), `send`
//! one the broker sends (clients subscribe). In 2.6, as 2.x code generators read it,
//! `publish` is what clients may publish and `subscribe` what they may subscribe to. A
//! channel with no operation allows both.

use serde_json::Value;

/// A document as read, before compiling its schemas.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The `asyncapi` version string.
    pub version: String,
    /// Its channels.
    pub channels: Vec<ChannelSpec>,
}

/// One channel of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    /// The channel's key (3.0) or address (2.6).
    pub name: String,
    /// `devices/{deviceId}/telemetry`.
    pub address: String,
    /// Each parameter with the JSON Schema its level must satisfy (a string).
    pub parameters: Vec<(String, Value)>,
    /// Clients may publish here.
    pub publish: bool,
    /// Clients may subscribe here.
    pub subscribe: bool,
    /// The messages clients may publish here.
    pub messages: Vec<MessageSpec>,
    /// Its Kafka binding, if any (`bindings.kafka`).
    pub kafka: Option<KafkaSpec>,
}

/// A channel's Kafka binding (`bindings.kafka`), with what the bindings of the operation
/// clients subscribe by add (`asyncapi::kafka` turns it into a bridge rule).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KafkaSpec {
    /// `topic`: the Kafka topic (`{parameter}`s allowed where clients publish).
    pub topic: Option<String>,
    /// `partitions`: for a topic the broker creates.
    pub partitions: Option<i32>,
    /// `x-key`: the record key: a channel parameter, `client_id`, `topic` or `none`.
    pub key: Option<String>,
    /// The subscribe operation's `bindings.kafka.groupId` (a schema's `const` or only `enum`
    /// value): the consumer group.
    pub group: Option<String>,
    /// The subscribe operation's `bindings.mqtt.qos`.
    pub qos: Option<u8>,
    /// JSON pointer of the binding (for errors).
    pub pointer: String,
}

/// One message clients may publish.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageSpec {
    /// Its name (key, `name` or `messageId`).
    pub name: String,
    /// `contentType`, or the document's `defaultContentType`.
    pub content_type: Option<String>,
    /// The payload's JSON Schema, resolved (no schema: any payload); the Avro schema when
    /// `avro`.
    pub schema: Option<Value>,
    /// The schema is an Avro schema (`schemaFormat: application/vnd.apache.avro...`): the
    /// payload is an Avro binary datum.
    pub avro: bool,
    /// JSON pointer of the schema in the document (for errors).
    pub pointer: String,
}

/// Parses a document's text (YAML, which includes JSON); local `$ref`s only.
pub fn parse(text: &str) -> Result<Spec, String> {
    parse_at(text, None)
}

/// Parses the text of the document read from `file` (its `$ref`s to other files are read
/// relative to it), or given directly (`None`: local `$ref`s only).
pub fn parse_at(text: &str, file: Option<&std::path::Path>) -> Result<Spec, String> {
    let raw: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
    let doc = super::refs::resolve_document(&raw, file)?;
    let version = doc
        .get("asyncapi")
        .and_then(Value::as_str)
        .ok_or("/asyncapi: missing (the document's AsyncAPI version)")?
        .to_string();
    let default_ct = doc
        .get("defaultContentType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let channels = if version.starts_with("3.") {
        channels_v3(&raw, &doc, default_ct.as_deref())?
    } else if version.starts_with("2.") {
        channels_v2(&doc, default_ct.as_deref())?
    } else {
        return Err(format!(
            "/asyncapi: version {version} (3.0 and 2.6 are read)"
        ));
    };
    Ok(Spec { version, channels })
}

/// A key as a JSON pointer token.
pub use super::refs::escape;
use super::refs::percent_decode;

fn object<'a>(
    v: Option<&'a Value>,
    pointer: &str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, String> {
    match v {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("{pointer}: not an object")),
    }
}

/// The schema formats the broker validates with: AsyncAPI schemas and JSON Schema (in JSON or
/// YAML), and Avro (`Some(true)`); RAML, Protobuf and others are not read (None).
fn schema_format(format: &str) -> Option<bool> {
    let media = format.split(';').next().unwrap_or("").trim();
    if media.starts_with("application/vnd.aai.asyncapi")
        || media == "application/schema+json"
        || media == "application/schema+yaml"
    {
        Some(false)
    } else if matches!(
        media,
        "application/vnd.apache.avro"
            | "application/vnd.apache.avro+json"
            | "application/vnd.apache.avro+yaml"
    ) {
        Some(true)
    } else {
        None
    }
}

/// Why a schema format is refused.
const FORMATS_READ: &str = "JSON Schema, AsyncAPI and Avro schemas are read";

/// RFC 7386 JSON Merge Patch: `patch` applied to `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(fields) = target {
        for (key, change) in changes {
            if change.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), change);
            }
        }
    }
}

/// The members of `defaults` that `target` lacks, added (objects in both: the same, inside).
fn fill_missing(target: &mut Value, defaults: &Value) {
    if let (Value::Object(fields), Value::Object(more)) = (target, defaults) {
        for (key, value) in more {
            match fields.get_mut(key) {
                Some(own) => fill_missing(own, value),
                None => {
                    fields.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// A message with its `traits` applied: 2.x merges each trait into the message in order
/// (JSON Merge Patch: a trait's value replaces the message's); 3.x's traits merge mechanism
/// keeps the message's own values (the traits, merged in order, under the message).
fn with_traits<'a>(
    m: &'a Value,
    v3: bool,
    pointer: &str,
) -> Result<std::borrow::Cow<'a, Value>, String> {
    let traits = match m.get("traits") {
        None => return Ok(std::borrow::Cow::Borrowed(m)),
        Some(Value::Array(traits)) => traits,
        Some(_) => return Err(format!("{pointer}/traits: a list of message traits")),
    };
    let mut own = m.clone();
    if let Value::Object(fields) = &mut own {
        fields.remove("traits");
    }
    if v3 {
        // The traits merged in order, then only what the message does not say taken from
        // them: the message's own values (a `const: null` in its payload included) untouched.
        let mut merged = Value::Null;
        for (i, t) in traits.iter().enumerate() {
            if !t.is_object() {
                return Err(format!(
                    "{pointer}/traits/{i}: a message trait is an object"
                ));
            }
            merge_patch(&mut merged, t);
        }
        fill_missing(&mut own, &merged);
        return Ok(std::borrow::Cow::Owned(own));
    }
    let mut out = own;
    for (i, t) in traits.iter().enumerate() {
        if !t.is_object() {
            return Err(format!(
                "{pointer}/traits/{i}: a message trait is an object"
            ));
        }
        merge_patch(&mut out, t);
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// A message object (after `$ref`s, with its traits applied) as a [`MessageSpec`].
fn message(
    name: &str,
    m: &Value,
    pointer: &str,
    default_ct: Option<&str>,
    v3: bool,
) -> Result<MessageSpec, String> {
    let m = with_traits(m, v3, pointer)?;
    let m = m
        .as_object()
        .ok_or_else(|| format!("{pointer}: a message is an object"))?;
    let name = m
        .get("name")
        .or_else(|| m.get("messageId"))
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    let content_type = m
        .get("contentType")
        .and_then(Value::as_str)
        .or(default_ct)
        .map(str::to_string);
    // 2.6: the message's own `schemaFormat`.
    let mut avro = false;
    if let Some(format) = m.get("schemaFormat").and_then(Value::as_str) {
        avro = schema_format(format)
            .ok_or_else(|| format!("{pointer}/schemaFormat: {format} ({FORMATS_READ})"))?;
    }
    let (schema, pointer) = match m.get("payload") {
        None => (None, format!("{pointer}/payload")),
        // 3.0 multi-format schema object: { schemaFormat, schema }.
        Some(Value::Object(p)) if p.contains_key("schemaFormat") => {
            let format = p.get("schemaFormat").and_then(Value::as_str).unwrap_or("");
            avro = schema_format(format).ok_or_else(|| {
                format!("{pointer}/payload/schemaFormat: {format} ({FORMATS_READ})")
            })?;
            (
                p.get("schema").cloned(),
                format!("{pointer}/payload/schema"),
            )
        }
        Some(p) => (Some(p.clone()), format!("{pointer}/payload")),
    };
    Ok(MessageSpec {
        name,
        content_type,
        schema,
        avro,
        pointer,
    })
}

/// A channel address's parameters from `parameters` (3.0: `enum`; 2.6: `schema`).
fn parameters(
    ch: &serde_json::Map<String, Value>,
    pointer: &str,
    v3: bool,
) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    if let Some(params) = object(ch.get("parameters"), &format!("{pointer}/parameters"))? {
        for (name, p) in params {
            let schema = if v3 {
                match p.get("enum") {
                    Some(e) => serde_json::json!({ "type": "string", "enum": e }),
                    None => serde_json::json!({ "type": "string" }),
                }
            } else {
                p.get("schema").cloned().unwrap_or(serde_json::json!({}))
            };
            out.push((name.clone(), schema));
        }
    }
    Ok(out)
}

/// A channel's `bindings.kafka` and the `bindings` of the operations clients subscribe by
/// (`subs`: each resolved operation and its pointer; two that give different values of one
/// binding are an error naming both).
fn kafka_binding(
    ch: &serde_json::Map<String, Value>,
    pointer: &str,
    subs: &[(&Value, String)],
) -> Result<Option<KafkaSpec>, String> {
    let Some(b) = ch.get("bindings").and_then(|b| b.get("kafka")) else {
        return Ok(None);
    };
    let pointer = format!("{pointer}/bindings/kafka");
    let b = b
        .as_object()
        .ok_or_else(|| format!("{pointer}: not an object"))?;
    let text = |key: &str| -> Result<Option<String>, String> {
        match b.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{pointer}/{key}: not a string")),
        }
    };
    let partitions = match b.get("partitions") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{pointer}/partitions: a positive integer"))?,
        ),
    };
    let mut spec = KafkaSpec {
        topic: text("topic")?,
        partitions,
        key: text("x-key")?,
        pointer: pointer.clone(),
        ..KafkaSpec::default()
    };
    // Each binding with where it was first given, to name it in a conflict.
    let mut group_from = None;
    let mut qos_from = None;
    for (op, op_pointer) in subs {
        let bindings = op.get("bindings");
        if let Some(group) = bindings.and_then(|b| b.pointer("/kafka/groupId")) {
            let one = match (group.get("const"), group.get("enum")) {
                (Some(Value::String(c)), _) => Some(c.clone()),
                (None, Some(Value::Array(e))) if e.len() == 1 => {
                    e.first().and_then(Value::as_str).map(str::to_string)
                }
                _ => None,
            };
            let group = one.ok_or_else(|| {
                format!("{op_pointer}/bindings/kafka/groupId: a schema with a string `const` or one `enum` value")
            })?;
            agree(
                &mut group_from,
                group,
                format!("{op_pointer}/bindings/kafka/groupId"),
                |g| format!("`{g}`"),
                "one channel has one consumer group",
            )?;
        }
        if let Some(qos) = bindings.and_then(|b| b.pointer("/mqtt/qos")) {
            let qos = qos
                .as_u64()
                .filter(|q| *q <= 2)
                .and_then(|q| u8::try_from(q).ok())
                .ok_or_else(|| format!("{op_pointer}/bindings/mqtt/qos: 0, 1 or 2"))?;
            agree(
                &mut qos_from,
                qos,
                format!("{op_pointer}/bindings/mqtt/qos"),
                u8::to_string,
                "the bridge delivers a channel's records at one QoS",
            )?;
        }
    }
    spec.group = group_from.map(|(g, _)| g);
    spec.qos = qos_from.map(|(q, _)| q);
    Ok(Some(spec))
}

/// A binding value given at `at` by one of several operations: the first one kept with where
/// it was given; a different one later is an error naming both (`show` writes a value).
fn agree<T: PartialEq>(
    kept: &mut Option<(T, String)>,
    value: T,
    at: String,
    show: impl Fn(&T) -> String,
    why: &str,
) -> Result<(), String> {
    match kept {
        Some((first, from)) if *first != value => Err(format!(
            "{at}: {}, where {from} says {} ({why})",
            show(&value),
            show(first)
        )),
        Some(_) => Ok(()),
        None => {
            *kept = Some((value, at));
            Ok(())
        }
    }
}

/// The channel key a 3.0 operation's (unresolved) `channel: {$ref: '#/channels/KEY'}` names.
fn operation_channel(raw: &Value, op_name: &str) -> Result<String, String> {
    let pointer = format!("/operations/{}/channel", escape(op_name));
    let target = raw
        .pointer(&format!("{pointer}/$ref"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!(
                "{pointer}: an operation, and its channel, must be written in the main document, the channel as a $ref to #/channels/KEY (operations in other files are not read)"
            )
        })?;
    let decoded = percent_decode(target.strip_prefix('#').unwrap_or(target));
    decoded
        .strip_prefix("/channels/")
        .filter(|k| !k.contains('/'))
        .map(|k| k.replace("~1", "/").replace("~0", "~"))
        .ok_or_else(|| format!("{pointer}/$ref: {target} is not a channel (#/channels/KEY)"))
}

fn channels_v3(
    raw: &Value,
    doc: &Value,
    default_ct: Option<&str>,
) -> Result<Vec<ChannelSpec>, String> {
    let mut out = Vec::new();
    let channels = object(doc.get("channels"), "/channels")?;
    let operations = object(doc.get("operations"), "/operations")?;
    // Each operation's channel, from its reference (not by comparing resolved objects).
    let mut op_channels = Vec::new();
    for (op_name, op) in operations.into_iter().flatten() {
        let key = operation_channel(raw, op_name)?;
        if !channels.is_some_and(|c| c.contains_key(&key)) {
            return Err(format!(
                "/operations/{}/channel: no channel {key}",
                escape(op_name)
            ));
        }
        op_channels.push((key, op_name, op));
    }
    for (key, ch) in channels.into_iter().flatten() {
        let pointer = format!("/channels/{}", escape(key));
        let c = ch
            .as_object()
            .ok_or_else(|| format!("{pointer}: a channel is an object"))?;
        // An absent address means the channel's key (documented: 3.0 calls it unknown).
        let address = match c.get("address") {
            Some(Value::String(a)) => a.clone(),
            Some(Value::Null) | None => key.clone(),
            Some(_) => return Err(format!("{pointer}/address: not a string")),
        };
        let mut all = Vec::new();
        for (name, m) in object(c.get("messages"), &format!("{pointer}/messages"))?
            .into_iter()
            .flatten()
        {
            all.push(message(
                name,
                m,
                &format!("{pointer}/messages/{}", escape(name)),
                default_ct,
                true,
            )?);
        }
        let (mut publish, mut subscribe, mut any_op) = (false, false, false);
        let mut send_ops = Vec::new();
        // The messages receive operations list; `None` once one lists none (all of them).
        let mut received: Option<Vec<MessageSpec>> = Some(Vec::new());
        for (_, op_name, op) in op_channels.iter().filter(|(k, ..)| k == key) {
            any_op = true;
            let op_pointer = format!("/operations/{}", escape(op_name));
            match op.get("action").and_then(Value::as_str) {
                Some("receive") => {
                    publish = true;
                    match op.get("messages") {
                        Some(Value::Array(ms)) if !ms.is_empty() => {
                            for (i, m) in ms.iter().enumerate() {
                                let pointer = format!("{op_pointer}/messages/{i}");
                                let spec = message(
                                    &format!("{op_name}#{i}"),
                                    m,
                                    &pointer,
                                    default_ct,
                                    true,
                                )?;
                                // The channel's own entry (same object) keeps its name.
                                let named = all.iter().find(|a| {
                                    a.schema == spec.schema
                                        && a.avro == spec.avro
                                        && a.content_type == spec.content_type
                                });
                                if let Some(list) = received.as_mut() {
                                    list.push(named.cloned().unwrap_or(spec));
                                }
                            }
                        }
                        _ => received = None,
                    }
                }
                Some("send") => {
                    subscribe = true;
                    send_ops.push((*op, op_pointer.clone()));
                }
                _ => return Err(format!("{op_pointer}/action: send or receive")),
            }
        }
        if !any_op {
            (publish, subscribe) = (true, true);
        }
        let messages = match received {
            Some(list) if !list.is_empty() => list,
            _ => all,
        };
        out.push(ChannelSpec {
            name: key.clone(),
            parameters: parameters(c, &pointer, true)?,
            kafka: kafka_binding(c, &pointer, &send_ops)?,
            address,
            publish,
            subscribe,
            messages,
        });
    }
    Ok(out)
}

fn channels_v2(doc: &Value, default_ct: Option<&str>) -> Result<Vec<ChannelSpec>, String> {
    let mut out = Vec::new();
    for (address, ch) in object(doc.get("channels"), "/channels")?
        .into_iter()
        .flatten()
    {
        let pointer = format!(
            "/channels/{}",
            address.replace('~', "~0").replace('/', "~1")
        );
        let c = ch
            .as_object()
            .ok_or_else(|| format!("{pointer}: a channel is an object"))?;
        let publish_op = c.get("publish");
        let subscribe_op = c.get("subscribe");
        let any_op = publish_op.is_some() || subscribe_op.is_some();
        let mut messages = Vec::new();
        if let Some(op) = publish_op {
            let mp = format!("{pointer}/publish/message");
            match op.get("message") {
                None => {}
                Some(m) => match m.get("oneOf") {
                    Some(Value::Array(ms)) => {
                        for (i, m) in ms.iter().enumerate() {
                            messages.push(message(
                                &format!("message{i}"),
                                m,
                                &format!("{mp}/oneOf/{i}"),
                                default_ct,
                                false,
                            )?);
                        }
                    }
                    _ => messages.push(message("message", m, &mp, default_ct, false)?),
                },
            }
        }
        let sub: Vec<_> = subscribe_op
            .map(|op| (op, format!("{pointer}/subscribe")))
            .into_iter()
            .collect();
        out.push(ChannelSpec {
            name: address.clone(),
            address: address.clone(),
            parameters: parameters(c, &pointer, false)?,
            kafka: kafka_binding(c, &pointer, &sub)?,
            publish: publish_op.is_some() || !any_op,
            subscribe: subscribe_op.is_some() || !any_op,
            messages,
        });
    }
    Ok(out)
}
