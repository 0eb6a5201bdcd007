//! Which `[[identities]]` block an Entra or app caller is: a hash lookup per match kind (`oid`,
//! `azp`/`appid`, `tid`, each role, each group) for the identities that name what the token
//! carries, then the most specific of those whose every field holds. A caller no identity
//! matches is refused (403, naming its ids and the block that would admit it) or let through
//! as an unnamed `entra`/`app` caller, as `[inbound.entra] unmatched` says.

use super::policy::Policy;
use crate::claims::{ClaimList, Claims};
use crate::config::CallerLabel;
use crate::config::{IdentityEntry, IdentityMatch, Unmatched, Upstream};
use crate::fast_hash::FastMap;
use crate::limits::Limits;
use std::sync::Arc;

/// One configured identity, ready for requests.
#[derive(Debug)]
pub struct Identity {
    pub name: Arc<str>,
    pub matcher: IdentityMatch,
    /// What reaches Azure for its Entra callers.
    pub upstream: Upstream,
    pub label: CallerLabel,
    pub policy: Arc<Policy>,
    /// [`IdentityMatch::specificity`], computed once.
    specificity: u8,
}

/// Every configured identity, indexed by the claim values they name.
#[derive(Debug)]
pub struct Identities {
    all: Vec<Identity>,
    by_object: FastMap<String, Vec<usize>>,
    by_app: FastMap<String, Vec<usize>>,
    by_tenant: FastMap<String, Vec<usize>>,
    by_role: FastMap<String, Vec<usize>>,
    by_group: FastMap<String, Vec<usize>>,
    unmatched: Unmatched,
    /// What reaches Azure for Entra callers no identity names (and identities that do not say).
    upstream: Upstream,
}

/// What a caller is, as identities match it: read from an Entra token's claims, or a
/// client-credentials caller's client id and tenant.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub object_id: Option<&'a str>,
    pub app_id: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub roles: &'a ClaimList,
    pub groups: &'a ClaimList,
    /// The token has no `groups` because the user is in too many (groups overage).
    pub groups_overage: bool,
}

/// Why no identity admits a caller: what it carried, and what would admit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.explain())]
pub struct NoIdentity {
    pub tenant: Option<String>,
    pub object_id: Option<String>,
    pub app_id: Option<String>,
    /// The token carries no groups (overage): group identities can never match it.
    pub groups_overage: bool,
    /// A `roles` or `groups` claim of the wrong shape, and what it was.
    pub malformed: Vec<(&'static str, &'static str)>,
}

static NO_CLAIMS: ClaimList = ClaimList::Absent;

impl<'a> Principal<'a> {
    /// An Entra caller, by its token's claims.
    pub fn of_claims(claims: &'a Claims) -> Principal<'a> {
        Principal {
            object_id: claims.oid.as_deref(),
            app_id: claims.app_id(),
            tenant: claims.tid.as_deref(),
            roles: &claims.roles,
            groups: &claims.groups,
            groups_overage: claims.groups_overage(),
        }
    }

    /// A client-credentials caller: its client id is its app id, its tenant the one it
    /// authenticates against.
    pub fn of_app(client_id: &'a str, tenant: &'a str) -> Principal<'a> {
        Principal {
            object_id: None,
            app_id: Some(client_id),
            tenant: Some(tenant),
            roles: &NO_CLAIMS,
            groups: &NO_CLAIMS,
            groups_overage: false,
        }
    }
}

