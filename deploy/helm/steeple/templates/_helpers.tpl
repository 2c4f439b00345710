{{/* Names, labels, the rendered steeple.toml and the pieces both modes share. */}}

{{- define "steeple.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "steeple.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "steeple.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "steeple.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "steeple.selectorLabels" -}}
app.kubernetes.io/name: {{ include "steeple.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "steeple.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "steeple.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "steeple.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "steeple.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Fails the render on a mode the chart does not know. */}}
{{- define "steeple.mode" -}}
{{- if not (has .Values.mode (list "sidecar" "daemonset")) }}
{{- fail (printf "mode must be sidecar or daemonset, not %q" .Values.mode) }}
{{- end }}
{{- .Values.mode }}
{{- end }}

{{- define "steeple.spireSocketPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.spireSocket.mountPath) .Values.spireSocket.socketName }}
{{- end }}

{{/* Sidecar: in sds/, a subdirectory Steeple creates in the emptyDir (which the kubelet
makes 0777, and Steeple refuses as a socket directory). DaemonSet: the node directory the
init container hands to Steeple. */}}
{{- define "steeple.sdsSocketPath" -}}
{{- if eq .Values.mode "sidecar" }}
{{- printf "%s/sds/sds.sock" (trimSuffix "/" .Values.sdsSocketDir) }}
{{- else }}
{{- printf "%s/sds.sock" (trimSuffix "/" .Values.sdsSocketDir) }}
{{- end }}
{{- end }}

{{/*
TOML rendering of structured values. Helm reads every YAML number as a float, so whole
numbers are written as integers (Steeple's uids, counts and versions are integers).
*/}}
{{- define "steeple.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "steeple.toml.value" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- if ne (float64 (int64 .)) (float64 .) }}
{{- fail (printf "steeple.toml: %v is not a whole number (Steeple has no fractional keys)" .) }}
{{- end }}
{{- int64 . }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "steeple.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" . }}{ {{- $first := true }}{{ range $k, $v := . }}{{ if not (kindIs "invalid" $v) }}{{ if not $first }},{{ end }}{{ $first = false }} {{ include "steeple.toml.key" $k }} = {{ include "steeple.toml.value" $v }}{{ end }}{{ end }} }
{{- else }}
{{- fail (printf "steeple.toml: cannot render %v (%s)" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* The key = value lines of one table; null values are left out. */}}
{{- define "steeple.toml.entries" -}}
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}
{{- fail (printf "steeple.toml: %s: nested tables are not part of Steeple's configuration" $k) }}
{{- else if not (kindIs "invalid" $v) }}
{{ include "steeple.toml.key" $k }} = {{ include "steeple.toml.value" $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* A whole document: each map is a [section], each list of maps a [[section]] array. */}}
{{- define "steeple.toml.document" -}}
{{- range $section, $body := . }}
{{- if kindIs "map" $body }}

[{{ include "steeple.toml.key" $section }}]
{{- include "steeple.toml.entries" $body }}
{{- else if kindIs "slice" $body }}
{{- range $body }}

[[{{ include "steeple.toml.key" $section }}]]
{{- include "steeple.toml.entries" . }}
{{- end }}
{{- else if not (kindIs "invalid" $body) }}
{{- fail (printf "steeple.toml: %s must be a table or a list of tables" $section) }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when Steeple runs as a node agent: nodeAgent.enabled in daemonset mode. */}}
{{- define "steeple.nodeAgent" -}}
{{- if and .Values.nodeAgent.enabled (eq (include "steeple.mode" .) "daemonset") }}true{{- end }}
{{- end }}

{{/* steeple.toml: configToml verbatim, or config + aws + vault with the chart's sockets. */}}
{{- define "steeple.configToml" -}}
{{- if .Values.configToml }}
{{- .Values.configToml }}
{{- else }}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $workloadApi := get $config "workload_api" | default dict }}
{{- $_ := set $workloadApi "socket" (include "steeple.spireSocketPath" .) }}
{{- if include "steeple.nodeAgent" . }}
{{- $_ := set $workloadApi "mode" "delegated" }}
{{- $_ := set $workloadApi "admin_socket" (printf "%s/%s" (trimSuffix "/" .Values.nodeAgent.mountPath) .Values.nodeAgent.adminSocketName) }}
{{- with .Values.nodeAgent.defaultSvidHint }}
{{- $_ := set $workloadApi "default_svid_hint" . }}
{{- end }}
{{- end }}
{{- $_ := set $config "workload_api" $workloadApi }}
{{- $sds := get $config "sds" | default dict }}
{{- $_ := set $sds "socket" (include "steeple.sdsSocketPath" .) }}
{{- $_ := set $config "sds" $sds }}
{{- if .Values.admin.enabled }}
{{- $admin := get $config "admin" | default dict }}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%d" (int .Values.admin.port)) }}
{{- $_ := set $config "admin" $admin }}
{{- end }}
{{- if .Values.aws.enabled }}
{{- $_ := set $config "aws" (deepCopy .Values.aws) }}
{{- end }}
{{- if .Values.vault.enabled }}
{{- $vault := omit .Values.vault "caSecret" }}
{{- if .Values.vault.caSecret }}
{{- $_ := set $vault "ca_file" "/etc/steeple-vault/ca.crt" }}
{{- end }}
{{- $_ := set $config "vault" $vault }}
{{- end -}}
# steeple.toml rendered by the steeple chart (check with: steeple check-config --config F)
{{- include "steeple.toml.document" $config }}
{{- end }}
{{- end }}

{{/* The pod security context both modes share. */}}
{{- define "steeple.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A container's security context: non-root, nothing to escalate to, read-only root. */}}
{{- define "steeple.containerSecurityContext" -}}
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* The Steeple container; with the admin listener, its port and both probes. */}}
{{- define "steeple.container" -}}
- name: steeple
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/usr/local/bin/steeple", "run", "--config", "/etc/steeple/steeple.toml"]
  {{- if .Values.admin.enabled }}
  ports:
    - name: admin
      containerPort: {{ .Values.admin.port }}
  # Liveness: the process serves. Readiness: every configured output is held.
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    {{- toYaml .Values.admin.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    {{- toYaml .Values.admin.readinessProbe | nindent 4 }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "steeple.containerSecurityContext" (dict "uid" .Values.runAsUser "gid" .Values.runAsGroup) | nindent 4 }}
  volumeMounts:
    - name: steeple-config
      mountPath: /etc/steeple
      readOnly: true
    - name: steeple-sds
      mountPath: {{ .Values.sdsSocketDir }}
    - name: spire-agent-socket
      mountPath: {{ .Values.spireSocket.mountPath }}
      readOnly: true
    {{- if include "steeple.nodeAgent" . }}
    - name: spire-agent-admin
      mountPath: {{ .Values.nodeAgent.mountPath }}
      readOnly: true
    {{- end }}
    {{- if and .Values.vault.enabled .Values.vault.caSecret }}
    - name: vault-ca
      mountPath: /etc/steeple-vault
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The volumes every mode has; the caller adds steeple-sds. */}}
{{- define "steeple.volumes" -}}
- name: steeple-config
  configMap:
    name: {{ include "steeple.fullname" . }}
- name: spire-agent-socket
  {{- if eq .Values.spireSocket.source "csi" }}
  csi:
    driver: csi.spiffe.io
    readOnly: true
  {{- else if eq .Values.spireSocket.source "hostPath" }}
  hostPath:
    path: {{ .Values.spireSocket.hostPath }}
    type: Directory
  {{- else }}
  {{- fail (printf "spireSocket.source must be csi or hostPath, not %q" .Values.spireSocket.source) }}
  {{- end }}
{{- if include "steeple.nodeAgent" . }}
- name: spire-agent-admin
  hostPath:
    path: {{ .Values.nodeAgent.adminSocketHostPath }}
    type: Directory
{{- end }}
{{- if and .Values.vault.enabled .Values.vault.caSecret }}
- name: vault-ca
  secret:
    secretName: {{ .Values.vault.caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level scheduling and metadata both modes share. */}}
{{- define "steeple.podScheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "steeple.podMetadata" -}}
annotations:
  checksum/config: {{ include "steeple.configToml" . | sha256sum }}
  {{- if and .Values.admin.enabled .Values.admin.prometheusAnnotations }}
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .Values.admin.port | quote }}
  prometheus.io/path: /metrics
  {{- end }}
  {{- if eq .Values.mode "sidecar" }}
  checksum/envoy: {{ include "steeple.envoyBootstrap" . | sha256sum }}
  {{- end }}
  {{- with .Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
labels:
  {{- include "steeple.selectorLabels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
