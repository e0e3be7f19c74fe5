//! Who gets a connection slot at accept, besides `maxConnections`: at most
//! `maxConnectionsPerClient` open connections from one IP address (nginx `limit_conn`) and at
//! most `maxPendingHandshakes` connections still in their handshake, at most half of them from
//! one address, so a flood of clients that never finish a handshake cannot take the slots
//! verified clients need, neither the connection slots nor the pending ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::ConnectionLimit;
use crate::settings::Limits;

/// The per-client and pending-handshake caps of one listener.
#[derive(Debug)]
pub(crate) struct Caps {
    per_client: Option<usize>,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    pending: Arc<Semaphore>,
    /// Pending handshakes by client address, at most `pending_share` each.
    pending_by_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    pending_share: usize,
}

/// What a connection holds of the caps until it closes (`client`) or finishes its handshake
/// (`handshake`).
#[derive(Debug)]
pub(crate) struct CapSlots {
    pub(crate) client: Option<ClientSlot>,
    /// Boxed: it travels with the connection when a worker hands it to another.
    pub(crate) handshake: Box<HandshakeSlot>,
}

/// A connection's place among the pending handshakes; released on drop.
#[derive(Debug)]
pub(crate) struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    _client: ClientSlot,
}

impl Caps {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            per_client: limits.max_connections_per_client,
            clients: Arc::default(),
            pending: Arc::new(Semaphore::new(limits.max_pending_handshakes)),
            pending_by_client: Arc::default(),
            // Half, so that one address flooding handshakes leaves the other half to others.
            pending_share: (limits.max_pending_handshakes / 2).max(1),
        }
    }

    /// Takes the slots of a connection from `ip`, or names the limit that refuses it.
    pub(crate) fn take(&self, ip: IpAddr) -> Result<CapSlots, ConnectionLimit> {
        let client = match self.per_client {
            Some(cap) => Some(slot(&self.clients, ip, cap).ok_or(ConnectionLimit::PerClient)?),
            None => None,
        };
        let pending_client = slot(&self.pending_by_client, ip, self.pending_share)
            .ok_or(ConnectionLimit::PendingHandshakes)?;
        let permit = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConnectionLimit::PendingHandshakes)?;
        Ok(CapSlots {
            client,
            handshake: Box::new(HandshakeSlot {
                _permit: permit,
                _client: pending_client,
            }),
        })
    }
}

/// One more for `ip` in `counts`, unless it already has `cap`.
fn slot(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
    // A poisoned lock only means a panic elsewhere mid-update of a plain counter map.
    let mut clients = counts.lock().unwrap_or_else(PoisonError::into_inner);
    let open = clients.entry(ip).or_insert(0);
    if *open >= cap {
        return None;
    }
    *open += 1;
    Some(ClientSlot {
        clients: counts.clone(),
        ip,
    })
}

/// One connection (open, or in its handshake) counted against its client's address; released
/// on drop.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = clients.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_client: Option<usize>, pending: usize) -> Limits {
        Limits {
            max_connections_per_client: per_client,
            max_pending_handshakes: pending,
            ..Limits::default()
        }
    }

    #[test]
    fn one_address_gets_at_most_its_cap_and_others_are_unaffected() {
        let caps = Caps::new(&limits(Some(2), 100));
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        let first = caps.take(a);
        let second = caps.take(a);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(caps.take(a).err(), Some(ConnectionLimit::PerClient));
        assert!(caps.take(b).is_ok());
        drop(first);
        assert!(caps.take(a).is_ok(), "a closed connection frees its slot");
    }

    #[test]
    fn pending_handshakes_are_capped_until_a_handshake_ends() {
        let caps = Caps::new(&limits(None, 1));
        let ip = IpAddr::from([127, 0, 0, 1]);
        let Ok(first) = caps.take(ip) else {
            panic!("first connection refused");
        };
        assert_eq!(
            caps.take(IpAddr::from([127, 0, 0, 2])).err(),
            Some(ConnectionLimit::PendingHandshakes)
        );
        // The handshake finished: the connection stays, its pending slot is free.
        drop(first.handshake);
        assert!(caps.take(ip).is_ok());
    }

    #[test]
    fn one_address_holds_at_most_half_of_the_pending_handshakes() {
        let caps = Caps::new(&limits(None, 4));
        let flood = IpAddr::from([127, 0, 0, 1]);
        let held: Vec<_> = (0..2).map(|_| caps.take(flood)).collect();
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(
            caps.take(flood).err(),
            Some(ConnectionLimit::PendingHandshakes)
        );
        let other = IpAddr::from([127, 0, 0, 2]);
        assert!(caps.take(other).is_ok(), "the other half is left to others");
        drop(held);
        assert!(caps.take(flood).is_ok());
    }
}
