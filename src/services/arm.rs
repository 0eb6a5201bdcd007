//! [`ResourceId`]: an Azure AI services account's ARM resource id, checked when built.

use std::fmt;

/// `/subscriptions/{guid}/resourceGroups/{name}/providers/Microsoft.CognitiveServices/accounts/{name}`:
/// what Speech's `aad#{resource id}#{token}` form and Translator's `Ocp-Apim-ResourceId` header
/// name. The fixed parts are matched without regard to case (ARM ids are case-insensitive) and
/// kept as written; a trailing `/` is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId(String);

/// Longest resource group name Azure allows.
const MAX_GROUP_LEN: usize = 90;
/// Longest Cognitive Services account name Azure allows.
const MAX_ACCOUNT_LEN: usize = 64;

impl ResourceId {
    /// Parses an ARM id of a Cognitive Services account; the error says what is wrong and what
    /// the id looks like.
    pub fn parse(raw: &str) -> Result<ResourceId, String> {
        let id = raw.trim().trim_end_matches('/');
        let shape = "/subscriptions/<subscription id>/resourceGroups/<group>/providers/Microsoft.CognitiveServices/accounts/<name> (az cognitiveservices account show -g GROUP -n NAME --query id -o tsv)";
        let parts: Vec<&str> = id.split('/').collect();
        let [
            "",
            subscriptions,
            subscription,
            groups,
            group,
            providers,
            namespace,
            accounts,
            account,
        ] = parts.as_slice()
        else {
            return Err(format!(
                "{id:?} is not the ARM id of an Azure AI services account; expected {shape}"
            ));
        };
        let fixed = [
            (subscriptions, "subscriptions"),
            (groups, "resourceGroups"),
            (providers, "providers"),
            (namespace, "Microsoft.CognitiveServices"),
            (accounts, "accounts"),
        ];
        if let Some((got, want)) = fixed
            .iter()
            .find(|(got, want)| !got.eq_ignore_ascii_case(want))
        {
            return Err(format!(
                "{id:?} has {got:?} where an ARM id of an Azure AI services account has {want:?}; expected {shape}"
            ));
        }
        if !is_guid(subscription) {
            return Err(format!(
                "{id:?}: the subscription id {subscription:?} is not a GUID; expected {shape}"
            ));
        }
        if !is_group_name(group) {
            return Err(format!(
                "{id:?}: {group:?} is not a resource group name (1 to {MAX_GROUP_LEN} letters, digits, '-', '_', '.', '(' or ')', not ending in '.')"
            ));
        }
        if !is_account_name(account) {
            return Err(format!(
                "{id:?}: {account:?} is not an account name (2 to {MAX_ACCOUNT_LEN} letters, digits and '-', starting with a letter or digit)"
            ));
        }
        Ok(ResourceId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The account's name: the id's last segment.
    pub fn account(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `8-4-4-4-12` hex digits.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_group_name(s: &str) -> bool {
    (1..=MAX_GROUP_LEN).contains(&s.len())
        && !s.ends_with('.')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

fn is_account_name(s: &str) -> bool {
    (2..=MAX_ACCOUNT_LEN).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "/subscriptions/00000000-0000-4000-8000-0000000000e1/resourceGroups/my-rg/providers/Microsoft.CognitiveServices/accounts/myres";

    #[test]
    fn arm_ids_of_accounts_are_accepted_in_any_case() {
        let id = ResourceId::parse(GOOD).unwrap();
        assert_eq!(id.as_str(), GOOD);
        assert_eq!(id.account(), "myres");
        let lower = ResourceId::parse(&format!("{}/", GOOD.to_ascii_lowercase())).unwrap();
        assert_eq!(lower.as_str(), GOOD.to_ascii_lowercase());
    }

    #[test]
    fn anything_else_is_refused_saying_why() {
        for (bad, says) in [
            ("myres", "is not the ARM id"),
            (
                "https://myres.cognitiveservices.azure.com",
                "is not the ARM id",
            ),
            (
                &GOOD.replace("Microsoft.CognitiveServices", "Microsoft.Search"),
                "where an ARM id of an Azure AI services account has \"Microsoft.CognitiveServices\"",
            ),
            (
                &GOOD.replace("00000000-0000-4000-8000-0000000000e1", "my-sub"),
                "is not a GUID",
            ),
            (
                &GOOD.replace("my-rg", "my rg"),
                "is not a resource group name",
            ),
            (&GOOD.replace("/myres", "/-x"), "is not an account name"),
            (&format!("{GOOD}/deployments/d"), "is not the ARM id"),
            ("", "is not the ARM id"),
        ] {
            let e = ResourceId::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
