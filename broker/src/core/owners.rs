//! Sessions shared with other brokers through one Redis database (`redis_shared`), on a
//! session's home shard: a CONNECT waits for its claim of the client id (its connection
//! reads nothing meanwhile); a session another broker had is loaded from what the claim
//! read; a session another broker claimed since is forgotten here — its connection closed
//! with 0x8E, nothing written, no will (its client is alive elsewhere). The threads behind
//! it are `crate::owners`.

use std::time::{Duration, Instant};

use bytestring::ByteString;
use net::codec::{Connect, ReasonCode};
use rustc_hash::FxHashMap;
use storage::record::Record;
use storage::redis::owners::{Claim, Claimed, Notice};
use storage::state::State;

use super::{connect, Core, Effect};
use crate::ids::{ConnId, SessionId};
use crate::owners::{Event, Request, Shared, CHECK_CHUNK};
use crate::session::Journal;

/// How long after a check that could not be asked (or answered) it is asked again.
const CHECK_RETRY: Duration = Duration::from_secs(1);

/// A CONNECT waiting for its claim: the packet, and the client id assigned to it if it sent
/// none.
#[derive(Debug)]
struct Parked {
    connect: Box<Connect>,
    assigned: Option<ByteString>,
    since: Instant,
}

/// A shard's side of sharing sessions.
#[derive(Debug)]
pub struct Owners {
    pub(super) shared: Shared,
    /// CONNECTs waiting for their claim.
    parked: FxHashMap<ConnId, Parked>,
    /// The epoch this broker holds each session of the shard under.
    epochs: FxHashMap<String, u64>,
    /// Client ids with a claim out here.
    claims_out: FxHashMap<String, ClaimsOut>,
    /// A check of the sessions held is owed (it could not be asked or answered): when next.
    check_due: Option<Instant>,
    /// The client whose claimed CONNECT is being accepted: a session of it removed meanwhile
    /// (a clean start, a takeover) keeps its epoch in the store for the new one.
    pub(super) accepting: Option<String>,
}

/// What is known while claims of one client id are out.
#[derive(Debug, Default)]
struct ClaimsOut {
    /// How many are parked.
    parked: u32,
    /// The newest epoch another broker claimed it under meanwhile (an older claim loses).
    newest_elsewhere: u64,
    /// Notices may have been missed meanwhile: checked once a claim is accepted.
    recheck: bool,
}

/// A broker's id tag: the low 16 bits of the message ids it gives (FNV-1a of its id).
pub(crate) fn id_tag(broker: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in broker.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as u16
}

impl Owners {
    /// A claim of `client` is out here (its CONNECT waits for Redis).
    pub(super) fn claiming(&self, client: &str) -> bool {
        self.claims_out.contains_key(client)
    }
}

impl Core {
    /// Shares this shard's sessions with other brokers through `shared` (the sessions loaded
    /// at start are held under the epochs the load found).
    pub fn share_sessions(&mut self, shared: Shared) {
        self.durable.tag_ids(id_tag(&shared.broker));
        let epochs = std::mem::take(&mut self.start_epochs);
        self.owners = Some(Owners {
            shared,
            parked: FxHashMap::default(),
            epochs: epochs.into_iter().collect(),
            claims_out: FxHashMap::default(),
            check_due: None,
            accepting: None,
        });
    }

    /// A connection parked until its claim answers: it reads nothing meanwhile.
    pub(crate) fn claiming(&self, id: ConnId) -> bool {
        self.owners
            .as_ref()
            .is_some_and(|o| o.parked.contains_key(&id))
    }

