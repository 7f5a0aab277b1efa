{{/*
Names. The Service name is what ScaledObjects put in scalerAddress
(<fullname>.<namespace>.svc:<grpc port>), so it must stay predictable:
a release named "predictive-autoscaler" gets exactly that name.
*/}}
{{- define "pa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pa.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pa.labels" -}}
helm.sh/chart: {{ include "pa.chart" . }}
{{ include "pa.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: predictive-autoscaler
{{- end -}}

{{- define "pa.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pa.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pa.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- if .Values.image.digest -}}
{{- $ref = printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "pa.priorityClassName" -}}
{{- default (printf "%s-placeholder" (include "pa.fullname" .)) .Values.placeholders.priorityClass.name -}}
{{- end -}}

{{- define "pa.leaseName" -}}
{{- default (include "pa.fullname" .) .Values.config.leaderElection.leaseName -}}
{{- end -}}

{{/* Where the daemon finds its files inside the container. */}}
{{- define "pa.configDir" -}}/etc/predictive-autoscaler{{- end -}}
{{- define "pa.tlsDir" -}}/etc/predictive-autoscaler/tls{{- end -}}

{{/*
TLS of the gRPC port. pa.tlsEnabled is "true" unless tls.mode is insecure-plaintext;
pa.certificateSource resolves tls.source auto to cert-manager or chart.
*/}}
{{- define "pa.tlsEnabled" -}}
{{- if ne .Values.tls.mode "insecure-plaintext" -}}true{{- end -}}
{{- end -}}

{{- define "pa.mutualTls" -}}
{{- if eq .Values.tls.mode "mutual-tls" -}}true{{- end -}}
{{- end -}}

{{- define "pa.certificateSource" -}}
{{- if eq .Values.tls.source "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}cert-manager{{- else -}}chart{{- end -}}
{{- else -}}
{{- .Values.tls.source -}}
{{- end -}}
{{- end -}}

{{/* The server's Secret (release namespace): tls.crt, tls.key and ca.crt. */}}
{{- define "pa.serverSecretName" -}}
{{- if eq (include "pa.certificateSource" .) "existing" -}}
{{- required "tls.source existing needs tls.existingSecret" .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "pa.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* KEDA's client Secret (keda.namespace): tls.crt, tls.key and ca.crt. */}}
{{- define "pa.clientSecretName" -}}
{{- if eq (include "pa.certificateSource" .) "existing" -}}
{{- required "tls.source existing needs tls.existingClientSecret" .Values.tls.existingClientSecret -}}
{{- else -}}
{{- printf "%s-keda-client" (include "pa.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "pa.triggerAuthenticationName" -}}
{{- default (include "pa.fullname" .) .Values.keda.clusterTriggerAuthentication.name -}}
{{- end -}}

{{/* The names KEDA may dial the server by: the Service, short and fully qualified, and tls.extraDnsNames. */}}
{{- define "pa.serverDnsNames" -}}
{{- $name := include "pa.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) -}}
{{- toJson (concat $names .Values.tls.extraDnsNames) -}}
{{- end -}}
{{- define "pa.prometheusSecretsDir" -}}/etc/predictive-autoscaler/prometheus{{- end -}}

{{/*
The daemon's least-privilege RBAC rules. The source of truth is
deploy/rbac/rules.yaml; files/rbac-rules.yaml is a byte-identical copy
(helm cannot read outside the chart) that a unit test keeps in sync.
*/}}
{{- define "pa.rbacRules" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml -}}
{{- range $key := list "clusterRules" "namespaceRules" "leaseRules" "metricsReaderRules" "inspectorRules" -}}
{{- if not (hasKey $rules $key) -}}
{{- fail (printf "files/rbac-rules.yaml has no %s list" $key) -}}
{{- end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{- define "pa.rbacSubjects" -}}
- kind: ServiceAccount
  name: {{ include "pa.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
