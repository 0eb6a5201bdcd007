//! Azure clouds: authority hosts, resource audiences and the host suffixes that belong to each.

use serde::Deserialize;
use std::fmt;

/// The Azure cloud the proxy runs against. It decides the Entra authority and every audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    #[default]
    Public,
    Usgov,
    China,
}

/// The family of Azure AI endpoint a host belongs to; it decides the token audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// `*.openai.azure.com`: Azure OpenAI, audience cognitiveservices.
    OpenAi,
    /// `*.cognitiveservices.azure.com`: multi-service Cognitive Services, audience cognitiveservices.
    CognitiveServices,
    /// `*.services.ai.azure.com`: Azure AI Foundry, audience ai.azure.com.
    Foundry,
    /// `{region}.api.cognitive.microsoft.com`: shared regional endpoint, which only takes keys.
    Regional,
}

impl Cloud {
    pub const ALL: [Cloud; 3] = [Cloud::Public, Cloud::Usgov, Cloud::China];

    pub fn name(self) -> &'static str {
        match self {
            Cloud::Public => "public",
            Cloud::Usgov => "usgov",
            Cloud::China => "china",
        }
    }

    /// The Entra authority host, e.g. `https://login.microsoftonline.com`.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::Usgov => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The Entra v1 token issuer host (the `sts` host), without tenant.
    pub fn v1_issuer_host(self) -> &'static str {
        match self {
            Cloud::Public | Cloud::Usgov => "https://sts.windows.net",
            Cloud::China => "https://sts.chinacloudapi.cn",
        }
    }

    /// The Cognitive Services audience, e.g. `https://cognitiveservices.azure.com`.
    pub fn cognitive_audience(self) -> &'static str {
        match self {
            Cloud::Public => "https://cognitiveservices.azure.com",
            Cloud::Usgov => "https://cognitiveservices.azure.us",
            Cloud::China => "https://cognitiveservices.azure.cn",
        }
    }

    /// The Azure AI Foundry audience, e.g. `https://ai.azure.com`.
    pub fn foundry_audience(self) -> &'static str {
        match self {
            Cloud::Public => "https://ai.azure.com",
            Cloud::Usgov => "https://ai.azure.us",
            Cloud::China => "https://ai.azure.cn",
        }
    }

    /// The audience of a token presented as a federated identity credential (a managed or
    /// workload identity's, exchanged for an app's). Microsoft Learn, "Configure an application
    /// to trust a managed identity": `api://AzureADTokenExchange` and its sovereign forms.
    pub fn token_exchange_audience(self) -> &'static str {
        match self {
            Cloud::Public => "api://AzureADTokenExchange",
            Cloud::Usgov => "api://AzureADTokenExchangeUSGov",
            Cloud::China => "api://AzureADTokenExchangeChina",
        }
    }

    /// The Azure Resource Manager audience: the classic wrong audience.
    pub fn management_audience(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com",
            Cloud::Usgov => "https://management.usgovcloudapi.net",
            Cloud::China => "https://management.chinacloudapi.cn",
        }
    }

    fn azure_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "azure.com",
            Cloud::Usgov => "azure.us",
            Cloud::China => "azure.cn",
        }
    }

    fn regional_suffix(self) -> &'static str {
        match self {
            Cloud::Public => ".api.cognitive.microsoft.com",
            Cloud::Usgov => ".api.cognitive.microsoft.us",
            Cloud::China => ".api.cognitive.azure.cn",
        }
    }

    /// Classifies a host name of this cloud. `None` for hosts that are not Azure AI hosts of this
    /// cloud (loopback, custom domains, or another cloud's hosts).
    pub fn host_kind(self, host: &str) -> Option<HostKind> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let s = self.azure_suffix();
        if host.ends_with(self.regional_suffix()) {
            return Some(HostKind::Regional);
        }
        let kinds = [
            (format!(".openai.{s}"), HostKind::OpenAi),
            (
                format!(".cognitiveservices.{s}"),
                HostKind::CognitiveServices,
            ),
            (format!(".services.ai.{s}"), HostKind::Foundry),
        ];
        kinds
            .into_iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
            .map(|(_, kind)| kind)
    }

    /// The cloud a host belongs to, if it is an Azure AI host of any cloud.
    pub fn of_host(host: &str) -> Option<(Cloud, HostKind)> {
        Cloud::ALL
            .into_iter()
            .find_map(|c| c.host_kind(host).map(|k| (c, k)))
    }

    /// The audience a host of the given kind needs in this cloud.
    pub fn audience_for(self, kind: HostKind) -> &'static str {
        match kind {
            HostKind::OpenAi | HostKind::CognitiveServices | HostKind::Regional => {
                self.cognitive_audience()
            }
            HostKind::Foundry => self.foundry_audience(),
        }
    }

    /// The cloud whose well-known audience this is, with the audience's family.
    pub fn of_audience(aud: &str) -> Option<(Cloud, AudienceKind)> {
        let aud = aud.trim_end_matches('/');
        Cloud::ALL.into_iter().find_map(|c| {
            if aud.eq_ignore_ascii_case(c.cognitive_audience()) {
                Some((c, AudienceKind::CognitiveServices))
            } else if aud.eq_ignore_ascii_case(c.foundry_audience()) {
                Some((c, AudienceKind::Foundry))
            } else if aud.eq_ignore_ascii_case(c.management_audience()) {
                Some((c, AudienceKind::Management))
            } else {
                None
            }
        })
    }
}

