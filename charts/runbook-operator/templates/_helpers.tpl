{{- define "rbo.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "rbo.fullname" -}}{{ printf "%s" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "rbo.labels" -}}
app.kubernetes.io/name: {{ include "rbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "rbo.selector" -}}
app.kubernetes.io/name: {{ include "rbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "rbo.alertsTokenSecret" -}}{{ .Values.alerts.tokenSecret.name | default (printf "%s-alerts-token" (include "rbo.fullname" .)) }}{{- end -}}
