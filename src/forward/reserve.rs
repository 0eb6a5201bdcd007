//! How much a request reserves of its caller's budgets before it is sent: its prompt estimate
//! plus the room for its answer — the ceiling it sets (`max_tokens`, `max_completion_tokens`,
//! `max_output_tokens`), or for a generating request that sets none the model's
//! `completion_reservation`, else `[limits] default_completion_reservation` — and what that
//! costs at the highest price among the deployments it may go to.

use crate::limits::{Ceiling, Reservation, Tariff, Tariffs};
use crate::metering::estimate::Sizing;
use crate::routing::Route;

/// The reservation of a request on `path` that may go to `routes`, sized `sizing`; answers
/// without their own ceiling get `default_completion` unless a model says otherwise.
pub(super) fn reservation(
    tariffs: &Tariffs,
    routes: &[Route],
    path: &str,
    sizing: Sizing,
    default_completion: u64,
) -> Reservation {
    let tariff = |r: &Route| tariffs.of(r.backend.index(), r.deployment.as_deref());
    let (completion, ceiling) = match sizing.ceiling {
        Some((n, name)) => (n, Ceiling::Request(name)),
        None if !generates(path) => (0, Ceiling::None),
        None => match routes
            .iter()
            .filter_map(tariff)
            .filter_map(|t| t.completion_reservation)
            .max()
        {
            Some(n) => (n, Ceiling::Model),
            None => (default_completion, Ceiling::Default),
        },
    };
    // At the dearest of the deployments it may go to.
    let (micros, answer_micros) = routes
        .iter()
        .filter_map(tariff)
        .map(|t: &Tariff| {
            (
                t.cost(sizing.prompt, 0, completion),
                t.cost(0, 0, completion),
            )
        })
        .max()
        .unwrap_or((0, 0));
    Reservation {
        prompt: sizing.prompt,
        completion,
        ceiling,
        micros,
        answer_micros,
    }
}

/// Whether a request on `path` generates tokens of its own (chat, completions, responses,
/// realtime), so that one without a ceiling reserves room for its answer; embeddings and the
/// rest reserve their prompt only.
pub(super) fn generates(path: &str) -> bool {
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    matches!(last, "completions" | "responses" | "realtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::routing::{RoutingTable, plan, resolve};

    const CONFIG: &str = "[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com'\n\
        [[models]]\nname='cheap'\nbackend='a'\ndeployment='cheap-d'\ncompletion_reservation=200\n\
        price={input_per_1m=1.0,output_per_1m=2.0}\n\
        [[models]]\nname='plain'\nbackend='a'\ndeployment='plain-d'\n";

    fn routes(t: &RoutingTable, path: &str, body: &str) -> Vec<Route> {
        let p = plan(path).unwrap();
        let body = bytes::Bytes::from(body.to_string());
        resolve(t, &p, path, None, None, Some(&body)).unwrap()
    }

    #[test]
    fn a_request_reserves_its_prompt_and_its_ceiling_or_the_default_for_its_answer() {
        let config = Config::parse(CONFIG, "t", &|_| None).unwrap();
        let (table, tariffs) = (RoutingTable::new(&config), Tariffs::new(&config));
        let chat = "/v1/chat/completions";
        let plain = routes(&table, chat, r#"{"model":"plain"}"#);
        let sized = |prompt, ceiling| Sizing {
            prompt,
            ceiling,
            ..Sizing::default()
        };
        let r = reservation(
            &tariffs,
            &plain,
            chat,
            sized(10, Some((50, "max_tokens"))),
            1024,
        );
        assert_eq!(
            (r.prompt, r.completion, r.ceiling),
            (10, 50, Ceiling::Request("max_tokens"))
        );
        assert_eq!(r.micros, 0, "no price: spend-free");
        let r = reservation(&tariffs, &plain, chat, sized(10, None), 1024);
        assert_eq!((r.completion, r.ceiling), (1024, Ceiling::Default));
        // The model's own reservation, and its price: 10 in at 1.00 + 200 out at 2.00 per 1M.
        let cheap = routes(&table, chat, r#"{"model":"cheap"}"#);
        let r = reservation(&tariffs, &cheap, chat, sized(10, None), 1024);
        assert_eq!((r.completion, r.ceiling), (200, Ceiling::Model));
        assert_eq!(r.micros, 10 + 400);
        // By the deployment path too: the deployment maps back to its model.
        let by_deployment = "/openai/deployments/cheap-d/chat/completions";
        let azure = routes(&table, by_deployment, "{}");
        assert_eq!(
            reservation(&tariffs, &azure, by_deployment, sized(10, None), 1024).micros,
            410
        );
        // Embeddings generate nothing: their prompt only.
        let embed = "/v1/embeddings";
        let r = reservation(&tariffs, &plain, embed, sized(7, None), 1024);
        assert_eq!((r.prompt, r.completion, r.ceiling), (7, 0, Ceiling::None));
    }

    #[test]
    fn generating_paths_are_chat_completions_responses_and_realtime() {
        for p in [
            "/v1/chat/completions",
            "/openai/deployments/d/completions",
            "/openai/v1/responses",
            "/v1/realtime",
            "/openai/realtime",
        ] {
            assert!(generates(p), "{p}");
        }
        for p in [
            "/v1/embeddings",
            "/openai/deployments/d/audio/speech",
            "/v1/files",
        ] {
            assert!(!generates(p), "{p}");
        }
    }
}
