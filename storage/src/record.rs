//! What the log stores: one [`Record`] per change of durable state, encoded with rkyv.

use rkyv::{Archive, Deserialize, Serialize};

/// A message as stored: everything needed to send it again.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS it goes out with (1 or 2).
    pub qos: u8,
    /// RETAIN flag on the way out.
    pub retain: bool,
    /// MQTT 5 properties, encoded as on the wire (property length included); empty for none.
    pub properties: Vec<u8>,
    /// Absolute expiry, in milliseconds of the Unix epoch; 0 for none.
    pub expires_at_ms: u64,
}

/// A subscription as stored.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoredSubscription {
    /// Topic filter (shared ones included).
    pub filter: String,
    /// Subscription options byte as on the wire (QoS, no local, retain as published,
    /// retain handling).
    pub options: u8,
    /// Subscription identifier, 0 for none.
    pub sub_id: u32,
}

/// One change of durable state. Sessions are named by client id; messages queued for a
/// session by a sequence number unique within that session.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A persistent session exists (created or resumed) with this expiry interval.
    Session {
        /// Client id.
        client: String,
        /// Session expiry interval, seconds (u32::MAX: never).
        expiry: u32,
    },
    /// The session ended: everything about it is gone.
    SessionEnd {
        /// Client id.
        client: String,
    },
    /// A subscription was added or replaced.
    Subscribe {
        /// Client id.
        client: String,
        /// The subscription.
        sub: StoredSubscription,
    },
    /// A subscription was removed.
    Unsubscribe {
        /// Client id.
        client: String,
        /// Topic filter.
        filter: String,
    },
    /// A QoS 1/2 message was queued (or sent) to the session and is not acknowledged yet.
    Enqueue {
        /// Client id.
        client: String,
        /// Sequence number within the session.
        seq: u64,
        /// The message.
        message: StoredMessage,
    },
    /// QoS 2 message `seq` went out under this packet id (a resend must reuse it).
    Sent {
        /// Client id.
        client: String,
        /// Sequence number.
        seq: u64,
        /// Packet id.
        packet_id: u16,
    },
    /// The client received PUBREC for message `seq` (QoS 2: PUBREL is what to resend).
    Released {
        /// Client id.
        client: String,
        /// Sequence number.
        seq: u64,
    },
    /// The message is done (PUBACK / PUBCOMP, expired, or dropped at the queue bound).
    Done {
        /// Client id.
        client: String,
        /// Sequence number.
        seq: u64,
    },
    /// An inbound QoS 2 packet id awaits PUBREL (exactly once on receipt across restarts).
    Qos2Received {
        /// Client id.
        client: String,
        /// Packet id.
        packet_id: u16,
    },
    /// PUBREL arrived for the packet id.
    Qos2Released {
        /// Client id.
        client: String,
        /// Packet id.
        packet_id: u16,
    },
    /// A retained message was set.
    Retain {
        /// The message (topic inside).
        message: StoredMessage,
        /// Last-writer-wins version (wall-clock nanoseconds, shard id in the low bits).
        version: u64,
    },
    /// A topic's retained message was cleared.
    RetainClear {
        /// Topic.
        topic: String,
        /// Last-writer-wins version.
        version: u64,
    },
    // The compact records come last: rkyv tags variants by position, and logs written before
    // them hold the variants above under their old tags.
    /// A QoS 1/2 message given to a session, written once per shard however many sessions
    /// get it: its body (see [`crate::compact`]) and its first recipient. `id` is the
    /// shard's message id and the recipient's sequence number. Encoded compactly.
    Message {
        /// Client id of the first recipient.
        client: String,
        /// Message id (the sequence number in every recipient's queue).
        id: u64,
        /// QoS it goes out with to this recipient.
        qos: u8,
        /// RETAIN flag on the way out to this recipient.
        retain: bool,
        /// The body, encoded ([`crate::compact::put_body`]).
        body: Vec<u8>,
    },
    /// A further recipient of the message `id` written just before. Encoded compactly.
    Ref {
        /// Client id.
        client: String,
        /// Message id.
        id: u64,
        /// QoS it goes out with to this recipient.
        qos: u8,
        /// RETAIN flag on the way out.
        retain: bool,
    },
    /// A batch of the session's messages is done (acknowledged, expired or dropped): the
    /// batched form of [`Record::Done`]. Encoded compactly.
    Acked {
        /// Client id.
        client: String,
        /// Sequence numbers (a set).
        seqs: Vec<u64>,
    },
}
