//! The routing table: who serves each model and deployment, in which order; the chosen backend.

use crate::backends::{BackendId, Backends};
use crate::config::{Config, Model};
use crate::error::ProxyError;
use crate::fast_hash::FastMap;

/// Header a client may send to pick a backend for paths that do not name a deployment.
pub const BACKEND_HEADER: http::HeaderName = http::HeaderName::from_static("x-entra-proxy-backend");

/// One place a request may go, before its URL is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub(super) backend: BackendId,
    pub(super) deployment: String,
    priority: u32,
    weight: u32,
}

/// Everything routing needs, precomputed from the config.
#[derive(Debug)]
pub struct RoutingTable {
    backends: Backends,
    models: FastMap<String, Vec<Candidate>>,
    /// deployment name → backends that have it.
    deployments: FastMap<String, Vec<BackendId>>,
    model_names: Vec<String>,
}

impl Candidate {
    /// A deployment on one backend, the only place to try or one of equals.
    pub(super) fn plain(backend: BackendId, deployment: &str) -> Candidate {
        Candidate {
            backend,
            deployment: deployment.to_string(),
            priority: 0,
            weight: 1,
        }
    }
}

impl RoutingTable {
    /// Builds the table and its backends' state. Call after
    /// `crate::telemetry::Metrics::install`, so the backends' metric handles reach the recorder.
    pub fn new(config: &Config) -> RoutingTable {
        RoutingTable::following(config, None)
    }

    /// [`RoutingTable::new`] for a reload: the backends keep the health they had in `before`
    /// (`Backends::following`).
    pub fn following(config: &Config, before: Option<&RoutingTable>) -> RoutingTable {
        let backends = Backends::following(&config.backends, before.map(|t| &t.backends));
        RoutingTable {
            models: config
                .models
                .iter()
                .map(|m| (m.name.clone(), targets(m, &backends)))
                .collect(),
            deployments: deployments(&backends),
            model_names: config.models.iter().map(|m| m.name.clone()).collect(),
            backends,
        }
    }

