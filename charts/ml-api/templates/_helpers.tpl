{{/*
Expand the name of the chart.
*/}}
{{- define "ml-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 characters because some Kubernetes name
fields are limited to that (DNS-1123). If the release name contains the chart name it is used as is.
*/}}
{{- define "ml-api.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version as used by the helm.sh/chart label.
*/}}
{{- define "ml-api.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource of the release, without a component.
*/}}
{{- define "ml-api.baseLabels" -}}
helm.sh/chart: {{ include "ml-api.chart" . }}
{{ include "ml-api.baseSelectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ml-api
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the API server and its companion resources.
*/}}
{{- define "ml-api.labels" -}}
{{ include "ml-api.baseLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Selector labels: immutable on a Deployment, so they never include the version or chart.
The component keeps the API pods apart from the development Redis of the same release.
*/}}
{{- define "ml-api.baseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ml-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ml-api.selectorLabels" -}}
{{ include "ml-api.baseSelectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Common annotations block (metadata.annotations), merged with resource-specific ones.
Usage: include "ml-api.annotations" (dict "extra" .Values.x.annotations "context" $)
*/}}
{{- define "ml-api.annotations" -}}
{{- $all := merge (deepCopy (default dict .extra)) (deepCopy (default dict .context.Values.commonAnnotations)) -}}
{{- with $all -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "ml-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ml-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: registry/repository, then @digest or :tag (tag defaults to the appVersion).
Usage: include "ml-api.image" (dict "image" .Values.image "context" $)
*/}}
{{- define "ml-api.image" -}}
{{- $repo := .image.repository }}
{{- if .image.registry }}
{{- $repo = printf "%s/%s" .image.registry .image.repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (toString (default .context.Chart.AppVersion .image.tag)) }}
{{- end }}
{{- end }}

{{/*
Intra-op torch threads: the explicit setting pins them; empty is 0, adaptive: the service reads its
CPU quota from the container's cgroup (cpu.max) and shares it among workers and model instances.
*/}}
{{- define "ml-api.torchThreads" -}}
{{- if ne (toString .Values.config.torchThreads) "" }}{{ .Values.config.torchThreads | int }}{{ else }}0{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: preStop sleep + service drain + 10 s margin, so the kubelet never
SIGKILLs a pod that is still finishing in-flight inference.
*/}}
{{- define "ml-api.terminationGracePeriodSeconds" -}}
{{- if ne (toString .Values.terminationGracePeriodSeconds) "" }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- else }}
{{- $sleep := 0 }}
{{- if .Values.preStop.enabled }}{{ $sleep = int .Values.preStop.sleepSeconds }}{{ end }}
{{- add $sleep (ceil (float64 .Values.config.shutdownGraceS) | int) 10 }}
{{- end }}
{{- end }}

{{/*
Minimum replica count the workload can drop to (drives the PDB).
*/}}
{{- define "ml-api.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else if .Values.keda.enabled }}
{{- .Values.keda.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
Name of the development Redis Deployment/Service.
*/}}
{{- define "ml-api.redisDevName" -}}
{{- printf "%s-redis" (include "ml-api.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
True when the weights come from a volume (PVC or init container).
*/}}
{{- define "ml-api.weightsVolume" -}}
{{- if or .Values.weights.existingClaim .Values.weights.initContainer.enabled }}true{{ end }}
{{- end }}

{{/*
Fail early, with a message naming the values, on combinations that cannot work.
*/}}
{{/* The models ConfigMap (models.fromConfigMap) and the file it appears as in the pod. */}}
{{- define "ml-api.modelsConfigMap" -}}
{{- printf "%s-models" (include "ml-api.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ml-api.modelsFile" -}}
{{- printf "%s/models.json" (trimSuffix "/" .Values.models.mountPath) -}}
{{- end -}}

{{- define "ml-api.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "ml-api: autoscaling.enabled and keda.enabled are both true; KEDA creates its own HPA, so enable only one of them" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled }}
{{- fail "ml-api: serviceMonitor.enabled and podMonitor.enabled are both true; enable only one, or Prometheus scrapes every pod twice" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "ml-api: autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- fail (printf "ml-api: keda.minReplicas (%d) is greater than keda.maxReplicas (%d)" (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.inflightRequests.enabled) (eq (toString .Values.autoscaling.targetCPUUtilizationPercentage) "") (eq (toString .Values.autoscaling.targetMemoryUtilizationPercentage) "") (empty .Values.autoscaling.metrics) }}
{{- fail "ml-api: autoscaling.enabled needs at least one metric: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage, inflightRequests.enabled or metrics" }}
{{- end }}
{{- if and .Values.redis.enabled (not .Values.redis.existingSecret) (not .Values.redis.dev.enabled) }}
{{- fail "ml-api: redis.enabled needs redis.existingSecret (a Secret with the Redis URL under redis.urlKey) or redis.dev.enabled for a development Redis" }}
{{- end }}
{{- if and .Values.redis.dev.enabled (not .Values.redis.enabled) }}
{{- fail "ml-api: redis.dev.enabled deploys a Redis for the service; set redis.enabled=true as well" }}
{{- end }}
{{- if and .Values.weights.existingClaim .Values.weights.initContainer.enabled }}
{{- fail "ml-api: weights.existingClaim and weights.initContainer.enabled are both set; pick one source for the weights volume" }}
{{- end }}
{{- if and .Values.weights.initContainer.enabled (not .Values.weights.initContainer.image) }}
{{- fail "ml-api: weights.initContainer.enabled needs weights.initContainer.image" }}
{{- end }}
{{- if and .Values.otel.enabled (not .Values.otel.endpoint) }}
{{- fail "ml-api: otel.enabled needs otel.endpoint (e.g. http://otel-collector.observability:4318)" }}
{{- end }}
{{- range $k, $_ := .Values.config.extra }}
{{- if or (hasSuffix "API_KEYS" $k) (hasSuffix "REDIS_URL" $k) (hasSuffix "STORAGE_URI" $k) (contains "PASSWORD" $k) (contains "SECRET" $k) (contains "TOKEN" $k) }}
{{- fail (printf "ml-api: config.extra.%s looks like a secret and would land in a ConfigMap; use apiKeys.existingSecret, redis.existingSecret or extraEnv with a secretKeyRef" $k) }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (empty .Values.ingress.hosts) }}
{{- fail "ml-api: ingress.enabled needs at least one entry in ingress.hosts" }}
{{- end }}
{{- end }}
