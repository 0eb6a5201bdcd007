//! Money: what a request costs at its model's price ([`Tariff::cost`]), the prices and answer
//! reservations of every configured deployment ([`Tariffs`], found by the backend and
//! deployment a request is routed to, whichever path it came by), and money in words
//! ([`money`]). Amounts are integers of micro-units: counters add them without drift.

use crate::config::{Config, Micros, Price};
use crate::fast_hash::FastMap;
use std::sync::Arc;

/// What applies to the requests routed to one deployment: the model it serves (the label of
/// `entra_proxy_spend_total`), its price, and the room reserved for an answer that names no
/// ceiling.
#[derive(Debug, Clone)]
pub struct Tariff {
    pub model: Arc<str>,
    pub price: Option<Price>,
    pub completion_reservation: Option<u64>,
}

/// Every configured deployment's [`Tariff`], by backend (its index in the config) and
/// deployment name. Built with a snapshot; looked up without allocating.
#[derive(Debug, Default)]
pub struct Tariffs {
    by_backend: Vec<FastMap<Box<str>, Tariff>>,
    currency: Arc<str>,
}

impl Tariffs {
    /// The tariffs of `config`'s models: each target deployment maps back to its model, a
    /// model with a price first (a deployment has the price of any model that names one).
    pub fn new(config: &Config) -> Tariffs {
        let mut by_backend: Vec<FastMap<Box<str>, Tariff>> = (0..config.backends.len())
            .map(|_| FastMap::default())
            .collect();
        let priced = config.models.iter().filter(|m| m.price.is_some());
        let unpriced = config.models.iter().filter(|m| m.price.is_none());
        for model in priced.chain(unpriced) {
            let tariff = Tariff {
                model: Arc::from(model.name.as_str()),
                price: model.price,
                completion_reservation: model.completion_reservation,
            };
            for target in &model.targets {
                if let Some(map) = by_backend.get_mut(target.backend) {
                    map.entry(target.deployment.as_str().into())
                        .or_insert_with(|| tariff.clone());
                }
            }
        }
        Tariffs {
            by_backend,
            currency: Arc::from(config.currency.as_str()),
        }
    }

    /// The one currency of the prices.
    pub fn currency(&self) -> &Arc<str> {
        &self.currency
    }

    /// The tariff of `deployment` on the backend at `backend`, when a model targets it.
    pub fn of(&self, backend: usize, deployment: Option<&str>) -> Option<&Tariff> {
        self.by_backend.get(backend)?.get(deployment?)
    }
}

impl Tariff {
    /// What `input` prompt tokens (`cached` of them cached) and `output` completion tokens
    /// cost; nothing without a price.
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> Micros {
        self.price.map_or(0, |p| cost(&p, input, cached, output))
    }
}

/// What `input` prompt tokens (`cached` of them cached) and `output` completion tokens cost at
/// `price`: each part rounded up to a micro-unit, so a request never costs less than it did.
pub fn cost(price: &Price, input: u64, cached: u64, output: u64) -> Micros {
    let cached = cached.min(input);
    let part = |tokens: u64, per_1m: Micros| -> u128 {
        (u128::from(tokens) * u128::from(per_1m)).div_ceil(1_000_000)
    };
    let total = part(input - cached, price.input_per_1m)
        + part(cached, price.cached_input_per_1m)
        + part(output, price.output_per_1m);
    total.min(u128::from(u64::MAX)) as Micros
}

/// Micro-units as an amount: two decimals at least, up to six (`250.00`, `0.000125`).
pub fn money(micros: Micros) -> String {
    Money(micros).to_string()
}

/// Micro-units shown as an amount, as [`money`] writes it, without building a string first
/// (the access line writes it in place).
#[derive(Debug, Clone, Copy)]
pub struct Money(pub Micros);

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (units, mut fraction) = (self.0 / 1_000_000, self.0 % 1_000_000);
        let mut digits = 6;
        while digits > 2 && fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        write!(f, "{units}.{fraction:0digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_costs_each_kind_of_token_at_its_price_rounded_up() {
        let price = Price {
            input_per_1m: 2_500_000,
            cached_input_per_1m: 1_250_000,
            output_per_1m: 10_000_000,
        };
        // 1000 input (400 cached) and 500 output tokens: 600 × 2.5 + 400 × 1.25 + 500 × 10 per
        // million = 0.0015 + 0.0005 + 0.005.
        assert_eq!(cost(&price, 1000, 400, 500), 7_000);
        // One token at 2.50 per million is 2.5 micro-units: rounded up.
        assert_eq!(cost(&price, 1, 0, 0), 3);
        assert_eq!(cost(&price, 0, 0, 0), 0);
        // Cached beyond the input is the input.
        assert_eq!(cost(&price, 10, 99, 0), cost(&price, 10, 10, 0));
        assert_eq!(cost(&price, u64::MAX, 0, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_deployment_has_the_price_of_any_model_that_names_one() {
        let config = Config::parse(
            "[[backends]]\nname='a'\nendpoint='https://r.openai.azure.com'\n\
             [[models]]\nname='alias'\nbackend='a'\ndeployment='d'\n\
             [[models]]\nname='priced'\nbackend='a'\ndeployment='d'\n\
             price={input_per_1m=1.0,output_per_1m=1.0}\n",
            "t",
            &|_| None,
        )
        .unwrap();
        let tariffs = Tariffs::new(&config);
        let t = tariffs.of(0, Some("d")).unwrap();
        assert_eq!(&*t.model, "priced");
        assert!(t.price.is_some());
        assert!(tariffs.of(0, Some("other")).is_none());
        assert!(tariffs.of(9, Some("d")).is_none());
    }

    #[test]
    fn money_reads_as_an_amount() {
        assert_eq!(money(250_000_000), "250.00");
        assert_eq!(money(125), "0.000125");
        assert_eq!(money(1_500_000), "1.50");
        assert_eq!(money(1_234_567), "1.234567");
        assert_eq!(money(0), "0.00");
    }
}
