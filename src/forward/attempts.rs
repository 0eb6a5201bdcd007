//! The retry and failover policy of one request, as a plain type: which route to try next,
//! what an attempt's outcome means, when to stop. It only decides; the handler sleeps,
//! refreshes tokens, cools backends down and records metrics as it is told.
//!
//! Generic over the answer `A` and the error `E` it keeps for the end, so its tests need no
//! HTTP.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The limits one request's attempts run under.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Attempts allowed for a body that can be sent again (`upstream.max_attempts`).
    pub max_attempts: u32,
    /// No new attempt starts after this.
    pub deadline: Instant,
    /// Whether the request body is in hand, so it can be sent again.
    pub replayable: bool,
    /// Whether a request that timed out may be sent again (`upstream.replay_after_timeout`).
    pub replay_after_timeout: bool,
    /// Whether sending the request twice costs at most a second answer (inference calls), so
    /// that a request Azure may have processed can go to the next target.
    pub safe_to_replay: bool,
}

/// Resends after a kept-alive connection closed under a request, per request.
const MAX_STALE_RESENDS: u32 = 2;

/// The attempts of one request over its routes (numbered in the order routing gave them).
#[derive(Debug)]
pub(super) struct Attempts<A, E> {
    limits: Limits,
    /// Routes still to try, in order.
    order: VecDeque<usize>,
    /// Attempts made so far; a replay with a fresh token is not one.
    made: u32,
    /// The route being tried.
    current: Option<usize>,
    /// The route to send the request to again, before any other, as part of the same attempt:
    /// with a fresh token, or on another connection after a kept-alive one closed under it.
    replay: Option<usize>,
    /// A fresh token was already tried: there is no second one.
    refreshed: bool,
    /// Resends after a kept-alive connection closed under the request.
    stale_resends: u32,
    /// The last answer that was retried (route, answer): what the client gets if nothing
    /// better comes.
    kept_answer: Option<(usize, A)>,
    /// The last error that was retried.
    kept_error: Option<E>,
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next<A, E> {
    Try(Try),
    /// Nothing left to try (or all of it cooling down): answer with this.
    Stop(Stop<A, E>),
}

/// One attempt to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Try {
    /// The route to send to.
    pub route: usize,
    /// Which attempt this is, from 1; a replay with a fresh token keeps its attempt's number.
    pub attempt: u32,
    /// The same request, sent again on the same route as part of the same attempt: with a
    /// fresh token after Azure refused the last one, or after a kept-alive connection closed.
    pub replay: bool,
    /// The route whose answer was retried last, if one was (to tell a failover).
    pub after_answer_from: Option<usize>,
}

/// How a request ends when nothing is left to try.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stop<A, E> {
    /// The last answer that was retried.
    Answer(A),
    /// The last error that was retried.
    Error(E),
    /// Nothing was tried: every route is cooling down.
    CoolingDown,
}

/// What one attempt came to.
#[derive(Debug)]
pub(super) enum Outcome<A, E> {
    /// No answer head within the time allowed: Azure may be working on it.
    TimedOut(E),
    /// The connection failed: nothing reached Azure.
    ConnectFailed(E),
    /// Azure closed a kept-alive connection as the request was sent on it, before answering:
    /// it did not process the request.
    Stale(E),
    /// A new connection was reset after the request was sent, before any answer: Azure may
    /// have processed the request.
    Reset(E),
    /// Any other failure to get an answer (a protocol error, the request body failed).
    Failed(E),
    /// A 401 for a cached token; `refresh_may_help` when Azure refused the token itself.
    Refused { answer: A, refresh_may_help: bool },
    /// A 429 or 5xx, with the wait Azure asked for.
    Overloaded {
        answer: A,
        retry_after: Option<Duration>,
    },
    /// Any other answer: it goes to the client.
    Answered(A),
}

/// What to do with an outcome.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision<A, E> {
    /// Send this answer to the client.
    Answer(A),
    /// Answer the client with this error.
    Fail(E),
    /// Ask [`Attempts::next`] again, after this pause.
    Retry { pause: Option<Duration> },
    /// Drop the token that was refused (it travels in the answer), then ask
    /// [`Attempts::next`]: it replays the request on the same route.
    Refresh(A),
}