    /// Every backend with its health and metric handles.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    pub fn model_names(&self) -> &[String] {
        &self.model_names
    }

    pub(super) fn known_deployments(&self) -> Vec<String> {
        let mut v: Vec<String> = self.deployments.keys().cloned().collect();
        v.sort();
        v
    }

    /// A model name or deployment name → every place that serves it, in the order to try
    /// them for this request: lowest priority first, weighted-random among equals.
    pub(super) fn lookup(&self, name: &str) -> Option<Vec<Candidate>> {
        let mut found = match self.models.get(name) {
            Some(targets) => targets.clone(),
            None => self
                .deployments
                .get(name)?
                .iter()
                .map(|b| Candidate::plain(*b, name))
                .collect(),
        };
        order_candidates(&mut found);
        Some(found)
    }

    /// The backend for a path that names no deployment: the only one, or the one the client
    /// chose with [`BACKEND_HEADER`].
    pub(super) fn pick_backend(
        &self,
        chosen: Option<&str>,
        path: &str,
    ) -> Result<BackendId, ProxyError> {
        if let Some(name) = chosen {
            return self
                .backends
                .by_name(name)
                .ok_or_else(|| ProxyError::NoRoute {
                    path: path.to_string(),
                    hint: format!(
                        "{BACKEND_HEADER}: no backend named {name:?} (backends: {})",
                        self.backend_names()
                    ),
                });
        }
        match (self.backends.len(), self.backends.ids().next()) {
            (1, Some(only)) => Ok(only),
            _ if let Some(found) = self.only_for_service(path) => Ok(found),
            _ => Err(ProxyError::NoRoute {
                path: path.to_string(),
                hint: format!(
                    "several backends are configured; choose one with the {BACKEND_HEADER} header ({})",
                    self.backend_names()
                ),
            }),
        }
    }

    /// The one backend of the service whose family `path` is (Speech, Translator, Search,
    /// the other Cognitive Services), else the one multi-service (`cognitive`) backend that
    /// serves it; `None` when there is none or more than one.
    fn only_for_service(&self, path: &str) -> Option<BackendId> {
        let family = crate::services::path_family(path)?;
        let only = |serves: &dyn Fn(crate::services::Service) -> bool| {
            let mut found = self
                .backends
                .ids()
                .filter(|&id| serves(self.backends[id].config.service));
            match (found.next(), found.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        };
        only(&|s| s == family).or_else(|| only(&|s| s.serves(family)))
    }

    fn backend_names(&self) -> String {
        self.backends
            .iter()
            .map(|b| b.config.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A model's targets as candidates.
fn targets(model: &Model, backends: &Backends) -> Vec<Candidate> {
    // The config checked every target's backend index.
    model
        .targets
        .iter()
        .filter_map(|t| {
            Some(Candidate {
                backend: backends.id(t.backend)?,
                deployment: t.deployment.clone(),
                priority: t.priority,
                weight: t.weight,
            })
        })
        .collect()
}

/// Deployment name → the backends that list it, each once.
fn deployments(backends: &Backends) -> FastMap<String, Vec<BackendId>> {
    let mut deployments: FastMap<String, Vec<BackendId>> = FastMap::default();
    for id in backends.ids() {
        for d in &backends[id].config.deployments {
            let v = deployments.entry(d.clone()).or_default();
            if !v.contains(&id) {
                v.push(id);
            }
        }
    }
    deployments
}

/// Sorts by priority and shuffles each priority group by weight (weighted random order).
fn order_candidates(c: &mut [Candidate]) {
    c.sort_by_key(|x| x.priority);
    let mut start = 0;
    while start < c.len() {
        let p = c[start].priority;
        let end = start + c[start..].iter().take_while(|x| x.priority == p).count();
        weighted_shuffle(&mut c[start..end]);
        start = end;
    }
}

fn weighted_shuffle(group: &mut [Candidate]) {
    for i in 0..group.len() {
        let total: u64 = group[i..].iter().map(|x| u64::from(x.weight)).sum();
        if total == 0 {
            return;
        }
        let mut pick = random_u64() % total;
        let mut chosen = i;
        for (j, x) in group[i..].iter().enumerate() {
            let w = u64::from(x.weight);
            if pick < w {
                chosen = i + j;
                break;
            }
            pick -= w;
        }
        group.swap(i, chosen);
    }
}

/// A cheap per-thread xorshift, seeded from the system RNG; good enough to spread load.
fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut b = [0u8; 8];
            let _ = aws_lc_rs::rand::fill(&mut b);
            u64::from_le_bytes(b) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{plan, resolve};
    use bytes::Bytes;

    #[test]
    fn targets_are_ordered_by_priority_then_weight() {
        let c = Config::parse(
            "[[backends]]\nname='east'\nendpoint='https://e.openai.azure.com'\n[[backends]]\nname='west'\nendpoint='https://w.openai.azure.com'\n[[backends]]\nname='north'\nendpoint='https://n.openai.azure.com'\n[[models]]\nname='gpt-4o'\ntargets=[{backend='north',deployment='d',priority=1},{backend='east',deployment='d',weight=3},{backend='west',deployment='d',weight=1}]",
            "t",
            &|_| None,
        )
        .unwrap();
        let t = RoutingTable::new(&c);
        let mut first_east = 0;
        for _ in 0..400 {
            let p = plan("/v1/chat/completions").unwrap();
            let body = Bytes::from_static(br#"{"model":"gpt-4o"}"#);
            let routes = resolve(&t, &p, "/v1/chat/completions", None, None, Some(&body)).unwrap();
            assert_eq!(routes.len(), 3);
            assert_eq!(
                t.backends()[routes[2].backend].name(),
                "north",
                "priority 1 is always last"
            );
            if t.backends()[routes[0].backend].name() == "east" {
                first_east += 1;
            }
        }
        // weight 3:1 -> about 300 of 400
        assert!((240..=360).contains(&first_east), "{first_east}");
    }

    #[test]
    fn a_service_path_goes_to_the_only_backend_of_that_service() {
        let c = Config::parse(
            "[[backends]]\nname='aoai'\nendpoint='https://e.openai.azure.com'\n[[backends]]\nname='search'\nendpoint='https://s.search.windows.net'\n[[backends]]\nname='multi'\nendpoint='https://m.cognitiveservices.azure.com'\nservice='cognitive'\n[[backends]]\nname='lang'\nendpoint='https://l.cognitiveservices.azure.com'\nservice='cognitive'",
            "t",
            &|_| None,
        )
        .unwrap();
        let t = RoutingTable::new(&c);
        let name = |path: &str| {
            t.pick_backend(None, path)
                .map(|id| t.backends()[id].name().to_string())
        };
        assert_eq!(
            name("/indexes('h')/docs/search.post.search").unwrap(),
            "search"
        );
        // Two cognitive backends: the client has to choose.
        assert!(name("/documentintelligence/documentModels").is_err());
        assert!(name("/cognitiveservices/v1").is_err());
        assert!(name("/openai/deployments/x/chat/completions").is_err());
        assert_eq!(
            t.pick_backend(Some("lang"), "/language/:analyze-text")
                .map(|id| t.backends()[id].name().to_string())
                .unwrap(),
            "lang"
        );
        let c = Config::parse(
            "[[backends]]\nname='aoai'\nendpoint='https://e.openai.azure.com'\n[[backends]]\nname='multi'\nendpoint='https://m.cognitiveservices.azure.com'\nservice='cognitive'",
            "t",
            &|_| None,
        )
        .unwrap();
        let t = RoutingTable::new(&c);
        let id = t.pick_backend(None, "/tts/cognitiveservices/v1").unwrap();
        assert_eq!(t.backends()[id].name(), "multi");
    }
}
