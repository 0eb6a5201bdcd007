//! What a request holds of its budgets while it runs: the [`Reservation`] made at admission
//! (its prompt estimate and the most its answer may add), and [`Amounts`] of tokens and money
//! as counters count them.

use crate::config::Micros;

/// Tokens and money, as a budget counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amounts {
    pub tokens: u64,
    pub micros: Micros,
}

impl Amounts {
    pub fn is_zero(self) -> bool {
        self.tokens == 0 && self.micros == 0
    }

    /// What `self` holds beyond `other`, each part on its own (never below zero).
    pub fn beyond(self, other: Amounts) -> Amounts {
        Amounts {
            tokens: self.tokens.saturating_sub(other.tokens),
            micros: self.micros.saturating_sub(other.micros),
        }
    }

    /// The larger of each part.
    pub fn max(self, other: Amounts) -> Amounts {
        Amounts {
            tokens: self.tokens.max(other.tokens),
            micros: self.micros.max(other.micros),
        }
    }

    pub fn plus(self, other: Amounts) -> Amounts {
        Amounts {
            tokens: self.tokens.saturating_add(other.tokens),
            micros: self.micros.saturating_add(other.micros),
        }
    }
}

/// Where a reservation's room for the answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ceiling {
    /// The request's own ceiling: `max_tokens`, `max_completion_tokens` or
    /// `max_output_tokens`, named here.
    Request(&'static str),
    /// `[limits] default_completion_reservation`: a generating request that names no ceiling.
    Default,
    /// The model's `completion_reservation`: a generating request that names no ceiling.
    Model,
    /// No room: a request whose answer generates no tokens (embeddings, uploads, …).
    #[default]
    None,
}

/// What a request reserves of its caller's budgets before it is sent: its prompt estimate plus
/// the most its answer may add, and what that costs at the highest price among its routes.
/// Settled to the answer's usage when it ends; released when no answer comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reservation {
    pub prompt: u64,
    pub completion: u64,
    pub ceiling: Ceiling,
    /// What the prompt and the answer may cost together.
    pub micros: Micros,
    /// What the answer's part of that is.
    pub answer_micros: Micros,
}

impl Reservation {
    /// Nothing held: a request whose callers limit neither tokens nor money.
    pub const NONE: Reservation = Reservation {
        prompt: 0,
        completion: 0,
        ceiling: Ceiling::None,
        micros: 0,
        answer_micros: 0,
    };

    /// The tokens and money held.
    pub fn amounts(&self) -> Amounts {
        Amounts {
            tokens: self.prompt.saturating_add(self.completion),
            micros: self.micros,
        }
    }

    /// What the reservation is made of, in words: `a prompt estimate of 10 + max_tokens 1024`.
    pub fn made_of(&self) -> String {
        let prompt = format!("a prompt estimate of {}", self.prompt);
        match self.ceiling {
            Ceiling::Request(name) => format!("{prompt} + {name} {}", self.completion),
            Ceiling::Default => format!(
                "{prompt} + {} for the answer: the request sets no max_tokens, so limits.default_completion_reservation applies",
                self.completion
            ),
            Ceiling::Model => format!(
                "{prompt} + {} for the answer: the request sets no max_tokens, so the model's completion_reservation applies",
                self.completion
            ),
            Ceiling::None => prompt,
        }
    }

    /// What to change so the request fits under a limit of `limit` tokens.
    pub fn fix(&self, limit: u64) -> String {
        self.fix_room(limit.saturating_sub(self.prompt))
    }

    /// What to change so the request fits under a budget of `budget` micro-units, at the price
    /// its reservation was made at.
    pub fn fix_money(&self, budget: Micros) -> String {
        let prompt = self.micros.saturating_sub(self.answer_micros);
        let room = (u128::from(budget.saturating_sub(prompt)) * u128::from(self.completion))
            .checked_div(u128::from(self.answer_micros))
            .map_or(0, |n| n.min(u128::from(u64::MAX)) as u64);
        match prompt > budget {
            true => "shorten the prompt".to_string(),
            false => self.fix_room(room),
        }
    }

    /// What to change so the answer fits in `room` tokens.
    fn fix_room(&self, room: u64) -> String {
        match self.ceiling {
            _ if room == 0 => "shorten the prompt".to_string(),
            Ceiling::Request(name) => format!("lower {name} to at most {room}"),
            Ceiling::Default | Ceiling::Model => format!(
                "send max_tokens (or max_completion_tokens, max_output_tokens) of at most {room}"
            ),
            Ceiling::None => "shorten the prompt".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_says_what_it_is_made_of_and_what_to_lower() {
        let r = Reservation {
            prompt: 10,
            completion: 1024,
            ceiling: Ceiling::Request("max_tokens"),
            micros: 0,
            answer_micros: 0,
        };
        assert_eq!(r.amounts().tokens, 1034);
        assert_eq!(r.made_of(), "a prompt estimate of 10 + max_tokens 1024");
        assert_eq!(r.fix(1000), "lower max_tokens to at most 990");
        let d = Reservation {
            ceiling: Ceiling::Default,
            ..r
        };
        assert!(
            d.made_of()
                .contains("limits.default_completion_reservation")
        );
        assert_eq!(
            d.fix(100),
            "send max_tokens (or max_completion_tokens, max_output_tokens) of at most 90"
        );
        assert_eq!(d.fix(5), "shorten the prompt");
        let a = Amounts {
            tokens: 5,
            micros: 1,
        };
        let b = Amounts {
            tokens: 3,
            micros: 4,
        };
        assert_eq!(
            a.beyond(b),
            Amounts {
                tokens: 2,
                micros: 0
            }
        );
        assert_eq!(
            a.max(b),
            Amounts {
                tokens: 5,
                micros: 4
            }
        );
    }
}