/// The families of well-known audiences, for explaining tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceKind {
    CognitiveServices,
    Foundry,
    Management,
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Turns an audience into the `/.default` scope a client must request to get it.
pub fn scope_for_audience(aud: &str) -> String {
    format!("{}/.default", aud.trim_end_matches('/'))
}

/// Two audiences are the same when they differ only by a trailing `/` or letter case.
pub fn same_audience(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_kinds_and_clouds() {
        assert_eq!(
            Cloud::Public.host_kind("myres.openai.azure.com"),
            Some(HostKind::OpenAi)
        );
        assert_eq!(
            Cloud::Public.host_kind("MyRes.CognitiveServices.Azure.Com"),
            Some(HostKind::CognitiveServices)
        );
        assert_eq!(
            Cloud::Public.host_kind("proj.services.ai.azure.com"),
            Some(HostKind::Foundry)
        );
        assert_eq!(
            Cloud::Public.host_kind("eastus.api.cognitive.microsoft.com"),
            Some(HostKind::Regional)
        );
        assert_eq!(Cloud::Public.host_kind("openai.azure.com"), None);
        assert_eq!(Cloud::Public.host_kind("myres.openai.azure.us"), None);
        assert_eq!(
            Cloud::of_host("myres.openai.azure.us"),
            Some((Cloud::Usgov, HostKind::OpenAi))
        );
        assert_eq!(
            Cloud::of_host("myres.cognitiveservices.azure.cn"),
            Some((Cloud::China, HostKind::CognitiveServices))
        );
        assert_eq!(Cloud::of_host("127.0.0.1"), None);
    }

    #[test]
    fn audiences_and_scopes() {
        assert_eq!(
            scope_for_audience(Cloud::Public.audience_for(HostKind::OpenAi)),
            "https://cognitiveservices.azure.com/.default"
        );
        assert_eq!(
            scope_for_audience(Cloud::Public.audience_for(HostKind::Foundry)),
            "https://ai.azure.com/.default"
        );
        assert_eq!(
            scope_for_audience(Cloud::Usgov.cognitive_audience()),
            "https://cognitiveservices.azure.us/.default"
        );
        assert!(same_audience(
            "https://cognitiveservices.azure.com/",
            "https://cognitiveservices.azure.com"
        ));
        assert_eq!(
            Cloud::of_audience("https://management.azure.com/"),
            Some((Cloud::Public, AudienceKind::Management))
        );
        assert_eq!(
            Cloud::of_audience("https://cognitiveservices.azure.cn"),
            Some((Cloud::China, AudienceKind::CognitiveServices))
        );
    }
}
