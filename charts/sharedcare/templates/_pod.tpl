{{/*
Pieces of a service's pod shared by its Deployment and its migration Job.
Each takes (dict "root" $ "cfg" <serviceConfig map> "migrate" <bool>).
*/}}

{{/* Whether the pod mounts the auth Secret (the services with keys in it: all but a migration Job of generated secrets). */}}
{{- define "sharedcare.mountsAuth" -}}
{{- if and (include "sharedcare.authItems" .cfg) (or (not .migrate) .root.Values.auth.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "sharedcare.podEnv" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
- name: SHAREDCARE_CONFIG_FILE
  value: {{ printf "%s/%s.toml" (include "sharedcare.configDir" $root) $cfg.name | quote }}
{{- if eq $root.Values.storage.backend "postgres" }}
# The database URL is a secret: a file mounted from storage.postgres.existingSecret.
- name: SHAREDCARE_DATABASE__URL__FILE
  value: {{ printf "%s/url" (include "sharedcare.databaseDir" $root) | quote }}
- name: SHAREDCARE_DATABASE__BACKEND
  value: "postgres"
{{- end }}
{{- if and .migrate (has $cfg.name (splitList " " (include "sharedcare.clientServices" $root))) (not (include "sharedcare.mountsAuth" .)) }}
# {{ $cfg.name }}'s config demands a client secret, but `migrate` calls no other
# service, and the generated auth Secret does not exist yet before install.
- name: SHAREDCARE_AUTH__CLIENT_SECRET__VALUE
  value: "unused: the migrate subcommand calls no other service"
{{- end }}
{{- if $root.Values.metrics.enabled }}
# Prometheus text at GET {{ $root.Values.metrics.path }} on its own port (metrics.port).
- name: SHAREDCARE_TELEMETRY__METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int $root.Values.metrics.port) | quote }}
{{- end }}
{{- include "sharedcare.otelEnv" . }}
{{- with $cfg.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The standard OpenTelemetry variables (otel.*), for a service's pods. The pod
name comes from the downward API and is expanded into
OTEL_RESOURCE_ATTRIBUTES by the kubelet ($(VAR) needs VAR defined first).
*/}}
{{- define "sharedcare.otelEnv" -}}
{{- $root := .root -}}
{{- $otel := $root.Values.otel -}}
{{- if $otel.enabled }}
# Traces by the standard OpenTelemetry variables (otel.*).
- name: OTEL_SERVICE_NAME
  value: {{ printf "sharedcare-%s" .cfg.name | quote }}
- name: OTEL_TRACES_EXPORTER
  value: "otlp"
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $otel.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $otel.sampler | quote }}
{{- with $otel.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- $attrs := list "service.namespace=sharedcare" (printf "service.version=%s" (include "sharedcare.version" $root)) (printf "k8s.namespace.name=%s" $root.Release.Namespace) (printf "k8s.deployment.name=%s" .cfg.fullname) "k8s.pod.name=$(K8S_POD_NAME)" -}}
{{- with $otel.environment }}
{{- $attrs = append $attrs (printf "deployment.environment.name=%s" .) -}}
{{- end }}
{{- range $key, $value := $otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key $value) -}}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end }}
{{- end -}}

{{- define "sharedcare.podVolumeMounts" -}}
- name: config
  mountPath: {{ include "sharedcare.configDir" .root }}
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .root.Values.storage.dataDir }}
{{- if eq .root.Values.storage.backend "postgres" }}
- name: database
  mountPath: {{ include "sharedcare.databaseDir" .root }}
  readOnly: true
{{- end }}
{{- if include "sharedcare.mountsAuth" . }}
- name: auth
  mountPath: {{ include "sharedcare.authDir" .root }}
  readOnly: true
{{- end }}
{{- if eq .cfg.name "records" }}
- name: classification
  mountPath: {{ include "sharedcare.classificationDir" .root }}
  readOnly: true
{{- end }}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: {{ .root.Values.tls.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "sharedcare.podVolumes" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
- name: config
  configMap:
    name: {{ ternary (include "sharedcare.resourceName" (dict "root" $root "suffix" (printf "%s-migrate" $cfg.name))) $cfg.fullname .migrate }}
{{- if eq $cfg.name "records" }}
# records' classification map (records.classification_map names the file).
- name: classification
  configMap:
    name: {{ include "sharedcare.resourceName" (dict "root" $root "suffix" (ternary "records-migrate-classification" "records-classification" .migrate)) }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if and (eq $root.Values.storage.backend "sqlite") $root.Values.storage.sqlite.persistence.enabled (not .migrate) }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "sharedcare.resourceName" (dict "root" $root "suffix" (printf "%s-data" $cfg.name)) }}
{{- else }}
- name: data
  emptyDir: {}
{{- end }}
{{- if eq $root.Values.storage.backend "postgres" }}
- name: database
  secret:
    secretName: {{ $root.Values.storage.postgres.existingSecret }}
    # 0440: readable by the pod's group (fsGroup) only.
    defaultMode: 288
    items:
      - key: {{ $root.Values.storage.postgres.key }}
        path: url
{{- end }}
{{- if include "sharedcare.mountsAuth" . }}
- name: auth
  secret:
    secretName: {{ include "sharedcare.authSecretName" $root }}
    # 0440: readable by the pod's group (fsGroup) only.
    defaultMode: 288
    # Only the keys this service needs.
    items:
      {{- range $key, $path := include "sharedcare.authItems" $cfg | fromYaml }}
      - key: {{ $key }}
        path: {{ $path }}
      {{- end }}
{{- end }}
{{- if $root.Values.tls.enabled }}
# The service's certificate, key and CA: an existing Secret in the
# kubernetes.io/tls layout (e.g. a cert-manager Certificate's secretName).
# Mounted without subPath so that a renewal reaches the running pod.
- name: tls
  secret:
    secretName: {{ include "sharedcare.tlsSecretName" (dict "root" $root "svc" $cfg.name) }}
    # 0440: readable by the pod's group (fsGroup) only.
    defaultMode: 288
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{/*
What a probe does. Plaintext: the kubelet's native gRPC probe asks the
service's health name. With TLS the kubelet cannot (its gRPC probe speaks no
TLS, let alone presents a client certificate), so the probe is a TCP
connect to the gRPC port: it shows the server is up and accepting, not that
it reports SERVING. A terminating pod leaves the Service's endpoints
anyway, so the drain still works; `helm test` checks health over mTLS.
Call with (dict "root" $ "port" <int> "health" <health name>).
*/}}
{{- define "sharedcare.probeAction" -}}
{{- if .root.Values.tls.enabled -}}
tcpSocket:
  port: {{ .port }}
{{- else -}}
grpc:
  port: {{ .port }}
  service: {{ .health }}
{{- end -}}
{{- end -}}

{{/* Scheduling and pod-level settings shared by Deployment and Job pods. */}}
{{- define "sharedcare.podScheduling" -}}
{{- $cfg := .cfg -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $cfg.podSecurityContext | nindent 2 }}
{{- with $cfg.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $cfg.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $cfg.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $cfg.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
