//! Persistent subscribers going offline for part of a run (`--offline`) and coming back to
//! their sessions: the broker must queue for them meanwhile.

use std::os::fd::{AsRawFd, OwnedFd};

use super::wire::{handshake, Hello};
use super::{Role, Run};

impl Run<'_> {
    /// Persistent-session test: every subscriber drops its connection (shutdown; its receive
    /// completes with 0 and is not re-armed).
    pub(super) fn subscribers_offline(&mut self) {
        for c in &mut self.clients {
            if !matches!(c.role, Role::Subscriber { .. }) {
                continue;
            }
            if let Some(fd) = c.fd.take() {
                // SAFETY: shutdown on a socket we own; the descriptor stays open until `fd`
                // drops at the end of this block.
                #[allow(unsafe_code)]
                unsafe {
                    libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR);
                }
                c.out.clear();
                c.rbuf.clear();
            }
        }
    }

    /// Every subscriber reconnects to its persistent session.
    pub(super) fn subscribers_online(&mut self) -> anyhow::Result<()> {
        for i in 0..self.clients.len() {
            let Some(c) = self.clients.get(i) else {
                continue;
            };
            let Role::Subscriber { index, .. } = c.role else {
                continue;
            };
            let Some(spec) = self.topology.subscribers.get(index as usize) else {
                continue;
            };
            let hello = Hello {
                client_id: &spec.client_id,
                version: self.load.version,
                clean: false,
                session_expiry: 3600,
                subscribe: None,
                layers: &self.load.layers,
            };
            let (stream, _, early, link) =
                handshake(self.load.subscriber_addr(index as usize), &hello)?;
            if let Some(c) = self.clients.get_mut(i) {
                c.fd = Some(OwnedFd::from(stream));
                c.link = link;
                c.recv_armed = false;
                c.sending = false;
                c.rbuf = early;
            }
            self.process_input(i);
            self.arm_recv(i);
        }
        Ok(())
    }
}
