{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "tokenmint.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or just <release> when it already contains the chart name.
*/}}
{{- define "tokenmint.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "tokenmint.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (Deployment selectors are immutable).
*/}}
{{- define "tokenmint.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenmint.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels of every object the chart renders.
*/}}
{{- define "tokenmint.labels" -}}
helm.sh/chart: {{ include "tokenmint.chart" . }}
{{ include "tokenmint.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokenmint
{{- end }}

{{/*
Name of the ServiceAccount both containers run as.
*/}}
{{- define "tokenmint.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenmint.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference (both containers run the same image).
*/}}
{{- define "tokenmint.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The signing algorithm, validated: rendering fails for anything tokenmint does not implement.
*/}}
{{- define "tokenmint.algorithm" -}}
{{- $allowed := list "HS256" "EdDSA" "ES256" "RS256" }}
{{- if not (has .Values.algorithm $allowed) }}
{{- fail (printf "values.algorithm: %q is not supported; use one of HS256, EdDSA, ES256, RS256" (toString .Values.algorithm)) }}
{{- end }}
{{- .Values.algorithm }}
{{- end }}

{{/*
The log format, validated.
*/}}
{{- define "tokenmint.logFormat" -}}
{{- $allowed := list "text" "json" }}
{{- if not (has .Values.logFormat $allowed) }}
{{- fail (printf "values.logFormat: %q is not supported; use text or json" (toString .Values.logFormat)) }}
{{- end }}
{{- .Values.logFormat }}
{{- end }}

{{/*
The issuer, validated as non-empty.
*/}}
{{- define "tokenmint.issuer" -}}
{{- if not .Values.issuer }}
{{- fail "values.issuer must not be empty" }}
{{- end }}
{{- .Values.issuer }}
{{- end }}

{{/*
watchNamespaces, validated as a list of non-empty names.
*/}}
{{- define "tokenmint.watchNamespaces" -}}
{{- if not (kindIs "slice" .Values.watchNamespaces) }}
{{- fail "values.watchNamespaces must be a list of namespace names (empty = all namespaces)" }}
{{- end }}
{{- range .Values.watchNamespaces }}
{{- if not . }}
{{- fail "values.watchNamespaces must not contain empty names" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Arguments shared by `tokenmint operator` and `tokenmint serve`, one list item per line.
*/}}
{{- define "tokenmint.commonArgs" -}}
{{- include "tokenmint.watchNamespaces" . -}}
- --namespace
- {{ .Release.Namespace | quote }}
- --algorithm
- {{ include "tokenmint.algorithm" . | quote }}
- --issuer
- {{ include "tokenmint.issuer" . | quote }}
- --log-format
- {{ include "tokenmint.logFormat" . | quote }}
- --keyring-secret
- {{ .Values.keyring.secretName | quote }}
{{- range .Values.watchNamespaces }}
- --watch-namespace
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Environment shared by both containers: the pod's identity from the downward API.
*/}}
{{- define "tokenmint.podEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