    /// CONNECT on the session's home shard: with shared sessions, claims the client id first
    /// (the connection waits, paused); else accepts it now.
    pub(crate) fn claim_then_accept(&mut self, id: ConnId, mut connect: Box<Connect>) {
        if self.owners.is_none() {
            return connect::accept(self, id, &mut connect, None);
        }
        if self.durable.fenced() {
            // Another process took this broker id: it must not take clients from it.
            let reason = ReasonCode::SERVER_UNAVAILABLE;
            let why = "this broker lost its Redis lock to another process with its id";
            return connect::refuse(self, id, &connect, reason, why);
        }
        // An id assigned here is claimed too: its session's owner key is what a restart
        // loads it by.
        let assigned = connect.client_id.is_empty().then(|| {
            let cid = self.next_assigned_client_id();
            connect.client_id = cid.clone();
            cid
        });
        let Some(owners) = &mut self.owners else {
            return;
        };
        let persistent = if connect.version.is_v5() {
            connect.properties.session_expiry_interval.unwrap_or(0) != 0
        } else {
            !connect.clean_start
        };
        let claim = Claim {
            client: connect.client_id.to_string(),
            data: !connect.clean_start,
            persistent,
        };
        owners
            .claims_out
            .entry(claim.client.clone())
            .or_default()
            .parked += 1;
        let request = Request::Claim {
            shard: owners.shared.shard,
            conn: id,
            claim,
        };
        if let Err(why) = owners.shared.request(request) {
            self.forget_claim(&connect.client_id);
            return connect::refuse(self, id, &connect, ReasonCode::SERVER_BUSY, why);
        }
        let since = self.now;
        owners.parked.insert(
            id,
            Parked {
                connect,
                assigned,
                since,
            },
        );
        // Nothing more is read from it until the claim answers.
        self.effects.push_back(Effect::Pause(id));
    }

    /// Handles what the claimer and the watcher sent (at most the inbox's capacity:
    /// `redis_claims_max` + [`crate::owners::NOTICES_MAX`]).
    pub fn poll_owners(&mut self) {
        let Some(owners) = &self.owners else {
            return;
        };
        owners.shared.answered();
        while let Some(event) = self.owners.as_ref().and_then(|o| o.shared.next_event()) {
            match event {
                Event::Claimed {
                    conn,
                    claim,
                    result,
                } => self.claimed(conn, &claim, result),
                Event::Taken(notice) => self.taken(&notice),
                Event::Missed => self.check_held(),
                Event::CheckFailed => self.owe_check(),
                Event::Checked(found) => {
                    for (client, epoch, owner) in found {
                        self.checked(&client, epoch, owner);
                    }
                }
            }
        }
    }

