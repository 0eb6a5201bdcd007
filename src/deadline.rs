//! Timeouts that every request arms and almost none reaches — hyper's wait for the next request
//! head, the wait for a new connection's first bytes and the wait for Azure's first byte — kept
//! in a list per serving thread and checked by one ticker task on that thread, instead of
//! tokio's timer wheel.
//!
//! Through tokio each of them is a wheel insert and a remove under the time driver's lock, and
//! an insert whose deadline falls before the driver's planned wake-up writes to its `eventfd`,
//! which costs one more `epoll_wait` on the next turn: once per request on a quiet connection.
//! Here arming one is a slot in a vector under an uncontended lock, without a clock read; the
//! ticker sleeps until the earliest deadline, never longer than [`MAX_PLAN`], so a new deadline
//! at least that far away never moves it. A deadline fires when it is due, as tokio's would.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The longest the ticker sleeps while deadlines are armed: a deadline armed at least this far
/// ahead never wakes the ticker to re-plan.
pub(crate) const MAX_PLAN: Duration = Duration::from_secs(1);

/// One serving thread's armed deadlines. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Deadlines {
    shared: Arc<Mutex<List>>,
}

#[derive(Default)]
struct List {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Tells a slot's owner from a later one's that reuses its index.
    next_id: u64,
    /// When the ticker will look next (`None`: it waits for a deadline to be armed).
    planned: Option<Instant>,
    ticker: Option<Waker>,
}

struct Slot {
    id: u64,
    at: Instant,
    /// Taken when the deadline fires.
    waker: Option<Waker>,
}

impl List {
    fn arm(&mut self, at: Instant, waker: &Waker) -> (usize, u64, Option<Waker>) {
        let id = self.next_id;
        self.next_id += 1;
        let slot = Slot {
            id,
            at,
            waker: Some(waker.clone()),
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        // The ticker re-plans only for a deadline before its next look.
        let replan = self.planned.is_none_or(|p| at < p);
        let ticker = if replan { self.ticker.take() } else { None };
        (index, id, ticker)
    }

    fn get(&mut self, index: usize, id: u64) -> Option<&mut Slot> {
        self.slots
            .get_mut(index)?
            .as_mut()
            .filter(|slot| slot.id == id)
    }

    fn disarm(&mut self, index: usize, id: u64) {
        if self.get(index, id).is_some() {
            self.slots[index] = None;
            self.free.push(index);
        }
    }

    /// Fires what is due at `now` (their wakers appended to `due`); the earliest deadline left.
    fn fire(&mut self, now: Instant, due: &mut Vec<Waker>) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for slot in self.slots.iter_mut().filter_map(Option::as_mut) {
            if slot.waker.is_none() {
                continue; // fired already
            }
            if slot.at <= now {
                due.extend(slot.waker.take());
            } else {
                earliest = Some(earliest.map_or(slot.at, |e| e.min(slot.at)));
            }
        }
        earliest
    }
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines").finish_non_exhaustive()
    }
}

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, List> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A sleep until `at`, to be polled on any thread; it fires once [`Deadlines::run`] (the
    /// ticker) sees it due.
    pub(crate) fn sleep_until(&self, at: Instant) -> Sleep {
        Sleep {
            deadlines: self.clone(),
            at,
            armed: None,
        }
    }

    /// The ticker: runs until the runtime stops. Spawn it once, on the thread that arms.
    pub(crate) async fn run(self) {
        Ticker {
            deadlines: self,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            due: Vec::new(),
        }
        .await;
    }

    /// Deadlines armed and not fired yet.
    #[cfg(test)]
    fn armed(&self) -> usize {
        self.lock()
            .slots
            .iter()
            .flatten()
            .filter(|s| s.waker.is_some())
            .count()
    }
}

