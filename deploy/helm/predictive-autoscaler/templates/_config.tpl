{{/*
The daemon's config.yaml. Optional fields are left out rather than written empty,
so the daemon's own defaults apply.
*/}}
{{- define "pa.daemonConfig" -}}
{{- $secretsDir := include "pa.prometheusSecretsDir" . -}}
prometheus:
  endpoints:
  {{- range $i, $ep := .Values.config.prometheus.endpoints }}
    - name: {{ $ep.name | quote }}
      url: {{ $ep.url | quote }}
      {{- if $ep.bearerTokenSecret }}
      bearerTokenFile: {{ printf "%s/%d-token/%s" $secretsDir $i $ep.bearerTokenSecret.key | quote }}
      {{- else if $ep.bearerTokenFile }}
      bearerTokenFile: {{ $ep.bearerTokenFile | quote }}
      {{- end }}
      {{- if $ep.caSecret }}
      caFile: {{ printf "%s/%d-ca/%s" $secretsDir $i $ep.caSecret.key | quote }}
      {{- else if $ep.caFile }}
      caFile: {{ $ep.caFile | quote }}
      {{- end }}
      {{- if hasKey $ep "timeoutSeconds" }}
      timeoutSeconds: {{ $ep.timeoutSeconds }}
      {{- end }}
      {{- if hasKey $ep "retries" }}
      retries: {{ $ep.retries }}
      {{- end }}
      {{- if $ep.insecureSkipVerify }}
      insecureSkipVerify: true
      {{- end }}
  {{- end }}
grpc:
  port: {{ .Values.service.grpcPort }}
  {{- if include "pa.tlsEnabled" . }}
  tlsCertFile: {{ include "pa.tlsDir" . }}/tls.crt
  tlsKeyFile: {{ include "pa.tlsDir" . }}/tls.key
  {{- end }}
  {{- if include "pa.mutualTls" . }}
  clientCaFile: {{ include "pa.tlsDir" . }}/ca.crt
  {{- end }}
http:
  port: {{ .Values.service.httpPort }}
  {{- with .Values.config.http }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
leaderElection:
  enabled: {{ .Values.config.leaderElection.enabled }}
  leaseName: {{ include "pa.leaseName" . | quote }}
  namespace: {{ .Release.Namespace | quote }}
  leaseDurationSeconds: {{ .Values.config.leaderElection.leaseDurationSeconds }}
  renewPeriodSeconds: {{ .Values.config.leaderElection.renewPeriodSeconds }}
actuator:
  mode: {{ .Values.config.actuator.mode }}
  priorityClassName: {{ include "pa.priorityClassName" . | quote }}
  priorityValue: {{ .Values.placeholders.priorityClass.value }}
  pauseImage: {{ .Values.placeholders.pauseImage | quote }}
  shadow: {{ .Values.config.actuator.shadow }}
{{- with .Values.config.engine }}
{{- $engine := . }}
engine:
  {{- range $key := list "fitWorkers" "maxTargets" "fullCollectionSeconds" }}
  {{- if hasKey $engine $key }}
  {{ $key }}: {{ index $engine $key }}
  {{- end }}
  {{- end }}
{{- end }}
{{- with .Values.config.limits }}
limits:
  {{- toYaml . | nindent 2 }}
{{- end }}
log:
  level: {{ .Values.config.log.level }}
  format: {{ .Values.config.log.format }}
{{- end -}}
