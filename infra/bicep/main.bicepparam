// Parameters for main.bicep:
//   export ENTRA_PROXY_KEYS_TOML="$(cat keys.toml)"
//   az deployment group create -g RG --template-file infra/bicep/main.bicep \
//     --parameters infra/bicep/main.bicepparam
using './main.bicep'

param baseName = 'entra-proxy'

// 'AIServices' for an AI Foundry account (role Azure AI User, scope https://ai.azure.com/.default).
param accountKind = 'OpenAI'

param deploymentName = 'gpt-4o'
param modelName = 'gpt-4o'
param modelVersion = '2024-11-20'
param deploymentSku = 'GlobalStandard'
param deploymentCapacity = 10

// The image built from infra/Dockerfile (az acr build -r myregistry -t entra-proxy:0.1.0
// -f infra/Dockerfile .), in a registry in the same resource group.
param image = 'myregistry.azurecr.io/entra-proxy:0.1.0'
param registryName = 'myregistry'

// [[keys]] blocks (names and SHA-256 digests of the keys clients send), from the environment
// so that they stay out of this file: entra-proxy keys new --name team-a
param keysToml = readEnvironmentVariable('ENTRA_PROXY_KEYS_TOML')