impl<A, E> Outcome<A, E> {
    /// How long the route's backend should be skipped: as long as Azure asked, when it said
    /// it was overloaded.
    pub(super) fn cool_down(&self) -> Option<Duration> {
        match self {
            Outcome::Overloaded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl<A, E> Attempts<A, E> {
    /// Attempts over `routes` routes, tried in the order given.
    pub(super) fn new(routes: usize, limits: Limits) -> Attempts<A, E> {
        Attempts {
            limits,
            order: (0..routes).collect(),
            made: 0,
            current: None,
            replay: None,
            refreshed: false,
            stale_resends: 0,
            kept_answer: None,
            kept_error: None,
        }
    }

    /// The attempts allowed: one when the body cannot be sent again.
    fn max_attempts(&self) -> u32 {
        if self.limits.replayable {
            self.limits.max_attempts
        } else {
            1
        }
    }

    /// Whether a 401 may still be answered with a fresh token and a replay; only then is it
    /// worth reading Azure's answer to decide.
    pub(super) fn may_refresh(&self) -> bool {
        !self.refreshed && self.limits.replayable
    }

    /// The next attempt, skipping routes that are `cooling` down; or how to stop.
    pub(super) fn next(&mut self, cooling: impl Fn(usize) -> bool) -> Next<A, E> {
        // The refused attempt is owed a replay, which is not an attempt of its own.
        let owed = match self.replay.take() {
            Some(route) if !cooling(route) => return Next::Try(self.start(route, true)),
            Some(route) => {
                // Cooling meanwhile: the route waits its turn, and the next attempt, wherever
                // it goes, takes the replay's place.
                self.order.push_front(route);
                true
            }
            None => false,
        };
        let Some(route) = self
            .order
            .iter()
            .position(|&i| !cooling(i))
            .and_then(|p| self.order.remove(p))
        else {
            return Next::Stop(self.stop());
        };
        if !owed {
            self.made += 1;
        }
        Next::Try(self.start(route, false))
    }

    fn start(&mut self, route: usize, replay: bool) -> Try {
        self.current = Some(route);
        Try {
            route,
            attempt: self.made,
            replay,
            after_answer_from: self.kept_answer.as_ref().map(|(r, _)| *r),
        }
    }

    /// The answer or error kept for the end, else "cooling down".
    fn stop(&mut self) -> Stop<A, E> {
        if let Some((_, a)) = self.kept_answer.take() {
            return Stop::Answer(a);
        }
        match self.kept_error.take() {
            Some(e) => Stop::Error(e),
            None => Stop::CoolingDown,
        }
    }

    /// What to do with the outcome of the attempt [`Attempts::next`] last handed out, `now`.
    pub(super) fn on(&mut self, outcome: Outcome<A, E>, now: Instant) -> Decision<A, E> {
        let more = self.made < self.max_attempts() && now < self.limits.deadline;
        match outcome {
            Outcome::TimedOut(e) if more && self.limits.replay_after_timeout => {
                self.requeue();
                self.kept_error = Some(e);
                Decision::Retry { pause: None }
            }
            Outcome::ConnectFailed(e) if more && self.limits.replayable => {
                self.requeue();
                self.kept_error = Some(e);
                Decision::Retry {
                    pause: Some(pause_after(self.made)),
                }
            }
            // Nothing was processed: the same route again, on another connection.
            Outcome::Stale(e)
                if self.limits.replayable
                    && self.stale_resends < MAX_STALE_RESENDS
                    && now < self.limits.deadline =>
            {
                self.stale_resends += 1;
                self.replay = self.current;
                self.kept_error = Some(e);
                Decision::Retry { pause: None }
            }
            // Azure may have processed it: only a request that is safe to repeat goes on, to
            // the next route first.
            Outcome::Reset(e) if more && self.limits.replayable && self.limits.safe_to_replay => {
                self.requeue();
                self.kept_error = Some(e);
                Decision::Retry { pause: None }
            }
            Outcome::TimedOut(e)
            | Outcome::ConnectFailed(e)
            | Outcome::Stale(e)
            | Outcome::Reset(e)
            | Outcome::Failed(e) => Decision::Fail(e),
            Outcome::Refused {
                answer,
                refresh_may_help: true,
            } if self.may_refresh() => {
                self.refreshed = true;
                self.replay = self.current;
                Decision::Refresh(answer)
            }
            Outcome::Overloaded {
                answer,
                retry_after,
            } if more && self.limits.replayable => {
                // A route Azure asked to wait is not tried again within this request.
                if retry_after.is_none() {
                    self.requeue();
                }
                if let Some(route) = self.current {
                    self.kept_answer = Some((route, answer));
                }
                Decision::Retry {
                    pause: Some(pause_after(self.made)),
                }
            }
            Outcome::Refused { answer, .. }
            | Outcome::Overloaded { answer, .. }
            | Outcome::Answered(answer) => Decision::Answer(answer),
        }
    }

    /// Puts the current route back at the end of the queue unless it is already there.
    fn requeue(&mut self) {
        if let Some(route) = self.current
            && !self.order.contains(&route)
        {
            self.order.push_back(route);
        }
    }
}

/// A short pause after attempt number `attempt`, growing with each.
pub(super) fn pause_after(attempt: u32) -> Duration {
    Duration::from_millis(50 * u64::from(attempt.min(10)))
}

/// How long to wait for an answer head, and the setting that limits it: the first-byte
/// timeout, or what is left of the request's time when that is less.
pub(super) fn answer_timeout(
    now: Instant,
    deadline: Instant,
    first_byte: Duration,
) -> (Duration, &'static str) {
    let remaining = deadline.saturating_duration_since(now);
    if remaining < first_byte {
        (remaining, "upstream.request_timeout_secs")
    } else {
        (first_byte, "upstream.first_byte_timeout_secs")
    }
}

/// The `retry-after` seconds to give a client when every route is cooling down: the soonest
/// end of a cooldown, rounded up, at least one.
pub(super) fn cooling_retry_after_secs(soonest: Option<Duration>) -> u64 {
    soonest.unwrap_or_default().as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    type Plain = Attempts<&'static str, &'static str>;

    const SOON: Duration = Duration::from_secs(60);

    fn limits(max_attempts: u32) -> Limits {
        Limits {
            max_attempts,
            deadline: Instant::now() + SOON,
            replayable: true,
            replay_after_timeout: false,
            safe_to_replay: true,
        }
    }

    fn never(_: usize) -> bool {
        false
    }

    /// The next attempt's route, when there is one.
    fn next_route(a: &mut Plain, cooling: impl Fn(usize) -> bool) -> Option<usize> {
        match a.next(cooling) {
            Next::Try(t) => Some(t.route),
            Next::Stop(_) => None,
        }
    }

    fn try_(a: &mut Plain) -> Try {
        match a.next(never) {
            Next::Try(t) => t,
            Next::Stop(s) => panic!("stopped: {s:?}"),
        }
    }

    fn overloaded(
        answer: &'static str,
        retry_after: Option<Duration>,
    ) -> Outcome<&'static str, &'static str> {
        Outcome::Overloaded {
            answer,
            retry_after,
        }
    }

    #[test]
    fn routes_are_tried_in_order_skipping_those_cooling_down() {
        let mut a = Plain::new(3, limits(3));
        assert_eq!(next_route(&mut a, |i| i == 0), Some(1));
        assert_eq!(
            a.on(overloaded("429", None), Instant::now()),
            Decision::Retry {
                pause: Some(pause_after(1))
            }
        );
        let t = a.next(|i| i == 0);
        assert_eq!(
            t,
            Next::Try(Try {
                route: 2,
                attempt: 2,
                replay: false,
                after_answer_from: Some(1),
            })
        );
    }

    #[test]
    fn a_success_is_answered_at_once() {
        let mut a = Plain::new(2, limits(3));
        let t = try_(&mut a);
        assert_eq!(t.attempt, 1);
        assert_eq!(
            a.on(Outcome::Answered("200"), Instant::now()),
            Decision::Answer("200")
        );
    }

    #[test]
    fn an_overloaded_route_fails_over_and_one_that_asked_to_wait_is_not_retried() {
        // 429 with retry-after on the first route: the second is tried, the first never again.
        let mut a = Plain::new(2, limits(3));
        assert_eq!(try_(&mut a).route, 0);
        let outcome = overloaded("429", Some(Duration::from_secs(30)));
        assert_eq!(outcome.cool_down(), Some(Duration::from_secs(30)));
        assert!(matches!(
            a.on(outcome, Instant::now()),
            Decision::Retry { .. }
        ));
        let t = try_(&mut a);
        assert_eq!((t.route, t.attempt, t.after_answer_from), (1, 2, Some(0)));
        assert!(matches!(
            a.on(overloaded("503", None), Instant::now()),
            Decision::Retry { .. }
        ));
        // Only the second route is back in the queue.
        assert_eq!(try_(&mut a).route, 1);
        assert_eq!(
            a.on(Outcome::Answered("200"), Instant::now()),
            Decision::Answer("200")
        );
    }

    #[test]
    fn server_errors_are_retried_until_max_attempts_then_the_last_answer_goes_back() {
        let mut a = Plain::new(1, limits(3));
        for (attempt, answer) in [(1, "500"), (2, "502")] {
            let t = try_(&mut a);
            assert_eq!((t.route, t.attempt), (0, attempt));
            assert_eq!(
                a.on(overloaded(answer, None), Instant::now()),
                Decision::Retry {
                    pause: Some(pause_after(attempt))
                }
            );
        }
        assert_eq!(try_(&mut a).attempt, 3);
        assert_eq!(
            a.on(overloaded("500", None), Instant::now()),
            Decision::Answer("500")
        );
    }

    #[test]
    fn overloaded_answers_are_not_retried_after_the_deadline() {
        let mut a = Plain::new(2, limits(3));
        try_(&mut a);
        let late = Instant::now() + SOON + SOON;
        assert_eq!(a.on(overloaded("503", None), late), Decision::Answer("503"));
    }

    #[test]
    fn when_the_only_route_asked_to_wait_its_answer_goes_back() {
        let mut a = Plain::new(1, limits(3));
        try_(&mut a);
        let outcome = overloaded("429", Some(Duration::from_secs(20)));
        assert!(matches!(
            a.on(outcome, Instant::now()),
            Decision::Retry { .. }
        ));
        assert_eq!(a.next(|_| true), Next::Stop(Stop::Answer("429")));
    }

    #[test]
    fn every_route_cooling_before_any_attempt_is_cooling_down() {
        let mut a = Plain::new(2, limits(3));
        assert_eq!(a.next(|_| true), Next::Stop(Stop::CoolingDown));
    }

    #[test]
    fn the_soonest_cooldown_is_the_retry_after_rounded_up() {
        assert_eq!(
            cooling_retry_after_secs(Some(Duration::from_millis(19_200))),
            20
        );
        assert_eq!(cooling_retry_after_secs(Some(Duration::from_millis(10))), 1);
        assert_eq!(cooling_retry_after_secs(None), 1);
    }

    #[test]
    fn a_body_that_cannot_be_sent_again_gets_one_attempt() {
        let mut a = Plain::new(
            2,
            Limits {
                replayable: false,
                ..limits(3)
            },
        );
        try_(&mut a);
        assert_eq!(
            a.on(overloaded("503", None), Instant::now()),
            Decision::Answer("503")
        );
        let mut a = Plain::new(
            2,
            Limits {
                replayable: false,
                ..limits(3)
            },
        );
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::ConnectFailed("refused"), Instant::now()),
            Decision::Fail("refused")
        );
        let mut a = Plain::new(
            1,
            Limits {
                replayable: false,
                replay_after_timeout: true,
                ..limits(3)
            },
        );
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::TimedOut("504"), Instant::now()),
            Decision::Fail("504")
        );
        let mut a = Plain::new(
            1,
            Limits {
                replayable: false,
                ..limits(3)
            },
        );
        assert!(!a.may_refresh());
        try_(&mut a);
        let refused = Outcome::Refused {
            answer: "401",
            refresh_may_help: true,
        };
        assert_eq!(a.on(refused, Instant::now()), Decision::Answer("401"));
    }

    #[test]
    fn timeouts_are_replayed_only_when_configured() {
        let mut a = Plain::new(1, limits(3));
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::TimedOut("504"), Instant::now()),
            Decision::Fail("504")
        );

        let mut a = Plain::new(
            1,
            Limits {
                replay_after_timeout: true,
                ..limits(3)
            },
        );
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::TimedOut("504"), Instant::now()),
            Decision::Retry { pause: None }
        );
        let t = try_(&mut a);
        assert_eq!((t.route, t.attempt), (0, 2));
        assert_eq!(
            a.on(Outcome::Answered("200"), Instant::now()),
            Decision::Answer("200")
        );
    }

    #[test]
    fn connect_errors_are_retried_with_a_pause_and_the_last_error_kept() {
        let mut a = Plain::new(2, limits(2));
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::ConnectFailed("east down"), Instant::now()),
            Decision::Retry {
                pause: Some(pause_after(1))
            }
        );
        let t = try_(&mut a);
        assert_eq!((t.route, t.after_answer_from), (1, None));
        assert_eq!(
            a.on(Outcome::ConnectFailed("west down"), Instant::now()),
            Decision::Fail("west down")
        );

        // An error kept from an earlier attempt is what the client gets when all else cools.
        let mut a = Plain::new(1, limits(3));
        try_(&mut a);
        assert!(matches!(
            a.on(Outcome::ConnectFailed("down"), Instant::now()),
            Decision::Retry { .. }
        ));
        assert_eq!(a.next(|_| true), Next::Stop(Stop::Error("down")));
    }

    #[test]
    fn a_kept_answer_wins_over_a_later_kept_error() {
        let mut a = Plain::new(
            2,
            Limits {
                replay_after_timeout: true,
                ..limits(5)
            },
        );
        try_(&mut a);
        assert!(matches!(
            a.on(overloaded("503", None), Instant::now()),
            Decision::Retry { .. }
        ));
        try_(&mut a);
        assert!(matches!(
            a.on(Outcome::TimedOut("504"), Instant::now()),
            Decision::Retry { .. }
        ));
        assert_eq!(a.next(|_| true), Next::Stop(Stop::Answer("503")));
    }

    #[test]
    fn other_transport_errors_are_not_retried() {
        let mut a = Plain::new(2, limits(3));
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::Failed("reset"), Instant::now()),
            Decision::Fail("reset")
        );
    }

    #[test]
    fn a_refused_token_is_refreshed_once_and_the_replay_is_not_an_attempt() {
        let mut a = Plain::new(2, limits(1));
        assert!(a.may_refresh());
        let first = try_(&mut a);
        let refused = |refresh_may_help| Outcome::Refused {
            answer: "401",
            refresh_may_help,
        };
        assert_eq!(
            a.on(refused(true), Instant::now()),
            Decision::Refresh("401")
        );
        assert!(!a.may_refresh());
        let replay = try_(&mut a);
        assert_eq!(
            replay,
            Try {
                route: first.route,
                attempt: first.attempt,
                replay: true,
                after_answer_from: None,
            }
        );
        // max_attempts = 1 and the replay did not use it up, but there is no second refresh.
        assert_eq!(a.on(refused(true), Instant::now()), Decision::Answer("401"));
    }

    #[test]
    fn a_401_a_fresh_token_cannot_fix_goes_back_as_it_is() {
        let mut a = Plain::new(2, limits(3));
        try_(&mut a);
        let refused = Outcome::Refused {
            answer: "401",
            refresh_may_help: false,
        };
        assert_eq!(a.on(refused, Instant::now()), Decision::Answer("401"));
        assert!(a.may_refresh());
    }

    #[test]
    fn a_replay_whose_route_cooled_meanwhile_goes_to_the_next_route_in_its_place() {
        let mut a = Plain::new(2, limits(3));
        try_(&mut a);
        let refused = Outcome::Refused {
            answer: "401",
            refresh_may_help: true,
        };
        assert!(matches!(
            a.on(refused, Instant::now()),
            Decision::Refresh(_)
        ));
        let t = match a.next(|i| i == 0) {
            Next::Try(t) => t,
            Next::Stop(s) => panic!("{s:?}"),
        };
        assert_eq!((t.route, t.attempt, t.replay), (1, 1, false));
        assert!(matches!(
            a.on(overloaded("503", None), Instant::now()),
            Decision::Retry { .. }
        ));
        assert_eq!(try_(&mut a).route, 0, "the refused route is still queued");
    }

    #[test]
    fn the_answer_timeout_is_the_first_byte_timeout_unless_less_time_is_left() {
        let now = Instant::now();
        let fb = Duration::from_secs(10);
        assert_eq!(
            answer_timeout(now, now + Duration::from_secs(60), fb),
            (fb, "upstream.first_byte_timeout_secs")
        );
        assert_eq!(
            answer_timeout(now, now + Duration::from_secs(3), fb),
            (Duration::from_secs(3), "upstream.request_timeout_secs")
        );
        assert_eq!(
            answer_timeout(now + Duration::from_secs(5), now, fb),
            (Duration::ZERO, "upstream.request_timeout_secs")
        );
    }

    #[test]
    fn a_stale_connection_is_resent_on_the_same_route_without_using_an_attempt() {
        // max_attempts = 1 (no retries), and not safe to repeat: still resent, as nothing was
        // processed.
        let mut a = Plain::new(
            2,
            Limits {
                safe_to_replay: false,
                ..limits(1)
            },
        );
        let first = try_(&mut a);
        assert_eq!(
            a.on(Outcome::Stale("closed"), Instant::now()),
            Decision::Retry { pause: None }
        );
        let again = try_(&mut a);
        assert_eq!(
            (again.route, again.attempt, again.replay),
            (first.route, 1, true)
        );
        assert_eq!(
            a.on(Outcome::Stale("closed"), Instant::now()),
            Decision::Retry { pause: None }
        );
        try_(&mut a);
        // Bounded: a third stale connection in a row is the client's error.
        assert_eq!(
            a.on(Outcome::Stale("closed"), Instant::now()),
            Decision::Fail("closed")
        );
    }

    #[test]
    fn a_stale_connection_with_a_streamed_body_fails() {
        let mut a = Plain::new(
            2,
            Limits {
                replayable: false,
                ..limits(3)
            },
        );
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::Stale("closed"), Instant::now()),
            Decision::Fail("closed")
        );
    }

    #[test]
    fn a_reset_goes_to_the_next_route_only_when_the_request_is_safe_to_repeat() {
        let mut a = Plain::new(2, limits(3));
        assert_eq!(try_(&mut a).route, 0);
        assert_eq!(
            a.on(Outcome::Reset("reset"), Instant::now()),
            Decision::Retry { pause: None }
        );
        let t = try_(&mut a);
        assert_eq!((t.route, t.attempt), (1, 2));
        assert_eq!(
            a.on(Outcome::Answered("200"), Instant::now()),
            Decision::Answer("200")
        );

        // A file upload, say: never sent twice.
        let mut a = Plain::new(
            2,
            Limits {
                safe_to_replay: false,
                ..limits(3)
            },
        );
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::Reset("reset"), Instant::now()),
            Decision::Fail("reset")
        );

        // Safe, but out of attempts: the reset is the answer.
        let mut a = Plain::new(2, limits(1));
        try_(&mut a);
        assert_eq!(
            a.on(Outcome::Reset("reset"), Instant::now()),
            Decision::Fail("reset")
        );
    }

    #[test]
    fn pauses_grow_with_attempts_and_are_bounded() {
        assert_eq!(pause_after(1), Duration::from_millis(50));
        assert_eq!(pause_after(3), Duration::from_millis(150));
        assert_eq!(pause_after(50), Duration::from_millis(500));
    }
}
