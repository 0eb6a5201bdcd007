//! Azure's clouds as the emulator plays them: login hosts, token issuers, and the audience each
//! kind of Azure AI host accepts — stated here from Azure's documentation, not borrowed from
//! the proxy under test.

use std::fmt;

/// An Azure cloud. It decides the login host, the token issuers and every audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cloud {
    /// Azure commercial (`*.azure.com`, `login.microsoftonline.com`).
    #[default]
    Public,
    /// Azure US Government (`*.azure.us`, `login.microsoftonline.us`).
    Usgov,
    /// Azure operated by 21Vianet (`*.azure.cn`, `login.chinacloudapi.cn`).
    China,
}

/// A kind of Azure AI host, known by its DNS suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// `{resource}.openai.azure.com`: Azure OpenAI.
    OpenAi,
    /// `{resource}.cognitiveservices.azure.com`: a Cognitive Services (multi-service) resource.
    CognitiveServices,
    /// `{resource}.services.ai.azure.com`: Azure AI Foundry.
    Foundry,
    /// `{region}.api.cognitive.microsoft.com`: the shared regional endpoint; keys only.
    Regional,
}

/// What one cloud publishes.
struct Facts {
    /// The Entra authority: `https://` and the login host, the first alias in instance discovery.
    authority: &'static str,
    /// Every host instance discovery lists as the same authority.
    login_aliases: &'static [&'static str],
    /// v1 tokens' `iss` without the tenant (`{v1_issuer}/{tenant}/`).
    v1_issuer: &'static str,
    /// The audience of OpenAI and Cognitive Services resources.
    cognitive_audience: &'static str,
    /// The audience of AI Foundry resources.
    foundry_audience: &'static str,
    /// The audience of Azure AI Search services (`{service}.search.windows.net` and its
    /// sovereign equivalents).
    search_audience: &'static str,
    /// The audience of a token presented as a federated identity credential (a managed identity's
    /// or a workload's token exchanged for an app's). Source: Microsoft Learn, "Configure an
    /// application to trust a managed identity" (audiences per cloud).
    token_exchange_audience: &'static str,
    /// DNS suffixes of the cloud's Azure AI hosts (a resource name comes before each).
    hosts: [(&'static str, HostKind); 4],
}

const PUBLIC: Facts = Facts {
    authority: "https://login.microsoftonline.com",
    login_aliases: &[
        "login.microsoftonline.com",
        "login.windows.net",
        "login.microsoft.com",
        "sts.windows.net",
    ],
    v1_issuer: "https://sts.windows.net",
    cognitive_audience: "https://cognitiveservices.azure.com",
    foundry_audience: "https://ai.azure.com",
    search_audience: "https://search.azure.com",
    token_exchange_audience: "api://AzureADTokenExchange",
    hosts: [
        (".openai.azure.com", HostKind::OpenAi),
        (".cognitiveservices.azure.com", HostKind::CognitiveServices),
        (".services.ai.azure.com", HostKind::Foundry),
        (".api.cognitive.microsoft.com", HostKind::Regional),
    ],
};

const USGOV: Facts = Facts {
    authority: "https://login.microsoftonline.us",
    login_aliases: &["login.microsoftonline.us", "login.usgovcloudapi.net"],
    // US Government tenants still get v1 tokens issued by sts.windows.net.
    v1_issuer: "https://sts.windows.net",
    cognitive_audience: "https://cognitiveservices.azure.us",
    foundry_audience: "https://ai.azure.us",
    search_audience: "https://search.azure.us",
    token_exchange_audience: "api://AzureADTokenExchangeUSGov",
    hosts: [
        (".openai.azure.us", HostKind::OpenAi),
        (".cognitiveservices.azure.us", HostKind::CognitiveServices),
        (".services.ai.azure.us", HostKind::Foundry),
        (".api.cognitive.microsoft.us", HostKind::Regional),
    ],
};

const CHINA: Facts = Facts {
    authority: "https://login.chinacloudapi.cn",
    login_aliases: &["login.chinacloudapi.cn", "login.partner.microsoftonline.cn"],
    v1_issuer: "https://sts.chinacloudapi.cn",
    cognitive_audience: "https://cognitiveservices.azure.cn",
    foundry_audience: "https://ai.azure.cn",
    search_audience: "https://search.azure.cn",
    token_exchange_audience: "api://AzureADTokenExchangeChina",
    hosts: [
        (".openai.azure.cn", HostKind::OpenAi),
        (".cognitiveservices.azure.cn", HostKind::CognitiveServices),
        (".services.ai.azure.cn", HostKind::Foundry),
        (".api.cognitive.azure.cn", HostKind::Regional),
    ],
};

impl Cloud {
    pub const ALL: [Cloud; 3] = [Cloud::Public, Cloud::Usgov, Cloud::China];

    fn facts(self) -> &'static Facts {
        match self {
            Cloud::Public => &PUBLIC,
            Cloud::Usgov => &USGOV,
            Cloud::China => &CHINA,
        }
    }

    /// `https://login.microsoftonline.com` and its equivalents.
    pub fn authority_host(self) -> &'static str {
        self.facts().authority
    }

    /// The login host without scheme, e.g. `login.microsoftonline.com`.
    pub fn login_host(self) -> &'static str {
        let authority = self.facts().authority;
        authority.strip_prefix("https://").unwrap_or(authority)
    }

    /// The hosts instance discovery lists for this cloud's authority.
    pub fn login_aliases(self) -> &'static [&'static str] {
        self.facts().login_aliases
    }

    /// `https://sts.windows.net` and its equivalents: v1 tokens' issuer, without the tenant.
    pub fn v1_issuer_host(self) -> &'static str {
        self.facts().v1_issuer
    }

    /// The audience of Azure OpenAI and Cognitive Services resources.
    pub fn cognitive_audience(self) -> &'static str {
        self.facts().cognitive_audience
    }

    /// The audience of Azure AI Foundry resources.
    pub fn foundry_audience(self) -> &'static str {
        self.facts().foundry_audience
    }

    /// The audience of Azure AI Search. Source: "Connect your app to Azure AI Search using
    /// identities" (Microsoft Learn) and the Search SDKs' `SearchAudience`
    /// (`AzurePublicCloud`, `AzureGovernment`, `AzureChina`): `https://search.azure.com`,
    /// `https://search.azure.us`, `https://search.azure.cn`.
    pub fn search_audience(self) -> &'static str {
        self.facts().search_audience
    }

    /// `api://AzureADTokenExchange` and its equivalents: the audience of a managed identity's or a
    /// workload's token presented as a federated identity credential.
    pub fn token_exchange_audience(self) -> &'static str {
        self.facts().token_exchange_audience
    }

    /// The kind of a host of this cloud; `None` for anything else (another cloud's hosts,
    /// custom domains, loopback, or a bare suffix without a resource name).
    pub fn host_kind(self, host: &str) -> Option<HostKind> {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        self.facts().hosts.iter().find_map(|(suffix, kind)| {
            host.strip_suffix(suffix)
                .filter(|name| !name.is_empty())
                .map(|_| *kind)
        })
    }

    /// The audience a bearer token needs on a host of `kind`; `None` for the regional
    /// endpoints, which refuse bearer tokens.
    pub fn accepted_audience(self, kind: HostKind) -> Option<&'static str> {
        match kind {
            HostKind::OpenAi | HostKind::CognitiveServices => Some(self.cognitive_audience()),
            HostKind::Foundry => Some(self.foundry_audience()),
            HostKind::Regional => None,
        }
    }

    /// The cloud and audience for an Azure AI host of any cloud: what Azure would accept there.
    pub fn audience_for_host(host: &str) -> Option<(Cloud, Option<&'static str>)> {
        Cloud::ALL.into_iter().find_map(|cloud| {
            cloud
                .host_kind(host)
                .map(|kind| (cloud, cloud.accepted_audience(kind)))
        })
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Public => "public",
            Cloud::Usgov => "usgov",
            Cloud::China => "china",
        })
    }
}