impl Identities {
    /// The identities of `entries`, their policies' accounts resolved in `limits`.
    pub fn new(
        entries: &[IdentityEntry],
        unmatched: Unmatched,
        upstream: Upstream,
        limits: &Limits,
    ) -> Identities {
        let mut ids = Identities {
            all: Vec::with_capacity(entries.len()),
            by_object: FastMap::default(),
            by_app: FastMap::default(),
            by_tenant: FastMap::default(),
            by_role: FastMap::default(),
            by_group: FastMap::default(),
            unmatched,
            upstream,
        };
        for (i, e) in entries.iter().enumerate() {
            let m = &e.matcher;
            for (map, value) in [
                (&mut ids.by_object, &m.object_id),
                (&mut ids.by_app, &m.app_id),
                (&mut ids.by_tenant, &m.tenant),
                (&mut ids.by_role, &m.role),
                (&mut ids.by_group, &m.group),
            ] {
                if let Some(v) = value {
                    map.entry(v.clone()).or_default().push(i);
                }
            }
            let name: Arc<str> = Arc::from(e.name.as_str());
            ids.all.push(Identity {
                label: CallerLabel::Identity(name.clone()),
                name,
                matcher: m.clone(),
                upstream: e.upstream.unwrap_or(upstream),
                policy: Arc::new(Policy::for_identity(e, limits)),
                specificity: m.specificity(),
            });
        }
        ids
    }

    /// What reaches Azure for an Entra caller no identity names.
    pub fn default_upstream(&self) -> Upstream {
        self.upstream
    }

    /// Whether any identity is configured.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every configured identity.
    pub fn all(&self) -> &[Identity] {
        &self.all
    }

    /// The identity named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Identity> {
        self.all.iter().find(|i| &*i.name == name)
    }

    /// Whether callers no identity matches are served (unnamed).
    pub fn admits_unmatched(&self) -> bool {
        self.unmatched == Unmatched::Allow
    }

    /// The identity `p` is, or `Ok(None)` when none matches and unmatched callers are let
    /// through; `Err` when none matches and they are refused.
    pub fn find(&self, p: &Principal<'_>) -> Result<Option<&Identity>, NoIdentity> {
        match self.best(p) {
            Some(found) => Ok(Some(found)),
            None if self.unmatched == Unmatched::Allow => Ok(None),
            None => Err(NoIdentity::of(p)),
        }
    }

    /// The most specific identity whose every field `p` satisfies.
    pub fn best(&self, p: &Principal<'_>) -> Option<&Identity> {
        let mut best: Option<&Identity> = None;
        let mut consider = |ids: Option<&Vec<usize>>| {
            for &i in ids.into_iter().flatten() {
                let id = &self.all[i];
                if best.is_some_and(|b| b.specificity >= id.specificity)
                    || !satisfies(p, &id.matcher)
                {
                    continue;
                }
                best = Some(id);
            }
        };
        consider(lookup(&self.by_object, p.object_id));
        consider(lookup(&self.by_app, p.app_id));
        consider(lookup(&self.by_tenant, p.tenant));
        for role in p.roles.strings() {
            consider(self.by_role.get(role.as_str()));
        }
        if !p.groups_overage {
            for group in p.groups.strings() {
                consider(lookup(&self.by_group, Some(group)));
            }
        }
        best
    }

    /// Every identity with why `p` is or is not it: per identity, each field with whether it
    /// held (for `identities match`).
    pub fn explain(&self, p: &Principal<'_>) -> Vec<(&Identity, Vec<(&'static str, bool)>)> {
        self.all
            .iter()
            .map(|id| (id, field_results(p, &id.matcher)))
            .collect()
    }
}

/// The identities naming `value`: as it is, else in lower case (ids are GUIDs, kept lower-case).
fn lookup<'m>(map: &'m FastMap<String, Vec<usize>>, value: Option<&str>) -> Option<&'m Vec<usize>> {
    let value = value?;
    match map.get(value) {
        Some(found) => Some(found),
        None if value.bytes().any(|b| b.is_ascii_uppercase()) => {
            map.get(value.to_ascii_lowercase().as_str())
        }
        None => None,
    }
}

/// Whether every field `m` sets holds for `p`.
fn satisfies(p: &Principal<'_>, m: &IdentityMatch) -> bool {
    field_results(p, m).iter().all(|(_, held)| *held)
}

