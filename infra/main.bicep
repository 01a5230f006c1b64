// agentstream on Azure: `azd up` deploys this at subscription scope (it creates the resource group).
// Everything the app reaches is reached with one user-assigned managed identity: no keys anywhere.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Region of every resource (pick one that offers Flex Consumption and Azure Managed Redis).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of the person running azd: gets data access to storage, Redis, Azure OpenAI and the scheduler dashboard, for debugging. Empty: none.')
param principalId string = ''

@description('managed: Azure Managed Redis (Microsoft.Cache/redisEnterprise). cache: Azure Cache for Redis (Microsoft.Cache/redis).')
@allowed([
  'managed'
  'cache'
])
param redisFlavor string = 'managed'

@description('Clustering policy of Azure Managed Redis. OSSCluster: clients talk to each shard directly (lowest latency; the app uses redis-py\'s cluster clients). EnterpriseCluster: one proxy endpoint that looks like a single Redis.')
@allowed([
  'OSSCluster'
  'EnterpriseCluster'
])
param redisClusteringPolicy string = 'OSSCluster'

@description('AzureStorage: the durable backend is the storage account. DurableTaskScheduler: a scheduler and task hub, with its dashboard.')
@allowed([
  'AzureStorage'
  'DurableTaskScheduler'
])
param durableBackend string = 'AzureStorage'

@description('Python version of the Flex Consumption app (the app runs on 3.11 to 3.13).')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.12'

@description('Region of the Azure OpenAI account; empty means the same as location.')
param openAiLocation string = ''

@description('An existing Azure OpenAI endpoint (https://<name>.openai.azure.com/) to use instead of creating an account; its deployment is openAiDeploymentName, and the app identity needs the Cognitive Services OpenAI User role on it. Empty: create one.')
param existingOpenAiEndpoint string = ''

@description('Name of the model deployment the agent calls (AZURE_OPENAI_DEPLOYMENT).')
param openAiDeploymentName string = 'gpt-4o-mini'

@description('Model of that deployment.')
param openAiModelName string = 'gpt-4o-mini'

@description('Model version.')
param openAiModelVersion string = '2024-07-18'

@description('Deployment SKU (GlobalStandard, Standard, ...).')
param openAiDeploymentSku string = 'GlobalStandard'

@description('Deployment capacity in thousands of tokens per minute.')
param openAiDeploymentCapacity int = 30

@description('Agent runs one worker process takes at once: PYTHON_THREADPOOL_THREAD_COUNT and the durable concurrency limit (one entity batch holds one thread).')
@minValue(1)
@maxValue(64)
param concurrentRunsPerWorker int = 16

@description('Concurrent HTTP requests per instance; a streaming reader holds one for up to STREAM_MAX_SECONDS.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 64

@description('Flex Consumption instance memory.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption scale-out limit.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Who may call the API (AUTH_MODE): key (the function key), entra (Entra ID bearer tokens for authAudience) or easyauth (App Service Authentication, turned on separately).')
@allowed([
  'key'
  'entra'
  'easyauth'
])
param authMode string = 'key'

@description('With authMode entra: the audience tokens must carry (the API app registration\'s application ID URI or client id).')
param authAudience string = ''

var tags = { 'azd-env-name': environmentName }
var token = toLower(uniqueString(subscription().id, environmentName, location))
var useScheduler = durableBackend == 'DurableTaskScheduler'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-agentstream-${token}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${token}'
    appInsightsName: 'appi-${token}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${token}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    principalId: principalId
  }
}

module managedRedis 'modules/redis-managed.bicep' = if (redisFlavor == 'managed') {
  name: 'redis-managed'
  scope: rg
  params: {
    name: 'redis-${token}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    principalId: principalId
    clusteringPolicy: redisClusteringPolicy
  }
}

module cacheRedis 'modules/redis-cache.bicep' = if (redisFlavor == 'cache') {
  name: 'redis-cache'
  scope: rg
  params: {
    name: 'redis-${token}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    principalId: principalId
  }
}

var createOpenAi = empty(existingOpenAiEndpoint)

module openAi 'modules/openai.bicep' = if (createOpenAi) {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${token}'
    location: empty(openAiLocation) ? location : openAiLocation
    tags: tags
    deploymentName: openAiDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    deploymentSku: openAiDeploymentSku
    deploymentCapacity: openAiDeploymentCapacity
    identityPrincipalId: identity.outputs.principalId
    principalId: principalId
  }
}

module scheduler 'modules/durable-task-scheduler.bicep' = if (useScheduler) {
  name: 'durable-task-scheduler'
  scope: rg
  params: {
    name: 'dts-${token}'
    // The same name as hubName in host.json, so one host.json serves both backends.
    taskHubName: 'agentstream'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    principalId: principalId
  }
}

module app 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: 'func-agentstream-${token}'
    planName: 'plan-${token}'
    location: location
    tags: tags
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    concurrentRunsPerWorker: concurrentRunsPerWorker
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    redisHost: redisFlavor == 'managed' ? managedRedis.outputs.hostName : cacheRedis.outputs.hostName
    redisPort: redisFlavor == 'managed' ? managedRedis.outputs.port : cacheRedis.outputs.port
    redisCluster: redisFlavor == 'managed' && redisClusteringPolicy == 'OSSCluster' ? 'true' : 'false'
    openAiEndpoint: createOpenAi ? openAi.outputs.endpoint : existingOpenAiEndpoint
    openAiDeploymentName: createOpenAi ? openAi.outputs.deploymentName : openAiDeploymentName
    schedulerEndpoint: useScheduler ? scheduler.outputs.endpoint : ''
    authMode: authMode
    authTenantId: tenant().tenantId
    authAudience: authAudience
  }
}

// azd turns these into environment values (`azd env get-values`).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AGENTSTREAM_URL string = app.outputs.url
output AZURE_OPENAI_ENDPOINT string = createOpenAi ? openAi.outputs.endpoint : existingOpenAiEndpoint
output AZURE_OPENAI_DEPLOYMENT string = createOpenAi ? openAi.outputs.deploymentName : openAiDeploymentName
output AZURE_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output REDIS_HOST string = redisFlavor == 'managed' ? managedRedis.outputs.hostName : cacheRedis.outputs.hostName
output DURABLE_TASK_SCHEDULER_DASHBOARD string = useScheduler ? scheduler.outputs.dashboardUrl : ''