/// Azure compares audiences ignoring letter case and a trailing `/`.
pub(crate) fn same_audience(a: &str, b: &str) -> bool {
    fn bare(s: &str) -> &str {
        s.strip_suffix('/').unwrap_or(s)
    }
    bare(a).eq_ignore_ascii_case(bare(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_host_accepts_its_clouds_audience() {
        let cases = [
            (
                "res.openai.azure.com",
                Cloud::Public,
                Some("https://cognitiveservices.azure.com"),
            ),
            (
                "Res.CognitiveServices.Azure.Com.",
                Cloud::Public,
                Some("https://cognitiveservices.azure.com"),
            ),
            (
                "proj.services.ai.azure.com",
                Cloud::Public,
                Some("https://ai.azure.com"),
            ),
            ("eastus.api.cognitive.microsoft.com", Cloud::Public, None),
            (
                "res.openai.azure.us",
                Cloud::Usgov,
                Some("https://cognitiveservices.azure.us"),
            ),
            (
                "res.cognitiveservices.azure.us",
                Cloud::Usgov,
                Some("https://cognitiveservices.azure.us"),
            ),
            (
                "proj.services.ai.azure.us",
                Cloud::Usgov,
                Some("https://ai.azure.us"),
            ),
            (
                "res.openai.azure.cn",
                Cloud::China,
                Some("https://cognitiveservices.azure.cn"),
            ),
            (
                "res.cognitiveservices.azure.cn",
                Cloud::China,
                Some("https://cognitiveservices.azure.cn"),
            ),
            (
                "proj.services.ai.azure.cn",
                Cloud::China,
                Some("https://ai.azure.cn"),
            ),
            ("chinaeast2.api.cognitive.azure.cn", Cloud::China, None),
        ];
        for (host, cloud, audience) in cases {
            assert_eq!(
                Cloud::audience_for_host(host),
                Some((cloud, audience)),
                "{host}"
            );
        }
        for host in [
            "openai.azure.com",
            "127.0.0.1",
            "example.com",
            "res.openai.azure.de",
        ] {
            assert_eq!(Cloud::audience_for_host(host), None, "{host}");
        }
        assert_eq!(Cloud::Public.host_kind("res.openai.azure.us"), None);
    }

    #[test]
    fn login_hosts_and_issuers_per_cloud() {
        for cloud in Cloud::ALL {
            assert_eq!(
                cloud.authority_host(),
                format!("https://{}", cloud.login_host())
            );
            assert_eq!(cloud.login_aliases()[0], cloud.login_host());
        }
        assert_eq!(Cloud::Public.v1_issuer_host(), "https://sts.windows.net");
        assert_eq!(Cloud::Usgov.v1_issuer_host(), "https://sts.windows.net");
        assert_eq!(
            Cloud::China.v1_issuer_host(),
            "https://sts.chinacloudapi.cn"
        );
        assert_eq!(
            Cloud::Usgov.token_exchange_audience(),
            "api://AzureADTokenExchangeUSGov"
        );
        assert!(same_audience(
            "https://AI.azure.com/",
            "https://ai.azure.com"
        ));
        assert!(!same_audience(
            "https://ai.azure.com",
            "https://ai.azure.us"
        ));
        assert_eq!(Cloud::Public.search_audience(), "https://search.azure.com");
        assert_eq!(Cloud::Usgov.search_audience(), "https://search.azure.us");
        assert_eq!(Cloud::China.search_audience(), "https://search.azure.cn");
    }
}
