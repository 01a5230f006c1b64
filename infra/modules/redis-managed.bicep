// Azure Managed Redis: TLS only, access keys off, Microsoft Entra ID for the app's identity.
param name string
param location string
param tags object
param identityPrincipalId string
@description('Object id of the deploying user (data access for debugging); empty for none.')
param principalId string

@description('OSSCluster: each shard reached directly by a cluster-aware client. EnterpriseCluster: one proxy endpoint.')
@allowed([
  'OSSCluster'
  'EnterpriseCluster'
])
param clusteringPolicy string

@description('Balanced_B0 is the smallest size; raise it for production traffic.')
param skuName string = 'Balanced_B0'

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    highAvailability: 'Enabled'
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    accessKeysAuthentication: 'Disabled'
    // Either policy works: every script and every stream hub read stays in one slot (slot
    // groups), and REDIS_CLUSTER tells the app which client to use (README, "Deploy to Azure").
    clusteringPolicy: clusteringPolicy
    // Streams carry their own TTL; under memory pressure evict only keys that have one.
    evictionPolicy: 'VolatileLRU'
  }
}

// Assignment names allow letters and digits only, hence uniqueString rather than guid.
resource appAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: database
  name: 'app${uniqueString(database.id, identityPrincipalId)}'
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: identityPrincipalId
    }
  }
}

resource userAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = if (!empty(principalId)) {
  parent: database
  name: 'user${uniqueString(database.id, principalId)}'
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: principalId
    }
  }
  dependsOn: [
    appAccess
  ]
}

output hostName string = cluster.properties.hostName
output port int = 10000
