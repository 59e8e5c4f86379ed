//! The reactor's listeners and connection layers: one SO_REUSEPORT socket per configured
//! listener (`listen`, `tls_listen`, `ws_listen`, `wss_listen`) with a multishot accept each
//! (the listener's index rides in the token's slot bits); a connection accepted on a TLS or
//! WebSocket listener gets its [`Transport`], which received bytes go through before the
//! codec and output after the core (`crate::transport`); the hand-over of a connection to
//! its home shard, layers included, once no send of it is in flight.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use net::codec::Connect;
use net::uring::Completion;

use super::{lookup, token, Shard, KIND_ACCEPT};
use crate::config::Config;
use crate::core::peer::ShardMsg;
use crate::ids::{ConnId, ShardId};
use crate::transport::{Kind, LayerSettings, Transport, TransportError};

/// One listening socket.
#[derive(Debug)]
pub(super) struct Listener {
    fd: OwnedFd,
    kind: Kind,
    /// Its multishot accept is armed.
    armed: bool,
}

/// Opens every configured listener (each shard has its own, SO_REUSEPORT).
pub(super) fn open(config: &Config, shard: u16) -> anyhow::Result<Vec<Listener>> {
    let wanted = [
        (Kind::Tcp, Some(config.listen)),
        (Kind::Tls, config.tls_listen),
        (Kind::Ws, config.ws_listen),
        (Kind::Wss, config.wss_listen),
    ];
    let mut listeners = Vec::new();
    for (kind, addr) in wanted {
        let Some(addr) = addr else { continue };
        let fd = net::uring::reuseport_listener(addr, 4096)
            .map_err(|e| anyhow::anyhow!("shard {shard}: {} on {addr}: {e}", kind.key()))?;
        listeners.push(Listener {
            fd,
            kind,
            armed: false,
        });
    }
    Ok(listeners)
}

/// The layers' settings from the config.
pub(super) fn layer_settings(config: &Config) -> Arc<LayerSettings> {
    Arc::new(LayerSettings {
        path: config.ws_path.clone(),
        frame_max: config.ws_frame_bytes_max,
        request_max: config.handshake_bytes_max,
        output_max: config.outbox_bytes_max,
    })
}

fn listener_token(index: usize) -> u64 {
    token(
        KIND_ACCEPT,
        ConnId {
            slot: index as u32,
            generation: 0,
        },
    )
}

impl Shard {
    /// Arms the accept of every listener not armed.
    pub(super) fn arm_accept(&mut self) {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if !l.armed {
                self.ring.accept_multi(l.fd.as_raw_fd(), listener_token(i));
                l.armed = true;
            }
        }
    }

    /// Cancels every armed accept (shutdown).
    pub(super) fn cancel_accept(&mut self) {
        for (i, l) in self.listeners.iter().enumerate() {
            if l.armed {
                self.ring.cancel(listener_token(i));
            }
        }
    }

    /// Every listener's accept is armed.
    pub(super) fn accepting(&self) -> bool {
        self.listeners.iter().all(|l| l.armed)
    }

    pub(super) fn on_accept(&mut self, c: &Completion) {
        let index = super::token_conn(c.token).slot as usize;
        let Some(listener) = self.listeners.get_mut(index) else {
            return;
        };
        if !c.more() {
            listener.armed = false;
        }
        let (kind, armed) = (listener.kind, listener.armed);
        if c.result == -libc::ECANCELED {
            return;
        }
        let shard = self.core.id.0;
        if c.result < 0 {
            // EMFILE/ENFILE and friends: stop accepting until the next tick instead of
            // spinning on an error the kernel will keep returning.
            if armed {
                self.ring.cancel(listener_token(index));
            }
            if !self.accept_failing {
                self.accept_failing = true;
                let error = std::io::Error::from_raw_os_error(-c.result);
                tracing::warn!(shard, %error, "accept failed; retrying every tick until it succeeds");
            }
            return;
        }
        let fd = net::uring::adopt_fd(c.result);
        if self.accept_failing {
            self.accept_failing = false;
            tracing::info!(shard, "accepting connections again");
        }
        if self.stopping_since.is_some() {
            return;
        }
        let limit = self.core.config.connections_per_shard_max;
        if self.conn_count >= limit {
            tracing::warn!(
                shard,
                limit,
                "connection refused: connections_per_shard_max reached"
            );
            return;
        }
        if let Err(e) = net::uring::set_nodelay(&fd) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let transport = match kind {
            Kind::Tcp => None,
            _ => match Transport::new(kind, self.core.auth.tls.as_ref(), &self.layer_settings) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    tracing::warn!(shard, listener = kind.key(), error = %e, "connection refused");
                    return;
                }
            },
        };
        self.core.stats.accepted += 1;
        let layered = transport.is_some();
        let id = self.add_conn(fd);
        if let Some(conn) = lookup(&mut self.conns, id) {
            conn.transport = transport;
        }
        if layered {
            self.core.handshake_started(id);
        }
        self.arm_recv(id);
    }

    /// After bytes went through the connection's layers: the handshake's end is told to the
    /// core, answers are queued for sending, a failure closes the connection (after what it
    /// queued for the peer: an alert, an HTTP error, a close frame). True when the peer
    /// ended its stream cleanly (handled like a closed socket).
    pub(super) fn after_layers(&mut self, id: ConnId, failed: Option<TransportError>) -> bool {
        let Some(conn) = lookup(&mut self.conns, id) else {
            return false;
        };
        let Some(t) = conn.transport.as_deref() else {
            return false;
        };
        let (established, output, closed) = (t.established(), t.has_output(), t.peer_closed());
        // The core's link still counts the handshake as under way: this is its end.
        let handshaking = self.core.conn_mut(id).is_some_and(|l| l.handshaking);
        let client = (established && handshaking).then(|| t.client_name());
        if let Some(client) = client {
            self.core.handshake_done(id, client);
        }
        if output {
            self.core.mark_dirty(id);
        }
        if let Some(e) = failed {
            tracing::info!(shard = self.core.id.0, "connection closed: {e}");
            self.core.close(id, None, &e.to_string());
            self.apply();
        }
        closed
    }

    /// Moves connection `id` to its home shard, its layers included; once its send in
    /// flight (a TLS handshake's last flight) is done, if there is one.
    pub(super) fn hand_over(&mut self, id: ConnId, home: ShardId, connect: Box<Connect>) {
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if conn.closing {
            // Closed while the hand-over waited (shutdown, a timeout): it does not happen.
            return self.release_if_idle(id);
        }
        if conn.sending != 0 {
            conn.handoff = Some((home, connect));
            return;
        }
        let ready = conn.recv == super::RecvState::Idle && conn.fd.is_some();
        if !ready {
            return self.core.close(
                id,
                None,
                "cannot hand the connection over (receive still armed)",
            );
        }
        let fd = conn.fd.take();
        let rest = std::mem::take(&mut conn.rbuf);
        let transport = conn.transport.take();
        conn.closing = true;
        self.release_if_idle(id);
        if let Some(fd) = fd {
            self.send_to_peer(
                home,
                ShardMsg::Adopt {
                    fd,
                    connect,
                    rest,
                    transport,
                },
            );
        }
    }

    /// Output of connection `id` waits in its layers (not in the core).
    pub(super) fn layers_pending(&mut self, id: ConnId) -> bool {
        lookup(&mut self.conns, id)
            .and_then(|c| c.transport.as_deref())
            .is_some_and(Transport::has_output)
    }
}
