// Private DNS for an internal Container Apps environment: its default domain, with a wildcard
// record to the environment's internal load balancer, linked to the VNet, so clients in the
// VNet resolve the proxy's URL. A module because a zone's name must be known when a
// deployment starts, and the environment's default domain is only known once it exists.

@description('The environment\'s default domain (managedEnvironments properties.defaultDomain).')
param defaultDomain string

@description('The environment\'s internal IP address (managedEnvironments properties.staticIp).')
param staticIp string

@description('Resource id of the VNet whose clients call the proxy.')
param vnetId string

param tags object = {}

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: defaultDomain
  location: 'global'
  tags: tags
}

resource wildcard 'Microsoft.Network/privateDnsZones/A@2024-06-01' = {
  parent: zone
  name: '*'
  properties: {
    ttl: 300
    aRecords: [
      { ipv4Address: staticIp }
    ]
  }
}

resource link 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: zone
  name: 'vnet'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnetId }
  }
}
