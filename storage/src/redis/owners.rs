//! Sessions shared by several brokers on one Redis database (`redis_shared`): which broker
//! owns a client id, the claim a CONNECT makes, and the notice the other brokers hear.
//!
//! - `ringmq:{cid}:o` hash: `b` → the owning broker's id, `e` → its epoch, `s` → the first
//!   epoch of the owner's unbroken hold (a broker claiming again a session it owns keeps
//!   it: its writes under an earlier epoch of that hold still count, [`super::layout::GUARD`]).
//!   An epoch is the claim's Redis server time in microseconds, raised above the previous
//!   epoch of the key if the clock says less: it only grows, and stays unique even after the
//!   key expired with its session or was deleted with it.
//! - A claim is one Lua call (read the owner, write the new one, `PUBLISH` the notice on
//!   [`CHANNEL`]) followed, in the same pipeline, by the reads of the session's keys.
//! - A notice is `<epoch>\n<broker>\n<client id>` (the client id last: it may hold anything).

use std::io;

use super::layout::{client_key, OWNER};
use super::load::{self, Client, LoadedSession};
use super::resp::{self, Reply};

/// The channel notices go out on.
pub const CHANNEL: &[u8] = b"ringmq:owners";

/// The claim: KEYS[1] the owner key; ARGV: broker id, channel, client id, TTL in ms of the
/// owner key (0: none; a session that ends with its connection). Returns the previous
/// broker, the previous epoch (nil for none), the new epoch and the first epoch of this
/// broker's unbroken hold, as strings.
pub const CLAIM: &[u8] = b"local o = redis.call('HMGET', KEYS[1], 'b', 'e', 's') \
local t = redis.call('TIME') \
local e = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
local old = tonumber(o[2]) \
if old and old >= e then e = old + 1 end \
local es = string.format('%.0f', e) \
local s = es \
if o[1] == ARGV[1] then s = o[3] or o[2] or es end \
redis.call('HSET', KEYS[1], 'b', ARGV[1], 'e', es, 's', s) \
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) \
else redis.call('PERSIST', KEYS[1]) end \
redis.call('PUBLISH', ARGV[2], es .. '\\n' .. ARGV[1] .. '\\n' .. ARGV[3]) \
return {o[1], o[2], es, s}";

/// How long the owner key of a session that ends with its connection lives (it only tells
/// the next claim who had it; epochs stay unique without it).
pub const TRANSIENT_OWNER_MS: u64 = 24 * 3600 * 1000;

/// One claim asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Client id.
    pub client: String,
    /// Read the session's keys too (a resume; a clean start needs nothing).
    pub data: bool,
    /// The session outlives its connection (the owner key then expires with the session).
    pub persistent: bool,
}

/// What a claim found.
#[derive(Debug)]
pub struct Claimed {
    /// Client id.
    pub client: String,
    /// The epoch this broker owns the client id under from now.
    pub epoch: u64,
    /// The owner before: broker id and epoch.
    pub previous: Option<(String, u64)>,
    /// The first epoch of this broker's unbroken hold (`epoch` unless it owned the client id
    /// already): writes under an epoch from it on count ([`super::layout::GUARD`]).
    pub held_since: u64,
    /// The session as stored (with `data`; None: there is none).
    pub session: Option<LoadedSession>,
    /// Values that did not validate (skipped, logged).
    pub skipped: usize,
}

/// A broker claimed a client id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The claim's epoch.
    pub epoch: u64,
    /// The claiming broker's id.
    pub broker: String,
    /// Client id.
    pub client: String,
}

/// The notice in a `PUBLISH`ed payload, if it is one.
pub fn notice_of(payload: &[u8]) -> Option<Notice> {
    let text = std::str::from_utf8(payload).ok()?;
    let (epoch, rest) = text.split_once('\n')?;
    let (broker, client) = rest.split_once('\n')?;
    Some(Notice {
        epoch: epoch.parse().ok()?,
        broker: broker.to_string(),
        client: client.to_string(),
    })
}

/// The commands of one claim by broker `broker` (appended to `out`).
pub fn commands(claim: &Claim, broker: &str, out: &mut Vec<Vec<u8>>) {
    let ttl = if claim.persistent {
        0
    } else {
        TRANSIENT_OWNER_MS
    };
    out.push(resp::command(&[
        b"EVAL",
        CLAIM,
        b"1",
        &client_key(&claim.client, OWNER),
        broker.as_bytes(),
        CHANNEL,
        claim.client.as_bytes(),
        ttl.to_string().as_bytes(),
    ]));
    if claim.data {
        load::session_reads(&claim.client, out);
    }
}

