//! The proxy's host → audience table and the emulator's are written independently; for every
//! host shape they must agree, or one of them has Azure's rules wrong.

use azure_emulator::Cloud as AzureCloud;
use entra_proxy::cloud::{Cloud, HostKind};

/// Resource hosts of every kind in every cloud, plus hosts that are none of them.
const HOSTS: &[&str] = &[
    "contoso.openai.azure.com",
    "contoso.cognitiveservices.azure.com",
    "contoso.services.ai.azure.com",
    "contoso.openai.azure.us",
    "contoso.cognitiveservices.azure.us",
    "contoso.services.ai.azure.us",
    "contoso.openai.azure.cn",
    "contoso.cognitiveservices.azure.cn",
    "contoso.services.ai.azure.cn",
    "CONTOSO.OpenAI.Azure.com.",
    "openai.azure.com",
    "contoso.example.com",
    "127.0.0.1",
];

#[test]
fn proxy_and_emulator_agree_on_the_audience_of_every_resource_host() {
    for host in HOSTS {
        let proxy = Cloud::of_host(host)
            .filter(|(_, kind)| *kind != HostKind::Regional)
            .map(|(cloud, kind)| (cloud.name().to_string(), cloud.audience_for(kind)));
        let emulator = AzureCloud::audience_for_host(host)
            .and_then(|(cloud, aud)| aud.map(|a| (cloud.to_string(), a)));
        assert_eq!(proxy, emulator, "{host}");
    }
}

#[test]
fn every_cloud_names_the_same_two_audiences_in_both_tables() {
    for (proxy, emulator) in [
        (Cloud::Public, AzureCloud::Public),
        (Cloud::Usgov, AzureCloud::Usgov),
        (Cloud::China, AzureCloud::China),
    ] {
        assert_eq!(proxy.cognitive_audience(), emulator.cognitive_audience());
        assert_eq!(proxy.foundry_audience(), emulator.foundry_audience());
        assert_eq!(proxy.authority_host(), emulator.authority_host());
    }
}
