// Azure Cache for Redis: TLS only (port 6380), access keys off, Microsoft Entra ID for the app.
param name string
param location string
param tags object
param identityPrincipalId string
@description('Object id of the deploying user (data access for debugging); empty for none.')
param principalId string

@description('Basic C0 is the smallest size (no replica, no SLA); use Standard or Premium in production.')
param sku object = {
  name: 'Basic'
  family: 'C'
  capacity: 0
}

resource cache 'Microsoft.Cache/redis@2024-11-01' = {
  // checkov:skip=CKV_AZURE_89: this template has no virtual network (Flex Consumption without VNet integration reaches services over their public endpoints); access needs Entra ID, TLS only, access keys off.
  name: name
  location: location
  tags: tags
  properties: {
    sku: sku
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    redisVersion: '6'
    disableAccessKeyAuthentication: true
    redisConfiguration: {
      'aad-enabled': 'true'
    }
  }
}

// "Data Contributor": reads, writes and Lua scripts; no administrative or dangerous commands.
resource appAccess 'Microsoft.Cache/redis/accessPolicyAssignments@2024-11-01' = {
  parent: cache
  name: 'app${uniqueString(cache.id, identityPrincipalId)}'
  properties: {
    accessPolicyName: 'Data Contributor'
    objectId: identityPrincipalId
    objectIdAlias: 'agentstream-app'
  }
}

resource userAccess 'Microsoft.Cache/redis/accessPolicyAssignments@2024-11-01' = if (!empty(principalId)) {
  parent: cache
  name: 'user${uniqueString(cache.id, principalId)}'
  properties: {
    accessPolicyName: 'Data Contributor'
    objectId: principalId
    objectIdAlias: 'deploying-user'
  }
  // The service accepts one access policy change at a time.
  dependsOn: [
    appAccess
  ]
}

output hostName string = cache.properties.hostName
output port int = cache.properties.sslPort
