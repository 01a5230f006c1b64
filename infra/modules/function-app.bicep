// The Function App on Flex Consumption, running as the user-assigned identity.
param name string
param planName string
param location string
param tags object
param pythonVersion string
param instanceMemoryMB int
param maximumInstanceCount int
param httpPerInstanceConcurrency int
param concurrentRunsPerWorker int
param identityId string
param identityClientId string
param identityPrincipalId string
param storageAccountName string
param deploymentContainerUrl string
param appInsightsConnectionString string
param logAnalyticsId string
param redisHost string
param redisPort int
@description('REDIS_CLUSTER: true for a Redis Cluster (Azure Managed Redis with the OSS clustering policy), else false.')
@allowed([
  'true'
  'false'
])
param redisCluster string
param openAiEndpoint string
param openAiDeploymentName string
@description('Durable Task Scheduler endpoint; empty keeps the Azure Storage backend of host.json.')
param schedulerEndpoint string
@description('AUTH_MODE: key, entra or easyauth.')
param authMode string
param authTenantId string
@description('With authMode entra: the audience of the API\'s tokens.')
param authAudience string

var storageSuffix = environment().suffixes.storage

// Every setting agentstream/config.py reads, with production values (tests/test_infra.py holds
// this list against the code). No secrets: Redis and Azure OpenAI are reached with Entra ID.
var appSettings = {
  HTTP_AUTH_LEVEL: 'FUNCTION'
  REDIS_CONNECTION_STRING: 'rediss://${redisHost}:${redisPort}'
  REDIS_USE_ENTRA_ID: 'true'
  REDIS_ENTRA_USERNAME: identityPrincipalId
  REDIS_STREAM_TTL_MINUTES: '10'
  REDIS_STREAM_MAXLEN: '10000'
  REDIS_RETRY_SECONDS: '20'
  REDIS_MAX_CONNECTIONS: '16'
  REDIS_POOL_TIMEOUT_SECONDS: '2'
  REDIS_CLUSTER: redisCluster
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_DEPLOYMENT: openAiDeploymentName
  AZURE_OPENAI_API_VERSION: '2024-10-21'
  MODEL_TIMEOUT_SECONDS: '60'
  MODEL_MAX_RETRIES: '2'
  MAX_TOOL_ROUNDS: '5'
  HISTORY_MAX_MESSAGES: '100'
  OPEN_METEO_GEOCODING_URL: 'https://geocoding-api.open-meteo.com/v1/search'
  OPEN_METEO_FORECAST_URL: 'https://api.open-meteo.com/v1/forecast'
  TICKETMASTER_URL: 'https://app.ticketmaster.com/discovery/v2/events.json'
  TOOL_TIMEOUT_SECONDS: '10'
  TOOL_RESULT_MAX_CHARS: '4000'
  DELTA_FLUSH_CHARS: '64'
  DELTA_FLUSH_MS: '23'
  STREAM_KEEPALIVE_SECONDS: '15'
  STREAM_MAX_SECONDS: '200'
  SSE_RETRY_MS: '3000'
  STREAM_HUB: 'true'
  STREAM_HUB_CONNECTIONS: '4'
  STREAM_CATCH_UP_CONNECTIONS: '2'
  STREAM_MAX_READERS: '2000'
  STREAM_READER_QUEUE: '500'
  MAX_MESSAGE_CHARS: '16000'
  CONVERSATION_TTL_DAYS: '30'
  RUN_RECORD_TTL_DAYS: '30'
  RUN_LEASE_SECONDS: '30'
  RUN_START_DEADLINE_SECONDS: '300'
  AUTH_MODE: authMode
  AUTH_ENTRA_TENANT_ID: authTenantId
  AUTH_ENTRA_AUDIENCE: authAudience
  AUTH_LEEWAY_SECONDS: '60'
  LIMIT_ACTIVE_RUNS: '5'
  LIMIT_RUNS_PER_MINUTE: '30'
  LIMIT_OPEN_STREAMS: '20'
}

// Settings the Functions host, the Python worker and azure-identity read.
var platformSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: 'https://${storageAccountName}.blob.${storageSuffix}'
  AzureWebJobsStorage__queueServiceUri: 'https://${storageAccountName}.queue.${storageSuffix}'
  AzureWebJobsStorage__tableServiceUri: 'https://${storageAccountName}.table.${storageSuffix}'
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AZURE_CLIENT_ID: identityClientId
  PYTHON_ENABLE_INIT_INDEXING: '1'
  PYTHON_THREADPOOL_THREAD_COUNT: string(concurrentRunsPerWorker)
  // One entity batch holds one worker thread for the whole run: dispatch no more than there are.
  AzureFunctionsJobHost__extensions__durableTask__maxConcurrentOrchestratorFunctions: string(concurrentRunsPerWorker)
}

// The Durable Task Scheduler option: the same host.json, its storage provider switched here.
var schedulerSettings = empty(schedulerEndpoint) ? {} : {
  DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${schedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__type: 'azureManaged'
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone-redundant Flex Consumption is offered in some regions only; the plan scales out across instances anyway.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the app is a public HTTP API; every route needs a function key (HTTP_AUTH_LEVEL=FUNCTION).
  // checkov:skip=CKV_AZURE_17: clients authenticate with function keys (the console client and the browser page cannot present client certificates).
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; always-ready instances cost money while idle (set them in functionAppConfig if needed).
  // checkov:skip=CKV_AZURE_213: the platform's health check calls without a function key, which /api/health needs like every route; it is for operators and clients.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(union(appSettings, platformSettings, schedulerSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Deployments use Entra ID; publishing with basic credentials is off.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'logs'
  scope: site
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
