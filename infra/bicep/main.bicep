// entra-proxy on Azure Container Apps, in front of a private Azure OpenAI (or AI Foundry)
// account that has key auth and public network access turned off.
//
//   export ENTRA_PROXY_KEYS_TOML="$(cat keys.toml)"   # [[keys]] blocks: entra-proxy keys new --name NAME
//   az deployment group create -g RG --template-file infra/bicep/main.bicep \
//     --parameters infra/bicep/main.bicepparam
//
// What it creates, in the resource group's region:
// - a VNet: one subnet for the Container Apps environment (delegated to
//   Microsoft.App/environments, workload profiles) and one for private endpoints;
// - the account (kind OpenAI, or AIServices for Foundry): custom subdomain, local auth
//   disabled, public network access disabled, network ACLs default Deny, one model deployment;
// - its private endpoint (group `account`), the privatelink DNS zones linked to the VNet, and
//   the endpoint's DNS zone group, so the account's name resolves to a private address;
// - a user-assigned identity with the data-plane role on the account (at the account's scope);
//   and AcrPull on the registry that holds the image (registryName, same resource group);
// - a Log Analytics workspace, an internal Container Apps environment on the VNet, and the
//   proxy as a container app that uses that identity, with config.toml (next to this file)
//   and the keys file mounted from Container Apps secrets.
//
// Public cloud only: the privatelink zone names and hosts below are the public cloud's.

targetScope = 'resourceGroup'

@description('Prefix of every resource name.')
@minLength(3)
@maxLength(20)
param baseName string = 'entra-proxy'

param location string = resourceGroup().location

@description('OpenAI: an Azure OpenAI account (*.openai.azure.com, role Cognitive Services OpenAI User). AIServices: an AI Foundry account (*.services.ai.azure.com, token scope https://ai.azure.com/.default, role Azure AI User).')
@allowed([
  'OpenAI'
  'AIServices'
])
param accountKind string = 'OpenAI'

@description('Account name and custom subdomain; globally unique.')
@minLength(2)
@maxLength(64)
param accountName string = '${baseName}-${uniqueString(resourceGroup().id)}'

@description('Name of the model deployment (what requests name in /openai/deployments/{name}).')
param deploymentName string = 'gpt-4o'

@description('Model name as clients send it in `model` on /v1 requests.')
param modelAlias string = deploymentName

param modelFormat string = 'OpenAI'
param modelName string = 'gpt-4o'
param modelVersion string = '2024-11-20'

@description('Deployment type, e.g. Standard, GlobalStandard, DataZoneStandard.')
param deploymentSku string = 'GlobalStandard'

@description('Capacity in units of the SKU (thousands of tokens per minute for Standard types).')
@minValue(1)
param deploymentCapacity int = 10

@description('The proxy image, pinned by tag or digest, e.g. myregistry.azurecr.io/entra-proxy:0.1.0.')
param image string

@description('Name of the Azure Container Registry in this resource group that holds the image; the proxy\'s identity gets AcrPull on it and pulls with it. Empty for an image that needs no credentials.')
param registryName string = ''

@description('Contents of the keys file: [[keys]] blocks (name and SHA-256 digest), as printed by `entra-proxy keys new --name NAME`.')
@secure()
param keysToml string

@description('true: clients anywhere in the VNet (and peered VNets) reach the proxy; false: only apps in the same Container Apps environment. The environment is internal either way: no public address.')
param vnetClients bool = true

@minValue(1)
param minReplicas int = 2

@minValue(1)
param maxReplicas int = 10

param vnetAddressPrefix string = '10.60.0.0/16'

@description('Subnet of the Container Apps environment: /27 or larger for workload profiles; /23 leaves room to scale.')
param appsSubnetPrefix string = '10.60.0.0/23'

param privateEndpointSubnetPrefix string = '10.60.2.0/27'

param logRetentionDays int = 30

param tags object = {}