fn text(reply: Option<&Reply>) -> Option<String> {
    match reply {
        Some(Reply::Bulk(Some(b))) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// The claim's result from its replies (taken from `replies`, as many as [`commands`] made).
pub fn claimed(claim: &Claim, replies: &mut impl Iterator<Item = Reply>) -> io::Result<Claimed> {
    let first = replies.next().unwrap_or(Reply::Array(None));
    // Every reply of this claim is taken, whatever happens: the next claim's follow.
    let data: Vec<Reply> = if claim.data {
        replies.take(load::SESSION_READS).collect()
    } else {
        Vec::new()
    };
    if let Some(e) = first.error() {
        return Err(io::Error::other(format!("Redis: {e}")));
    }
    let Reply::Array(Some(items)) = first else {
        return Err(io::Error::other("Redis: malformed claim reply"));
    };
    let epoch = text(items.get(2))
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| io::Error::other("Redis: malformed claim reply"))?;
    let previous = match (
        text(items.first()),
        text(items.get(1)).and_then(|e| e.parse().ok()),
    ) {
        (Some(b), Some(e)) => Some((b, e)),
        _ => None,
    };
    let held_since = text(items.get(3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(epoch);
    let mut skipped = 0;
    let session = if claim.data {
        let mut data = data.into_iter();
        let mut next = || data.next().unwrap_or(Reply::Array(None));
        let (s, q, p, r, i) = (next(), next(), next(), next(), next());
        for reply in [&s, &q, &p, &r, &i] {
            if let Some(e) = reply.error() {
                return Err(io::Error::other(format!("Redis: {e}")));
            }
        }
        load::session(claim.client.clone(), s, q, p, r, i, &mut skipped)?
    } else {
        None
    };
    Ok(Claimed {
        client: claim.client.clone(),
        epoch,
        previous,
        held_since,
        session,
        skipped,
    })
}

/// Makes `claims` on one connection, as one pipeline: each one's result (or why it failed).
pub fn claim(
    client: &mut Client,
    claims: &[Claim],
    broker: &str,
) -> io::Result<Vec<io::Result<Claimed>>> {
    let mut out = Vec::with_capacity(claims.len() * 6);
    for c in claims {
        commands(c, broker, &mut out);
    }
    let mut replies = client.pipeline(&out)?.into_iter();
    Ok(claims.iter().map(|c| claimed(c, &mut replies)).collect())
}

/// The owner of each of `clients` (broker id and epoch; None: nobody), one pipeline.
pub fn owners(client: &mut Client, clients: &[String]) -> io::Result<Vec<Option<(String, u64)>>> {
    let commands: Vec<Vec<u8>> = clients
        .iter()
        .map(|c| resp::command(&[b"HMGET", &client_key(c, OWNER), b"b", b"e"]))
        .collect();
    let replies = client.pipeline(&commands)?;
    if let Some(e) = replies.iter().find_map(Reply::error) {
        return Err(io::Error::other(format!("Redis: {e}")));
    }
    Ok(replies
        .into_iter()
        .map(|r| match r {
            Reply::Array(Some(items)) => {
                Some((text(items.first())?, text(items.get(1))?.parse().ok()?))
            }
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_read_back_and_keep_newlines_in_client_ids() {
        let n = notice_of(b"1733130000000001\nb1\ndev\n1").unwrap();
        assert_eq!(n.epoch, 1_733_130_000_000_001);
        assert_eq!(n.broker, "b1");
        assert_eq!(n.client, "dev\n1");
        assert!(notice_of(b"x\nb1\nc").is_none());
        assert!(notice_of(b"1\nb1").is_none());
    }

    #[test]
    fn a_claims_reply_reads_back() {
        let claim = Claim {
            client: "c".into(),
            data: false,
            persistent: true,
        };
        let reply = Reply::Array(Some(vec![
            Reply::Bulk(Some(b"b0".to_vec())),
            Reply::Bulk(Some(b"17".to_vec())),
            Reply::Bulk(Some(b"18".to_vec())),
        ]));
        let c = claimed(&claim, &mut std::iter::once(reply)).unwrap();
        assert_eq!((c.epoch, c.previous), (18, Some(("b0".into(), 17))));
        assert_eq!(
            c.held_since, 18,
            "no hold start in the reply: the new epoch"
        );
        let reply = Reply::Array(Some(vec![
            Reply::Bulk(Some(b"b0".to_vec())),
            Reply::Bulk(Some(b"17".to_vec())),
            Reply::Bulk(Some(b"18".to_vec())),
            Reply::Bulk(Some(b"12".to_vec())),
        ]));
        let c = claimed(&claim, &mut std::iter::once(reply)).unwrap();
        assert_eq!(c.held_since, 12);
        let first = Reply::Array(Some(vec![
            Reply::Bulk(None),
            Reply::Bulk(None),
            Reply::Bulk(Some(b"5".to_vec())),
        ]));
        let c = claimed(&claim, &mut std::iter::once(first)).unwrap();
        assert_eq!((c.epoch, c.previous), (5, None));
        let err = Reply::Error("NOSCRIPT".into());
        assert!(claimed(&claim, &mut std::iter::once(err)).is_err());
    }
}