/// A deadline: ready once it has passed. Disarmed when dropped.
pub(crate) struct Sleep {
    deadlines: Deadlines,
    at: Instant,
    /// Slot index and id, once polled.
    armed: Option<(usize, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let wake_ticker = {
            let mut list = this.deadlines.lock();
            match this.armed {
                Some((index, id)) => match list.get(index, id) {
                    Some(slot) if slot.waker.is_none() => return Poll::Ready(()),
                    Some(slot) => {
                        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            slot.waker = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                    None => return Poll::Ready(()),
                },
                None => {
                    let (index, id, ticker) = list.arm(this.at, cx.waker());
                    this.armed = Some((index, id));
                    ticker
                }
            }
        };
        if let Some(ticker) = wake_ticker {
            ticker.wake();
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((index, id)) = self.armed {
            self.deadlines.lock().disarm(index, id);
        }
    }
}

impl hyper::rt::Sleep for Sleep {}

/// hyper's timer for HTTP/1 connections (its header-read timeout), on a thread's deadlines.
#[derive(Clone)]
pub(crate) struct HyperTimer(pub(crate) Deadlines);

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.0.sleep_until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.0.sleep_until(deadline))
    }
}

/// `future`, or `Err(Elapsed)` once `at` has passed first. The future is pinned by the caller,
/// in its own state: taken by value, an `async fn` would hold it twice (as the argument and as
/// the pinned local), and the request path would copy both.
pub(crate) async fn timeout_at<F: Future>(
    deadlines: &Deadlines,
    at: Instant,
    mut future: Pin<&mut F>,
) -> Result<F::Output, Elapsed> {
    let sleep = deadlines.sleep_until(at);
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// A deadline passed before the future it bounded was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

struct Ticker {
    deadlines: Deadlines,
    sleep: Pin<Box<tokio::time::Sleep>>,
    due: Vec<Waker>,
}

impl Future for Ticker {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            let now = Instant::now();
            let planned = {
                let mut list = this.deadlines.lock();
                let earliest = list.fire(now, &mut this.due);
                let planned = earliest.map(|e| e.min(now + MAX_PLAN));
                list.planned = planned;
                list.ticker = Some(cx.waker().clone());
                planned
            };
            for waker in this.due.drain(..) {
                waker.wake();
            }
            let Some(planned) = planned else {
                return Poll::Pending;
            };
            this.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(planned));
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deadlines() -> Deadlines {
        let deadlines = Deadlines::default();
        tokio::spawn(deadlines.clone().run());
        deadlines
    }

    #[tokio::test]
    async fn a_sleep_fires_at_its_deadline_and_not_before() {
        let deadlines = deadlines();
        let start = Instant::now();
        deadlines
            .sleep_until(start + Duration::from_millis(300))
            .await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(deadlines.armed(), 0);
    }

    #[tokio::test]
    async fn an_earlier_deadline_than_planned_wakes_the_ticker() {
        let deadlines = deadlines();
        let start = Instant::now();
        // The ticker plans its next look at most MAX_PLAN ahead, then for this one deadline.
        let late = tokio::spawn(deadlines.sleep_until(start + Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        deadlines
            .sleep_until(start + Duration::from_millis(150))
            .await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < MAX_PLAN, "waited for the planned look: {took:?}");
        assert!(!late.is_finished());
        late.abort();
    }

    #[tokio::test]
    async fn a_dropped_sleep_is_disarmed_and_its_slot_reused() {
        let deadlines = deadlines();
        let at = Instant::now() + Duration::from_secs(5);
        let out = timeout_at(&deadlines, at, std::pin::pin!(std::future::ready(7))).await;
        assert_eq!(out, Ok(7));
        assert_eq!(deadlines.armed(), 0);
        let soon = Instant::now() + Duration::from_millis(100);
        let pending = std::pin::pin!(std::future::pending::<()>());
        let out = timeout_at(&deadlines, soon, pending).await;
        assert_eq!(out, Err(Elapsed));
        assert_eq!(deadlines.armed(), 0);
        assert_eq!(deadlines.lock().slots.len(), 1);
    }

    #[tokio::test]
    async fn many_deadlines_fire_in_order() {
        let deadlines = deadlines();
        let start = Instant::now();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in [5u64, 1, 3, 2, 4] {
            let sleep = deadlines.sleep_until(start + Duration::from_millis(100 * i));
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                sleep.await;
                order.lock().unwrap().push(i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 3, 4, 5]);
    }
}