// The data-plane roles, the same names and ids the proxy's diagnosis prints for a 403
// PermissionDenied (src/diagnose/azure_error.rs; tests/it/infra.rs checks they agree).
// Control-plane roles (Cognitive Services Contributor, Owner) do not grant data actions.
var dataPlaneRoles = {
  OpenAI: {
    name: 'Cognitive Services OpenAI User'
    id: '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
  }
  AIServices: {
    name: 'Azure AI User'
    id: '53ca6127-db72-4b80-b1b0-d745d6d5456d'
  }
}
var role = dataPlaneRoles[accountKind]

// Every name the account answers to resolves through one of these zones once the private
// endpoint is in them: *.openai.azure.com for both kinds; AIServices also serves
// *.cognitiveservices.azure.com and *.services.ai.azure.com.
var openAiZones = [
  'privatelink.openai.azure.com'
]
var aiServicesZones = [
  'privatelink.openai.azure.com'
  'privatelink.cognitiveservices.azure.com'
  'privatelink.services.ai.azure.com'
]
var privateDnsZoneNames = accountKind == 'AIServices' ? aiServicesZones : openAiZones

var backendHost = accountKind == 'AIServices' ? '${accountName}.services.ai.azure.com' : '${accountName}.openai.azure.com'
var backendEndpoint = 'https://${backendHost}'

// ---------------------------------------------------------------- network

resource appsNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${baseName}-apps-nsg'
  location: location
  tags: tags
  // The default rules: inbound from the VNet and Azure's load balancer only.
  properties: {}
}

resource privateEndpointNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${baseName}-pe-nsg'
  location: location
  tags: tags
  properties: {}
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: '${baseName}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        vnetAddressPrefix
      ]
    }
    subnets: [
      {
        name: 'apps'
        properties: {
          addressPrefix: appsSubnetPrefix
          networkSecurityGroup: { id: appsNsg.id }
          delegations: [
            {
              name: 'Microsoft.App.environments'
              properties: { serviceName: 'Microsoft.App/environments' }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: { id: privateEndpointNsg.id }
          // NSG rules apply to the private endpoints in this subnet too.
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

resource appsSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: 'apps'
}

resource privateEndpointSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: 'private-endpoints'
}

// ---------------------------------------------------------------- the account

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: accountName
  location: location
  tags: tags
  kind: accountKind
  sku: {
    name: 'S0'
  }
  // The account's own identity (not the proxy's): what it would use to reach a
  // customer-managed key; checkov CKV_AZURE_238 asks for it.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    // Entra tokens are only accepted on the custom subdomain, never on the regional endpoint.
    customSubDomainName: accountName
    // No keys: callers reach the account only through the proxy's Entra token.
    disableLocalAuth: true
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      ipRules: []
      virtualNetworkRules: []
    }
  }
}

resource modelDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: deploymentSku
    capacity: deploymentCapacity
  }
  properties: {
    model: {
      format: modelFormat
      name: modelName
      version: modelVersion
    }
  }
}

resource privateDnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for zone in privateDnsZoneNames: {
    name: zone
    location: 'global'
    tags: tags
  }
]

// Without this link, the VNet keeps resolving the account's name to its public address, and
// the account (public access disabled) answers 403.
resource privateDnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (zone, i) in privateDnsZoneNames: {
    parent: privateDnsZones[i]
    name: '${baseName}-vnet'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: { id: vnet.id }
    }
  }
]

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: '${accountName}-pe'
  location: location
  tags: tags
  properties: {
    subnet: { id: privateEndpointSubnet.id }
    privateLinkServiceConnections: [
      {
        name: 'account'
        properties: {
          privateLinkServiceId: account.id
          groupIds: [
            'account'
          ]
        }
      }
    ]
  }
}

// Writes the endpoint's A records into the zones, and keeps them in step with the endpoint.
resource privateDnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      for (zone, i) in privateDnsZoneNames: {
        name: replace(zone, '.', '-')
        properties: {
          privateDnsZoneId: privateDnsZones[i].id
        }
      }
    ]
  }
}

// ---------------------------------------------------------------- identity

resource proxyIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${baseName}-id'
  location: location
  tags: tags
}

// At the account's scope: a role on another account, the resource group of another account,
// or a control-plane role gives 403 PermissionDenied on every call.
resource dataPlaneRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, proxyIdentity.id, role.id)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    principalId: proxyIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: '${role.name}: entra-proxy calls the data plane with this identity'
  }
}