    /// On the tick: a check owed is asked again once due; a CONNECT whose claim found no
    /// answer in time (the claimer stuck or gone) is refused.
    pub(crate) fn owners_tick(&mut self) {
        let due = self
            .owners
            .as_ref()
            .and_then(|o| o.check_due)
            .is_some_and(|at| self.now >= at);
        if due {
            self.check_held();
        }
        let now = self.now;
        let limit = self.claim_deadline();
        let late: Vec<ConnId> = self
            .owners
            .as_ref()
            .map(|o| {
                o.parked
                    .iter()
                    .filter(|(_, p)| now.duration_since(p.since) > limit)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        for id in late {
            let Some(p) = self.owners.as_mut().and_then(|o| o.parked.remove(&id)) else {
                continue;
            };
            self.forget_claim(&p.connect.client_id);
            tracing::warn!(shard = self.id.0, client = %p.connect.client_id, "no answer to a claim in Redis in time: CONNECT refused");
            let why = "the session store (Redis) did not answer in time";
            connect::refuse(self, id, &p.connect, ReasonCode::SERVER_UNAVAILABLE, why);
        }
    }

    /// How long a CONNECT may wait for its claim: the CONNECT timeout plus two attempts of
    /// the claimer (a connection and a stalled reply each).
    fn claim_deadline(&self) -> Duration {
        let c = &self.config;
        Duration::from_millis(
            c.connect_timeout_ms + 2 * (c.redis_connect_timeout_ms + c.redis_hold_ms.max(1000)),
        )
    }

    fn owe_check(&mut self) {
        let now = self.now;
        if let Some(o) = &mut self.owners {
            o.check_due = Some(now + CHECK_RETRY);
        }
    }

    fn epoch_of(&self, client: &str) -> Option<u64> {
        self.owners.as_ref()?.epochs.get(client).copied()
    }

    /// A claim of `client` is over (answered, refused or abandoned): what was learnt while
    /// it was out, forgotten with the last one.
    fn forget_claim(&mut self, client: &str) -> ClaimsOut {
        let Some(o) = &mut self.owners else {
            return ClaimsOut::default();
        };
        let Some(out) = o.claims_out.get_mut(client) else {
            return ClaimsOut::default();
        };
        out.parked = out.parked.saturating_sub(1);
        let seen = ClaimsOut {
            parked: out.parked,
            newest_elsewhere: out.newest_elsewhere,
            recheck: out.recheck,
        };
        if out.parked == 0 {
            o.claims_out.remove(client);
        }
        seen
    }

    fn claimed(&mut self, conn: ConnId, claim: &Claim, result: Result<Box<Claimed>, String>) {
        let Some(Parked {
            mut connect,
            assigned,
            ..
        }) = self.owners.as_mut().and_then(|o| o.parked.remove(&conn))
        else {
            return;
        };
        let ClaimsOut {
            newest_elsewhere: newer_elsewhere,
            recheck,
            ..
        } = self.forget_claim(&claim.client);
        let live = self.conn_mut(conn).is_some_and(|l| !l.closing);
        let refusal = match &result {
            Ok(c) if c.epoch >= newer_elsewhere => None,
            // Another broker claimed it after this claim, and its notice came first.
            Ok(_) => Some("the client id was claimed by a newer connection on another broker"),
            Err(why) => {
                tracing::warn!(shard = self.id.0, client = %claim.client, error = %why, "claim of a client id in Redis failed: CONNECT refused");
                Some("the session store (Redis) is unavailable")
            }
        };
        let claimed = match (result, refusal) {
            (Ok(c), None) => c,
            (_, why) => {
                if live {
                    let why = why.unwrap_or_default();
                    let reason = ReasonCode::SERVER_UNAVAILABLE;
                    connect::refuse(self, conn, &connect, reason, why);
                }
                return;
            }
        };
        let broker = self.owners.as_ref().map(|o| o.shared.broker.clone());
        let held = self.epoch_of(&claim.client);
        // Its writes from now on are this claim's (Redis refuses them once another broker
        // claims it); set again after each step below that ends a session here (an ended
        // session's epoch is forgotten by the store).
        self.owned_in_store(&claim.client, claimed.epoch);
        // This node holds it in Redis now, whatever becomes of the CONNECT: no longer
        // followed elsewhere (a stale entry would send its copies back to where it was).
        self.held_here(&claim.client);
        if let (Some(feed), Some((from, _)), Some(me)) = (&self.cluster, &claimed.previous, &broker)
        {
            if **from != **me {
                // Copies from here name this node for a while (`Feed::names_sender`).
                feed.session_arrived();
            }
        }
        if let (Some(_), Some((from, _)), Some(me)) = (&self.cluster, &claimed.previous, &broker) {
            if **from != **me && !connect.clean_start {
                // Resumed here: a delayed will of its connection to that node is not sent
                // (should that node be dead, `cluster/wills.rs` finds the record cleared).
                self.sinks.clear_will_of(from, &claim.client);
            }
        }
        let here = self.by_client.contains_key(claim.client.as_str());
        let mine = match (&claimed.previous, broker) {
            // This broker's, under the epoch held here (or a later one of its own: a claim
            // whose reply was lost and that the claimer made again), within one unbroken hold
            // (not one another broker's claim interrupted, unseen here: that one's state is
            // loaded).
            (Some((b, e)), Some(me)) => {
                **b == *me && held.is_some_and(|h| *e >= h && claimed.held_since <= h)
            }
            // Nobody's in Redis (an owner key that expired): a session here stays.
            (None, _) => here,
            _ => false,
        };
        let mut imported = false;
        if !mine {
            if let Some(sid) = self.by_client.get(claim.client.as_str()).copied() {
                self.forget_session(sid, "session taken over by a client on another broker");
                self.owned_in_store(&claim.client, claimed.epoch);
            }
            if connect.clean_start {
                // Whatever another broker kept of it ends (its owner key stays: see layout).
                self.end_stored(&claim.client);
            } else if let Some(loaded) = claimed.session {
                self.import(loaded);
                imported = true;
                if let Some(sid) = self.by_client.get(claim.client.as_str()).copied() {
                    self.note_imported(sid);
                }
                if let Some((from, _)) = &claimed.previous {
                    self.claimed_from(&claim.client, from);
                }
            }
            if claimed.skipped > 0 {
                tracing::warn!(client = %claim.client, skipped = claimed.skipped, "values of a claimed session in Redis do not decode: skipped");
            }
        }
        if live {
            if let Some(o) = &mut self.owners {
                o.accepting = Some(claim.client.clone());
            }
            connect::accept(self, conn, &mut connect, assigned);
            if let Some(o) = &mut self.owners {
                o.accepting = None;
            }
            // Nothing was read while it waited: its keep alive counts from now.
            let now = self.now;
            if let Some(link) = self.conn_mut(conn) {
                link.last_seen = now;
            }
            // Bytes that came after the CONNECT are read now.
            self.effects.push_back(Effect::Resume(conn));
        }
        // After the accept: a clean start there ends the old session (and its epoch).
        if self.by_client.contains_key(claim.client.as_str()) {
            self.owned_in_store(&claim.client, claimed.epoch);
            if let Some(o) = &mut self.owners {
                o.epochs.insert(claim.client.clone(), claimed.epoch);
                // Notices may have been missed while this claim was out: ask now.
                if recheck {
                    let held = vec![(claim.client.clone(), claimed.epoch)];
                    let request = Request::Check {
                        shard: o.shared.shard,
                        held,
                    };
                    if o.shared.request(request).is_err() {
                        o.check_due = Some(self.now + CHECK_RETRY);
                    }
                }
            }
        } else if !imported && !mine && !connect.clean_start {
            // Claimed for a connection that went away, with nothing to hold: the owner key
            // gets a deadline (no session keeps it).
            self.end_stored(&claim.client);
            self.durable.session_forgotten(&claim.client);
        } else {
            // No session here: nothing more is written for it.
            self.durable.session_forgotten(&claim.client);
        }
    }

    /// The store writes `client`'s session as this broker's under `epoch` (guarded).
    fn owned_in_store(&mut self, client: &str, epoch: u64) {
        if let Some(me) = self.owners.as_ref().map(|o| o.shared.broker.clone()) {
            self.durable.session_owned(client, &me, epoch);
        }
    }

    /// Ends whatever is stored of `client`'s session (its owner key stays, with a deadline).
    fn end_stored(&mut self, client: &str) {
        self.durable.append_journal(
            client,
            &Journal::Record(Record::SessionEnd {
                client: client.to_string(),
            }),
            None,
        );
    }

    /// A session another broker had, as its claim read it: rebuilt here, offline until its
    /// connection is accepted.
    fn import(&mut self, loaded: storage::redis::load::LoadedSession) {
        let mut state = State::default();
        for record in &loaded.records {
            state.apply(record);
        }
        let expiry = loaded.expiry;
        let State {
            sessions, bodies, ..
        } = state;
        for (client, st) in sessions {
            self.restore_session(client.clone(), st, &bodies, true);
            self.durable.session_loaded(&client, loaded.qos2);
            if expiry != u32::MAX {
                self.durable.session_offline(&client, expiry);
            }
        }
    }

    /// Another broker claimed `notice.client`: forgotten here unless this broker holds it
    /// under a newer epoch; a claim of it still out here loses if it is older.
    fn taken(&mut self, notice: &Notice) {
        if let Some(o) = &mut self.owners {
            if let Some(out) = o.claims_out.get_mut(&notice.client) {
                out.newest_elsewhere = out.newest_elsewhere.max(notice.epoch);
            }
        }
        if self
            .epoch_of(&notice.client)
            .is_some_and(|held| held >= notice.epoch)
        {
            return;
        }
        if let Some(o) = &mut self.owners {
            o.epochs.remove(&notice.client);
        }
        if let Some(sid) = self.by_client.get(notice.client.as_str()).copied() {
            tracing::info!(shard = self.id.0, client = %notice.client, broker = %notice.broker, "session claimed by another broker: forgotten here");
            self.forget_moved(sid, &notice.broker);
        }
    }

    /// Asks who owns every session held here (notices may have been missed); owed again
    /// (on the tick) if it cannot be asked now.
    fn check_held(&mut self) {
        let now = self.now;
        let Some(o) = &mut self.owners else {
            return;
        };
        o.check_due = None;
        // Claims out now may have been made before a notice this broker missed.
        for out in o.claims_out.values_mut() {
            out.recheck = true;
        }
        let held: Vec<(String, u64)> = o.epochs.iter().map(|(c, e)| (c.clone(), *e)).collect();
        let shard = o.shared.shard;
        for chunk in held.chunks(CHECK_CHUNK * 16) {
            let request = Request::Check {
                shard,
                held: chunk.to_vec(),
            };
            if let Err(why) = o.shared.request(request) {
                tracing::warn!(
                    shard = self.id.0,
                    "ownership check not asked: {why} (asked again in a second)"
                );
                o.check_due = Some(now + CHECK_RETRY);
                return;
            }
        }
    }

    /// A check's answer: `client` was held under `epoch` when asked; its owner now.
    fn checked(&mut self, client: &str, epoch: u64, owner: Option<(String, u64)>) {
        if self.epoch_of(client) != Some(epoch) {
            // Claimed again (or forgotten) since the question.
            return;
        }
        let me = self.owners.as_ref().map(|o| o.shared.broker.clone());
        let ours = match &owner {
            // This broker's, under the epoch held or a later one of its own (a claim whose
            // CONNECT was refused after its EVAL ran).
            Some((b, e)) => Some(b.as_str()) == me.as_deref() && *e >= epoch,
            // No owner key (it expired): nobody claimed it since.
            None => true,
        };
        let Some((new_owner, _)) = owner.filter(|_| !ours) else {
            return;
        };
        if let Some(o) = &mut self.owners {
            o.epochs.remove(client);
        }
        if let Some(sid) = self.by_client.get(client).copied() {
            tracing::info!(
                shard = self.id.0,
                client,
                "session no longer owned by this broker (found by a check): forgotten here"
            );
            self.forget_moved(sid, &new_owner);
        }
    }

    /// Drops a session from this shard without a trace in the store: its connection, if
    /// any, is closed with 0x8E; its will is not sent; its unwritten changes are discarded.
    /// Its unfinished shared-subscription messages go to other members of their groups, as
    /// when any session ends (the new owner may deliver some of them too: at least once).
    pub(super) fn forget_session(&mut self, sid: SessionId, why: &str) {
        let Some(session) = self.session_mut(sid) else {
            return;
        };
        let client = session.client_id.to_string();
        session.durable = false;
        session.will = None;
        session.journal.clear();
        if let Some(conn) = session.conn {
            self.close(conn, Some(ReasonCode::SESSION_TAKEN_OVER), why);
        }
        if self.session_mut(sid).is_some() {
            self.remove_session(sid);
        }
        self.durable.session_forgotten(&client);
    }

    /// This broker's id when it shares sessions through Redis.
    pub(crate) fn shared_broker_id(&self) -> Option<std::sync::Arc<str>> {
        Some(self.owners.as_ref()?.shared.broker.clone())
    }

    /// The session ended here: its epoch is forgotten (a later CONNECT claims again).
    pub(crate) fn session_ended(&mut self, client: &str) {
        if let Some(o) = &mut self.owners {
            o.epochs.remove(client);
        }
    }
}
