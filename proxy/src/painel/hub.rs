//! The in-process registry of open panel sockets: which group each socket listens to, the
//! per-IP and global caps, and the fan-out of one message to every socket of a group.
//!
//! The hub never blocks on a socket: each socket has a bounded queue, and a socket whose
//! queue is full is told to close (it reconnects and gets a fresh snapshot) instead of
//! holding the others back. Redis is the bridge's business ([`super::bridge`]); the hub only
//! reports when a group gains its first socket or loses its last one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

/// Why a new socket is refused before its handshake completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("the edge holds its maximum number of panel sockets")]
    Global,
    #[error("this address holds its maximum number of panel sockets")]
    PerIp,
}

/// A change the bridge must mirror in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// The group has sockets here now: join it.
    Joined(String),
    /// The group may have lost its last socket: leave it if it did.
    Left(String),
}

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub queued: usize,
    /// Sockets whose queue was full; they are being closed.
    pub slow: usize,
}

struct Member {
    tx: mpsc::Sender<Arc<str>>,
    kick: Arc<Notify>,
}

#[derive(Default)]
struct Group {
    sessao_id: u64,
    members: HashMap<u64, Member>,
    /// Cookies of a socket that passed the permission check: the poll-to-push poller asks
    /// Django with them (see `poll.rs`).
    credentials: Option<Arc<Credentials>>,
}

/// What Django needs to answer a dados request as a given viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub host: String,
    pub cookie: String,
}

#[derive(Default)]
struct Inner {
    groups: HashMap<String, Group>,
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// The registry shared by the socket tasks, the bridge and the poller.
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    max_sockets: usize,
    max_per_ip: usize,
    send_queue: usize,
    changes: mpsc::UnboundedSender<GroupChange>,
}

impl Hub {
    /// A hub and the receiving end of its group changes (for the bridge).
    pub fn new(
        max_sockets: usize,
        max_per_ip: usize,
        send_queue: usize,
    ) -> (Arc<Hub>, mpsc::UnboundedReceiver<GroupChange>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let hub = Hub {
            inner: Mutex::new(Inner::default()),
            next_id: AtomicU64::new(1),
            max_sockets,
            max_per_ip,
            send_queue,
            changes,
        };
        (Arc::new(hub), rx)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new socket against the caps; the slot is released when dropped.
    pub fn reserve(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, CapError> {
        let mut inner = self.lock();
        if inner.total >= self.max_sockets {
            return Err(CapError::Global);
        }
        if let Some(ip) = ip {
            let count = inner.per_ip.entry(ip).or_default();
            if *count >= self.max_per_ip {
                return Err(CapError::PerIp);
            }
            *count += 1;
        }
        inner.total += 1;
        Ok(Slot {
            hub: self.clone(),
            ip,
        })
    }

    /// Adds a socket to `group`; it receives the group's messages until the
    /// [`Membership`] is dropped.
    pub fn join(
        self: &Arc<Self>,
        group: &str,
        sessao_id: u64,
        credentials: Option<Credentials>,
    ) -> Membership {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.send_queue);
        let kick = Arc::new(Notify::new());
        let first = {
            let mut inner = self.lock();
            let entry = inner.groups.entry(group.to_string()).or_default();
            entry.sessao_id = sessao_id;
            if entry.credentials.is_none() {
                entry.credentials = credentials.map(Arc::new);
            }
            entry.members.insert(
                id,
                Member {
                    tx,
                    kick: kick.clone(),
                },
            );
            entry.members.len() == 1
        };
        if first {
            let _ = self.changes.send(GroupChange::Joined(group.to_string()));
        }
        Membership {
            hub: self.clone(),
            group: group.to_string(),
            id,
            rx,
            kick,
        }
    }

    fn leave(&self, group: &str, id: u64) {
        let last = {
            let mut inner = self.lock();
            let Some(entry) = inner.groups.get_mut(group) else {
                return;
            };
            entry.members.remove(&id);
            if entry.members.is_empty() {
                inner.groups.remove(group);
                true
            } else {
                false
            }
        };
        if last {
            let _ = self.changes.send(GroupChange::Left(group.to_string()));
        }
    }

    /// Queues `text` for every socket of `group`.
    pub fn broadcast(&self, group: &str, text: Arc<str>) -> Delivery {
        let inner = self.lock();
        let mut delivery = Delivery::default();
        let Some(entry) = inner.groups.get(group) else {
            return delivery;
        };
        for member in entry.members.values() {
            match member.tx.try_send(text.clone()) {
                Ok(()) => delivery.queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    delivery.slow += 1;
                    member.kick.notify_one();
                }
                // The socket is closing; its membership goes with it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        delivery
    }

    /// Whether the group has sockets on this edge.
    pub fn has_group(&self, group: &str) -> bool {
        self.lock().groups.contains_key(group)
    }

    /// The groups with sockets here, with their sessão and a viewer's credentials.
    pub fn groups(&self) -> Vec<(String, u64, Option<Arc<Credentials>>)> {
        self.lock()
            .groups
            .iter()
            .map(|(name, g)| (name.clone(), g.sessao_id, g.credentials.clone()))
            .collect()
    }

    /// Sockets open on this edge.
    pub fn total(&self) -> usize {
        self.lock().total
    }
}

/// A socket counted against the caps.
pub struct Slot {
    hub: Arc<Hub>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(count) = inner.per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    inner.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// One socket's place in a group: its message queue and the signal that it is too slow.
pub struct Membership {
    hub: Arc<Hub>,
    group: String,
    id: u64,
    /// Messages for this socket, in order.
    pub rx: mpsc::Receiver<Arc<str>>,
    /// Notified when the queue overflowed: the socket must close.
    pub kick: Arc<Notify>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.group, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_total() {
        let (hub, _changes) = Hub::new(3, 2, 4);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = hub.reserve(Some(a)).unwrap();
        let _s2 = hub.reserve(Some(a)).unwrap();
        assert_eq!(hub.reserve(Some(a)).err(), Some(CapError::PerIp));
        let _s3 = hub.reserve(Some(b)).unwrap();
        assert_eq!(hub.reserve(Some(b)).err(), Some(CapError::Global));
        drop(s1);
        assert!(hub.reserve(Some(a)).is_ok());
    }

    #[test]
    fn first_join_and_last_leave_are_reported() {
        let (hub, mut changes) = Hub::new(10, 10, 4);
        let m1 = hub.join("painel_1", 1, None);
        let m2 = hub.join("painel_1", 1, None);
        assert_eq!(
            changes.try_recv().unwrap(),
            GroupChange::Joined("painel_1".into())
        );
        drop(m1);
        assert!(changes.try_recv().is_err(), "one socket is still there");
        drop(m2);
        assert_eq!(
            changes.try_recv().unwrap(),
            GroupChange::Left("painel_1".into())
        );
        assert!(!hub.has_group("painel_1"));
    }

    #[test]
    fn a_full_queue_kicks_only_that_socket() {
        let (hub, _changes) = Hub::new(10, 10, 1);
        let mut fast = hub.join("painel_7", 7, None);
        let slow = hub.join("painel_7", 7, None);
        let first = hub.broadcast("painel_7", Arc::from("um"));
        assert_eq!(first, Delivery { queued: 2, slow: 0 });
        assert_eq!(&*fast.rx.try_recv().unwrap(), "um");
        let second = hub.broadcast("painel_7", Arc::from("dois"));
        assert_eq!(second, Delivery { queued: 1, slow: 1 });
        assert_eq!(&*fast.rx.try_recv().unwrap(), "dois");
        drop(slow);
    }
}