// ---------------------------------------------------------------- Container Apps

var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = if (!empty(registryName)) {
  name: empty(registryName) ? 'unused' : registryName
}

resource registryPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(registryName)) {
  name: guid(resourceGroup().id, registryName, proxyIdentity.id, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: proxyIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'AcrPull: Container Apps pulls the entra-proxy image with this identity'
  }
}

var registries = [
  {
    server: '${registryName}.azurecr.io'
    identity: proxyIdentity.id
  }
]

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${baseName}-logs'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appsEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${baseName}-env'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
    vnetConfiguration: {
      infrastructureSubnetId: appsSubnet.id
      // No public IP: the environment's ingress is an internal load balancer in the subnet.
      internal: true
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

module environmentDns 'modules/environment-dns.bicep' = {
  name: '${baseName}-env-dns'
  params: {
    defaultDomain: appsEnvironment.properties.defaultDomain
    staticIp: appsEnvironment.properties.staticIp
    vnetId: vnet.id
    tags: tags
  }
}

resource proxy 'Microsoft.App/containerApps@2024-03-01' = {
  name: baseName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${proxyIdentity.id}': {}
    }
  }
  properties: {
    environmentId: appsEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: vnetClients
        targetPort: 8080
        transport: 'auto'
        allowInsecure: false
      }
      registries: empty(registryName) ? [] : registries
      secrets: [
        {
          name: 'config-toml'
          value: loadTextContent('config.toml')
        }
        {
          name: 'keys-toml'
          value: keysToml
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'entra-proxy'
          image: image
          args: [
            'serve'
            '--config'
            '/etc/entra-proxy/config.toml'
          ]
          env: [
            // config.toml: [identity] client_id = "${AZURE_CLIENT_ID}"
            { name: 'AZURE_CLIENT_ID', value: proxyIdentity.properties.clientId }
            { name: 'ENTRA_PROXY_ENDPOINT', value: backendEndpoint }
            { name: 'ENTRA_PROXY_DEPLOYMENT', value: modelDeployment.name }
            { name: 'ENTRA_PROXY_MODEL', value: modelAlias }
            { name: 'ENTRA_PROXY_LOG_FORMAT', value: 'json' }
          ]
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          probes: [
            {
              type: 'Startup'
              httpGet: { path: '/healthz', port: 8080 }
              periodSeconds: 2
              failureThreshold: 30
            }
            {
              type: 'Liveness'
              httpGet: { path: '/healthz', port: 8080 }
              periodSeconds: 10
              failureThreshold: 3
            }
            {
              // Ready once a token for the account's scope is held.
              type: 'Readiness'
              httpGet: { path: '/readyz', port: 8080 }
              periodSeconds: 5
              failureThreshold: 3
            }
          ]
          volumeMounts: [
            { volumeName: 'config', mountPath: '/etc/entra-proxy' }
            { volumeName: 'keys', mountPath: '/etc/entra-proxy/keys' }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'concurrent-requests'
            http: {
              metadata: {
                concurrentRequests: '200'
              }
            }
          }
        ]
      }
      volumes: [
        {
          name: 'config'
          storageType: 'Secret'
          secrets: [
            { secretRef: 'config-toml', path: 'config.toml' }
          ]
        }
        {
          name: 'keys'
          storageType: 'Secret'
          secrets: [
            { secretRef: 'keys-toml', path: 'keys.toml' }
          ]
        }
      ]
    }
  }
  // Start once the role and the private DNS are in place, so the first /readyz can succeed.
  dependsOn: [
    dataPlaneRole
    registryPull
    privateDnsZoneLinks
    privateDnsZoneGroup
  ]
}

@description('The proxy\'s URL inside the VNet (clients use it as their Azure OpenAI endpoint).')
output proxyUrl string = 'https://${proxy.properties.configuration.ingress.fqdn}'

@description('Object id of the proxy\'s identity (the principal the role is assigned to).')
output identityPrincipalId string = proxyIdentity.properties.principalId

@description('Client id of the proxy\'s identity ([identity] client_id).')
output identityClientId string = proxyIdentity.properties.clientId

output accountEndpoint string = backendEndpoint
output roleAssigned string = role.name