/// Each field `m` sets, with whether it holds for `p`.
fn field_results(p: &Principal<'_>, m: &IdentityMatch) -> Vec<(&'static str, bool)> {
    let same = |want: &Option<String>, have: Option<&str>| {
        want.as_ref()
            .map(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
    };
    let contains = |want: &Option<String>, have: &ClaimList, case: bool| {
        want.as_ref().map(|w| {
            have.strings().iter().any(|h| match case {
                true => h == w,
                false => h.eq_ignore_ascii_case(w),
            })
        })
    };
    let groups = contains(&m.group, p.groups, false).map(|held| held && !p.groups_overage);
    [
        ("object_id", same(&m.object_id, p.object_id)),
        ("app_id", same(&m.app_id, p.app_id)),
        ("role", contains(&m.role, p.roles, true)),
        ("group", groups),
        ("tenant", same(&m.tenant, p.tenant)),
    ]
    .into_iter()
    .filter_map(|(k, held)| Some((k, held?)))
    .collect()
}

impl NoIdentity {
    fn of(p: &Principal<'_>) -> NoIdentity {
        let mut malformed = Vec::new();
        for (claim, list) in [("roles", p.roles), ("groups", p.groups)] {
            if let ClaimList::Malformed(what) = list {
                malformed.push((claim, *what));
            }
        }
        NoIdentity {
            tenant: p.tenant.map(str::to_string),
            object_id: p.object_id.map(str::to_string),
            app_id: p.app_id.map(str::to_string),
            groups_overage: p.groups_overage,
            malformed,
        }
    }

    /// The refusal: the caller's ids, the block that would admit it, and why group or role
    /// identities could not match when that is so.
    fn explain(&self) -> String {
        let shown = |v: &Option<String>| v.as_deref().unwrap_or("none").to_string();
        let mut text = format!(
            "no [[identities]] block matches this caller (tid {}, oid {}, azp {}) and [inbound.entra] unmatched is \"deny\"",
            shown(&self.tenant),
            shown(&self.object_id),
            shown(&self.app_id)
        );
        let admit = match (&self.app_id, &self.object_id) {
            (Some(app), _) => Some(format!("app_id = \"{app}\"")),
            (None, Some(oid)) => Some(format!("object_id = \"{oid}\"")),
            (None, None) => None,
        };
        if let Some(field) = admit {
            text.push_str(&format!(
                "; to admit it, add [[identities]] name = \"…\" {field} (or match its role, group or tenant)"
            ));
        }
        if self.groups_overage {
            text.push_str("; its token carries no groups claim (groups overage: the user is in more groups than a token holds), so no identity can match it by group and the proxy does not call Microsoft Graph: match by app role (role = \"…\") instead");
        }
        for (claim, what) in &self.malformed {
            text.push_str(&format!(
                "; its {claim} claim is {what}, not a list of strings, so it matches no {} identity",
                if *claim == "roles" { "role" } else { "group" }
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const APP: &str = "5e5c3f1a-0000-4000-8000-0000000000a1";
    const USER: &str = "b7f1c1d2-0000-4000-8000-0000000000b1";
    const GROUP: &str = "0a000000-0000-4000-8000-000000000001";

    fn identities(blocks: &str) -> Identities {
        let text = format!(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\ndeployments=['d']\n[inbound.entra]\ntenants=['{TENANT}']\n{blocks}"
        );
        let c = Config::parse(&text, "t", &|_| None).unwrap();
        Identities::new(
            &c.identities,
            c.inbound.unmatched,
            c.inbound.upstream,
            &Limits::in_memory(),
        )
    }

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).unwrap()
    }

    fn found<'a>(ids: &'a Identities, c: &Claims) -> Option<&'a str> {
        ids.best(&Principal::of_claims(c)).map(|i| &*i.name)
    }

    #[test]
    fn the_most_specific_identity_wins() {
        let ids = identities(&format!(
            "[[identities]]\nname='tenant'\ntenant='{TENANT}'\n[[identities]]\nname='group'\ngroup='{GROUP}'\n[[identities]]\nname='role'\nrole='Reader'\n[[identities]]\nname='app'\napp_id='{APP}'\n[[identities]]\nname='user'\nobject_id='{USER}'\n"
        ));
        let everything = claims(serde_json::json!({
            "tid": TENANT, "oid": USER, "azp": APP, "roles": ["Reader"], "groups": [GROUP]
        }));
        assert_eq!(found(&ids, &everything), Some("user"));
        let c = claims(
            serde_json::json!({"tid": TENANT, "azp": APP, "roles": ["Reader"], "groups": [GROUP]}),
        );
        assert_eq!(found(&ids, &c), Some("app"));
        let c = claims(serde_json::json!({"tid": TENANT, "roles": ["Reader"], "groups": [GROUP]}));
        assert_eq!(found(&ids, &c), Some("role"));
        let c = claims(serde_json::json!({"tid": TENANT, "groups": [GROUP]}));
        assert_eq!(found(&ids, &c), Some("group"));
        let c = claims(serde_json::json!({"tid": TENANT}));
        assert_eq!(found(&ids, &c), Some("tenant"));
        let c = claims(serde_json::json!({"tid": APP}));
        assert_eq!(found(&ids, &c), None);
    }

    #[test]
    fn every_field_set_must_hold_and_ids_match_in_any_case() {
        let ids = identities(&format!(
            "[[identities]]\nname='app-in-tenant'\napp_id='{APP}'\ntenant='{TENANT}'\n"
        ));
        let c = claims(serde_json::json!({"tid": TENANT, "appid": APP.to_uppercase()}));
        assert_eq!(found(&ids, &c), Some("app-in-tenant"));
        let c = claims(serde_json::json!({"tid": USER, "appid": APP}));
        assert_eq!(found(&ids, &c), None);
        // A client-credentials caller matches by its client id and tenant.
        assert_eq!(
            ids.best(&Principal::of_app(APP, TENANT)).map(|i| &*i.name),
            Some("app-in-tenant")
        );
    }

    #[test]
    fn groups_overage_and_malformed_claims_never_match_and_the_refusal_says_why() {
        let ids = identities(&format!("[[identities]]\nname='g'\ngroup='{GROUP}'\n"));
        // Overage with a stray groups claim still never matches by group.
        let over = claims(serde_json::json!({
            "tid": TENANT, "oid": USER, "groups": [GROUP], "_claim_names": {"groups": "src1"}
        }));
        let e = ids.find(&Principal::of_claims(&over)).unwrap_err();
        assert!(
            e.to_string().contains("groups overage") && e.to_string().contains("role"),
            "{e}"
        );
        let bad = claims(serde_json::json!({"tid": TENANT, "oid": USER, "groups": GROUP}));
        let e = ids.find(&Principal::of_claims(&bad)).unwrap_err();
        assert!(
            e.to_string().contains("its groups claim is a string"),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("oid {USER}")), "{e}");
        assert!(
            e.to_string().contains(&format!("object_id = \"{USER}\"")),
            "{e}"
        );
        let nothing = claims(serde_json::json!({}));
        let e = ids.find(&Principal::of_claims(&nothing)).unwrap_err();
        assert!(
            e.to_string().contains("tid none, oid none, azp none"),
            "{e}"
        );
    }

    #[test]
    fn ten_thousand_groups_are_looked_up_one_by_one_without_trouble() {
        let ids = identities(&format!("[[identities]]\nname='g'\ngroup='{GROUP}'\n"));
        let mut groups: Vec<String> = (0..10_000)
            .map(|i| format!("0b000000-0000-4000-8000-{i:012}"))
            .collect();
        let c = claims(serde_json::json!({"groups": groups.clone()}));
        assert_eq!(found(&ids, &c), None);
        groups.push(GROUP.to_string());
        let c = claims(serde_json::json!({"groups": groups}));
        assert_eq!(found(&ids, &c), Some("g"));
    }

    #[test]
    fn without_identities_or_with_allow_an_unmatched_caller_passes() {
        let ids = identities("");
        let c = claims(serde_json::json!({"tid": TENANT}));
        assert!(ids.find(&Principal::of_claims(&c)).unwrap().is_none());
        let ids = identities(&format!(
            "unmatched='allow'\n[[identities]]\nname='a'\napp_id='{APP}'\n"
        ));
        assert!(ids.find(&Principal::of_claims(&c)).unwrap().is_none());
    }
}
