//! Sessions shared with other brokers through one Redis database (`redis_shared`), on a
//! session's home shard: a CONNECT waits for its claim of the client id (its connection
//! reads nothing meanwhile); a session another broker had is loaded from what the claim
//! read; a session another broker claimed since is forgotten here — its connection closed
//! with 0x8E, nothing written, no will (its client is alive elsewhere). The threads behind
//! it are `crate::owners`.

use net::codec::{Connect, ReasonCode};
use rustc_hash::FxHashMap;
use storage::redis::owners::{Claim, Claimed, Notice};
use storage::state::State;

use super::{connect, Core, Effect};
use crate::ids::{ConnId, SessionId};
use crate::owners::{Event, Request, Shared, CHECK_CHUNK};

/// A shard's side of sharing sessions.
#[derive(Debug)]
pub struct Owners {
    shared: Shared,
    /// CONNECTs waiting for their claim.
    parked: FxHashMap<ConnId, Box<Connect>>,
    /// The epoch this broker holds each session of the shard under.
    epochs: FxHashMap<String, u64>,
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
        });
    }

    /// A connection parked until its claim answers: it reads nothing meanwhile.
    pub(crate) fn claiming(&self, id: ConnId) -> bool {
        self.owners
            .as_ref()
            .is_some_and(|o| o.parked.contains_key(&id))
    }

    /// CONNECT on the session's home shard: with shared sessions, claims the client id first
    /// (the connection waits); else accepts it now.
    pub(crate) fn claim_then_accept(&mut self, id: ConnId, mut connect: Box<Connect>) {
        let Some(owners) = &mut self.owners else {
            return connect::accept(self, id, &mut connect);
        };
        if connect.client_id.is_empty() {
            // An id assigned here: this broker's own.
            return connect::accept(self, id, &mut connect);
        }
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
        let request = Request::Claim {
            shard: owners.shared.shard,
            conn: id,
            claim,
        };
        if !owners.shared.request(request) {
            return connect::refuse(
                self,
                id,
                &connect,
                ReasonCode::SERVER_BUSY,
                "redis_claims_max CONNECTs wait for their claim in Redis",
            );
        }
        owners.parked.insert(id, connect);
    }

    /// Handles what the claimer and the watcher sent (at most the inbox's capacity:
    /// `redis_claims_max` + [`crate::owners::NOTICES_MAX`]).
    pub fn poll_owners(&mut self) {
        let Some(owners) = &self.owners else {
            return;
        };
        owners.shared.answered();
        loop {
            let Some(event) = self.owners.as_ref().and_then(|o| o.shared.next_event()) else {
                return;
            };
            match event {
                Event::Claimed {
                    conn,
                    claim,
                    result,
                } => self.claimed(conn, &claim, result),
                Event::Taken(notice) => self.taken(&notice),
                Event::Missed => self.check_held(),
                Event::Checked(found) => {
                    for (client, epoch, owner) in found {
                        self.checked(&client, epoch, owner);
                    }
                }
            }
        }
    }

    fn epoch_of(&self, client: &str) -> Option<u64> {
        self.owners.as_ref()?.epochs.get(client).copied()
    }

    fn claimed(&mut self, conn: ConnId, claim: &Claim, result: Result<Box<Claimed>, String>) {
        let Some(mut connect) = self.owners.as_mut().and_then(|o| o.parked.remove(&conn)) else {
            return;
        };
        let live = self.conn_mut(conn).is_some_and(|l| !l.closing);
        let claimed = match result {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(shard = self.id.0, client = %claim.client, error = %why, "claim of a client id in Redis failed: CONNECT refused");
                if live {
                    connect::refuse(
                        self,
                        conn,
                        &connect,
                        ReasonCode::SERVER_UNAVAILABLE,
                        "the session store (Redis) is unavailable",
                    );
                }
                return;
            }
        };
        let broker = self.owners.as_ref().map(|o| o.shared.broker.clone());
        let held = self.epoch_of(&claim.client);
        let mine = match (&claimed.previous, broker) {
            (Some((b, e)), Some(me)) => **b == *me && Some(*e) == held,
            // Nobody's in Redis: a session here is one this broker made without a claim
            // (an assigned client id).
            (None, _) => held.is_none() && self.by_client.contains_key(claim.client.as_str()),
            _ => false,
        };
        if !mine {
            let sid = self.by_client.get(claim.client.as_str()).copied();
            if let Some(sid) = sid {
                self.forget_session(sid, "session taken over by a client on another broker");
            }
            if connect.clean_start {
                // Whatever another broker kept of it ends (its owner key stays: see layout).
                self.durable.append_journal(
                    &claim.client,
                    crate::session::Journal::Record(storage::record::Record::SessionEnd {
                        client: claim.client.clone(),
                    }),
                );
            } else if let Some(loaded) = claimed.session {
                self.import(loaded);
            }
            if claimed.skipped > 0 {
                tracing::warn!(client = %claim.client, skipped = claimed.skipped, "values of a claimed session in Redis do not decode: skipped");
            }
        }
        if live {
            connect::accept(self, conn, &mut connect);
            // Bytes that came after the CONNECT are read now.
            self.effects.push_back(Effect::Resume(conn));
        }
        // After the accept: a clean start there ends the old session (and its epoch).
        if let Some(o) = &mut self.owners {
            o.epochs.insert(claim.client.clone(), claimed.epoch);
        }
    }

    /// A session another broker had, as its claim read it: rebuilt here, offline until its
    /// connection is accepted.
    fn import(&mut self, loaded: storage::redis::load::LoadedSession) {
        let mut state = State::default();
        for record in &loaded.records {
            state.apply(record);
        }
        let expiry = loaded.expiry;
        for (client, st) in state.sessions {
            self.restore_session(client.clone(), st, true);
            self.durable.session_loaded(&client, loaded.qos2);
            if expiry != u32::MAX {
                self.durable.session_offline(&client, expiry);
            }
        }
    }

    /// Another broker claimed `notice.client`: forgotten here unless this broker holds it
    /// under a newer epoch.
    fn taken(&mut self, notice: &Notice) {
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
            self.forget_session(sid, "session taken over by a client on another broker");
        }
    }

    /// Asks who owns every session held here (notices may have been missed).
    fn check_held(&mut self) {
        let Some(o) = &self.owners else {
            return;
        };
        let held: Vec<(String, u64)> = o.epochs.iter().map(|(c, e)| (c.clone(), *e)).collect();
        let shard = o.shared.shard;
        for chunk in held.chunks(CHECK_CHUNK * 16) {
            let request = Request::Check {
                shard,
                held: chunk.to_vec(),
            };
            if !o.shared.request(request) {
                tracing::warn!(shard = self.id.0, "ownership check not asked: the claims queue is full (asked again when the watcher resubscribes)");
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
        let ours = owner.is_some_and(|(b, e)| Some(b.as_str()) == me.as_deref() && e == epoch);
        if ours {
            return;
        }
        if let Some(o) = &mut self.owners {
            o.epochs.remove(client);
        }
        if let Some(sid) = self.by_client.get(client).copied() {
            tracing::info!(
                shard = self.id.0,
                client,
                "session no longer owned by this broker (found by a check): forgotten here"
            );
            self.forget_session(sid, "session taken over by a client on another broker");
        }
    }

    /// Drops a session from this shard without a trace in the store: its connection, if
    /// any, is closed with 0x8E; its will is not sent; its unwritten changes are discarded.
    fn forget_session(&mut self, sid: SessionId, why: &str) {
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

    /// The session ended here: its epoch is forgotten (a later CONNECT claims again).
    pub(crate) fn session_ended(&mut self, client: &str) {
        if let Some(o) = &mut self.owners {
            o.epochs.remove(client);
        }
    }
}
