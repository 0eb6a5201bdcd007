//! Spreads connections over the serving threads.
//!
//! Every thread accepts from the one listening socket, but the kernel wakes whichever thread is
//! waiting, and that thread accepts a whole burst: a client opening its keep-alive pool would
//! get every connection on one thread — one core — while the others idle. So a thread that
//! accepts a connection while it serves more than another thread hands the connection to the
//! thread with the fewest (as Envoy's exact connection balance does): one hand-off per
//! connection, never per request, and a connection stays on its thread for its whole life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The open connections of every serving thread, and where to hand them one.
pub(super) struct Balance {
    open: Box<[AtomicUsize]>,
    /// `entra_proxy_open_connections{worker}`: the same counts, for operators.
    gauges: Box<[metrics::Gauge]>,
    inboxes: Box<[UnboundedSender<Handoff>]>,
}

/// A connection accepted by one thread for another to serve.
pub(super) struct Handoff {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) counted: Counted,
}

/// One open connection in its thread's count, until dropped.
pub(super) struct Counted {
    balance: Arc<Balance>,
    worker: usize,
}

impl Counted {
    /// The thread the connection is counted on, which serves it.
    pub(super) fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.balance.open[self.worker].fetch_sub(1, Ordering::Relaxed);
        self.balance.gauges[self.worker].decrement(1.0);
    }
}

impl Balance {
    /// The balance of `workers` threads, and each thread's inbox of handed-off connections.
    pub(super) fn new(workers: usize) -> (Arc<Balance>, Vec<UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers) = (0..workers)
            .map(|_| unbounded_channel())
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let balance = Balance {
            open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            gauges: (0..workers)
                .map(|w| metrics::gauge!("entra_proxy_open_connections", "worker" => w.to_string()))
                .collect(),
            inboxes: inboxes.into_boxed_slice(),
        };
        (Arc::new(balance), receivers)
    }

    /// Which thread serves a connection that `worker` accepted, counted in that thread's
    /// connections from now on.
    pub(super) fn place(self: &Arc<Self>, worker: usize) -> Counted {
        let to = least_loaded(&self.counts(), worker);
        self.count(to)
    }

    /// Every thread's open connections, now.
    fn counts(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect()
    }

    /// Counts one more connection on `worker`.
    pub(super) fn count(self: &Arc<Self>, worker: usize) -> Counted {
        self.open[worker].fetch_add(1, Ordering::Relaxed);
        self.gauges[worker].increment(1.0);
        Counted {
            balance: self.clone(),
            worker,
        }
    }

    /// Sends a connection to the inbox of the thread it is counted on; gives it back when that
    /// thread no longer serves.
    pub(super) fn hand_off(&self, handoff: Handoff) -> Result<(), Handoff> {
        self.inboxes[handoff.counted.worker]
            .send(handoff)
            .map_err(|e| e.0)
    }
}

/// The thread with the fewest open connections, `mine` unless another has fewer than it.
fn least_loaded(open: &[usize], mine: usize) -> usize {
    let (least, fewest) = open
        .iter()
        .enumerate()
        .min_by_key(|(_, n)| **n)
        .map_or((mine, 0), |(i, n)| (i, *n));
    if open.get(mine).is_some_and(|n| fewest < *n) {
        least
    } else {
        mine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_a_connection_unless_another_serves_fewer() {
        assert_eq!(least_loaded(&[0, 0], 0), 0);
        assert_eq!(least_loaded(&[3, 3, 3], 2), 2);
        assert_eq!(least_loaded(&[1, 0], 0), 1);
        assert_eq!(least_loaded(&[5, 2, 1], 0), 2);
        assert_eq!(least_loaded(&[5, 2, 1], 2), 2);
        assert_eq!(least_loaded(&[2, 2, 1, 1], 1), 2);
        assert_eq!(least_loaded(&[0], 0), 0);
    }

    #[test]
    fn a_burst_accepted_by_one_thread_is_spread_evenly_and_uncounted_when_closed() {
        let (balance, _inboxes) = Balance::new(4);
        let mut open = Vec::new();
        for _ in 0..32 {
            open.push(balance.place(0));
        }
        assert_eq!(balance.counts(), [8, 8, 8, 8]);
        assert_eq!(open.iter().filter(|c| c.worker() == 3).count(), 8);
        open.clear();
        assert_eq!(balance.counts(), [0, 0, 0, 0]);
    }
}
