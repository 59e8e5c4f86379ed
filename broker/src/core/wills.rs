//! A cluster node's copy of its clients' wills in Kafka: while a client is connected (or its
//! will's delay runs), its will is a record in the node's wills topic (`cluster/wills.rs`
//! reads it when the node dies); once the will is published here, cancelled by a normal
//! DISCONNECT, or the session ends or moves away, a tombstone replaces it. Outside a
//! cluster nothing is written.

use super::Core;
use crate::ids::SessionId;

impl Core {
    /// A CONNECT set `sid`'s will (or none): the node's wills topic gets it, or a tombstone
    /// for a will noted for an earlier connection.
    pub(crate) fn note_connect_will(&mut self, sid: SessionId) {
        if self.cluster.is_none() {
            return;
        }
        let Some(session) = self.session_mut(sid) else {
            return;
        };
        let client = session.client_id.clone();
        match session.will.clone() {
            Some(will) => {
                let delay = session.will_delay.min(session.expiry_interval);
                self.sinks.note_will(&client, Some((&will, delay)));
                self.wills_noted.insert(client);
            }
            None => {
                if self.wills_noted.remove(&client) {
                    self.sinks.note_will(&client, None);
                }
            }
        }
    }

    /// `client`'s will may be gone (published, cancelled, the session ended or moved): a
    /// noted one without a will in its session any more gets its tombstone.
    pub(crate) fn note_will_gone(&mut self, client: &str) {
        if self.wills_noted.is_empty() || !self.wills_noted.contains(client) {
            return;
        }
        let sid = self.by_client.get(client).copied();
        let still = sid
            .and_then(|sid| self.session_mut(sid))
            .is_some_and(|s| s.will.is_some());
        if !still {
            self.wills_noted.remove(client);
            self.sinks.note_will(client, None);
        }
    }
}
