{{/*
A service's TOML config file (SHAREDCARE_CONFIG_FILE). It holds no secret:
secrets are files mounted from Secrets, and the config names their paths.
The database URL file is passed by SHAREDCARE_DATABASE__URL__FILE instead.

Call with (dict "root" $ "cfg" <serviceConfig map> "migrate" <bool>). With
migrate true it is the migration hook Job's config: secret paths appear only
when they come from an existing Secret (the only Secrets a pre-install hook
can mount).
*/}}
{{- define "sharedcare.configToml" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
{{- $svc := $cfg.name -}}
{{- $url := dict -}}
{{- range $callee := list "consent" "audit" -}}
{{- $_ := set $url $callee (include "sharedcare.serviceUrl" (dict "root" $root "svc" $callee)) -}}
{{- end -}}
{{- $authMounted := or (not .migrate) (ne $root.Values.auth.existingSecret "") -}}
{{- $authDir := include "sharedcare.authDir" $root -}}
# sharedcare-{{ $svc }} configuration, rendered by the sharedcare chart.
[server]
listen = {{ printf "0.0.0.0:%d" (int $cfg.port) | toJson }}
max_message_bytes = {{ $cfg.server.maxMessageBytes | int64 }}
concurrency_limit = {{ $cfg.server.concurrencyLimit | int64 }}
client_requests_per_second = {{ $cfg.server.clientRequestsPerSecond | int64 }}
client_burst = {{ $cfg.server.clientBurst | int64 }}
request_timeout_ms = {{ $cfg.server.requestTimeoutMs | int64 }}
shutdown_drain_ms = {{ $cfg.server.shutdownDrainMs | int64 }}

[telemetry]
log_level = {{ $cfg.telemetry.logLevel | toJson }}
log_format = {{ $cfg.telemetry.logFormat | toJson }}
{{- with $cfg.telemetry.otlpEndpoint }}
otlp_endpoint = {{ . | toJson }}
{{- end }}

[database]
data_dir = {{ $root.Values.storage.dataDir | toJson }}
max_connections = {{ $cfg.database.maxConnections | int64 }}

[auth]
issuer = {{ $root.Values.auth.issuer | toJson }}
audience = {{ $root.Values.auth.audience | toJson }}
identity_url = {{ include "sharedcare.identityUrl" $root | toJson }}
jwks_min_refresh_ms = {{ $root.Values.auth.jwksMinRefreshMs | int64 }}
revocation_refresh_ms = {{ $root.Values.auth.revocationRefreshMs | int64 }}
revocation_max_stale_ms = {{ $root.Values.auth.revocationMaxStaleMs | int64 }}
{{- if has $svc (splitList " " (include "sharedcare.clientServices" $root)) }}
# {{ $svc }} calls the other services as this `service` principal.
client_id = {{ $cfg.clientId | toJson }}
{{- if $authMounted }}

[auth.client_secret]
file = {{ printf "%s/%s-client-secret" $authDir $svc | toJson }}
{{- end }}
{{- end }}
{{- if eq $svc "identity" }}

[identity]
token_ttl_secs = {{ $cfg.tokenTtlSecs | int64 }}
consent_url = {{ $cfg.consentUrl | default $url.consent | toJson }}
audit_url = {{ $cfg.auditUrl | default $url.audit | toJson }}
call_timeout_ms = {{ $cfg.callTimeoutMs | int64 }}
{{- if $authMounted }}
bootstrap_file = {{ printf "%s/bootstrap.toml" $authDir | toJson }}

[identity.signing_key]
file = {{ printf "%s/signing-key.pem" $authDir | toJson }}

# identity's own key, separate from records': rotating records' key leaves
# identity's data alone.
[identity.key_encryption_key]
file = {{ printf "%s/identity-key-encryption-key" $authDir | toJson }}

[identity.nhs_index_key]
file = {{ printf "%s/nhs-index-key" $authDir | toJson }}
{{- end }}
{{- with $cfg.roles }}

# Staff role -> capabilities (services.identity.roles), merged over identity's
# built-in role map role by role.
[identity.roles]
{{- range $role, $capabilities := . }}
{{ $role | toJson }} = {{ $capabilities | default list | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $svc "consent" }}

[consent]
audit_url = {{ $cfg.auditUrl | default $url.audit | toJson }}
call_timeout_ms = {{ $cfg.callTimeoutMs | int64 }}
# Patients whose consent each replica keeps in memory (least recently used
# dropped first): services.consent.cacheMaxPatients.
cache_max_patients = {{ $cfg.cacheMaxPatients | int64 }}

# Break-glass (services.consent.breakGlass); who may use it is the
# break_glass capability of identity's role map.
[consent.break_glass]
grant_minutes = {{ $cfg.breakGlass.grantMinutes | int64 }}
overrides_patient_deny = {{ $cfg.breakGlass.overridesPatientDeny | toJson }}
{{- with $cfg.relationshipCategories }}

# What each care relationship kind lets its organisation see
# (services.consent.relationshipCategories), over consent's built-in map.
[consent.relationship_categories]
{{- range $kind, $categories := . }}
{{ $kind | toJson }} = {{ $categories | default list | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $svc "records" }}

[records]
consent_url = {{ $cfg.consentUrl | default $url.consent | toJson }}
audit_url = {{ $cfg.auditUrl | default $url.audit | toJson }}
max_resource_bytes = {{ $cfg.maxResourceBytes | int64 }}
call_timeout_ms = {{ $cfg.callTimeoutMs | int64 }}
outbox_retry_ms = {{ $cfg.outboxRetryMs | int64 }}
# Mounted from a ConfigMap: services.records.classificationMap, or the
# default compiled into records.
classification_map = {{ printf "%s/classification.toml" (include "sharedcare.classificationDir" $root) | toJson }}
{{- if $authMounted }}
{{- if $cfg.previousKeyEncryptionKeys }}
# Earlier key-encryption keys (one base64 key per line), kept during a
# rotation so that data sealed with them stays readable until
# `sharedcare records rewrap` has moved it to the current key.
previous_key_encryption_keys_file = {{ printf "%s/records-previous-key-encryption-keys" $authDir | toJson }}
{{- end }}

[records.key_encryption_key]
file = {{ printf "%s/records-key-encryption-key" $authDir | toJson }}
{{- end }}
{{- end }}
{{- if eq $svc "audit" }}

[audit]
# Auditors verify tree heads with this name and the key's verifier key
# (`sharedcare audit verifier-key --key-file <key> --log-name <name>`).
log_name = {{ $cfg.logName | default (printf "%s.%s/audit" (include "sharedcare.fullname" $root) $root.Release.Namespace) | toJson }}
tree_head_interval_ms = {{ $cfg.treeHeadIntervalMs | int64 }}
{{- if $authMounted }}

# One key for every replica: all sign the same log.
[audit.signing_key]
file = {{ printf "%s/audit-log-key.pem" $authDir | toJson }}
{{- end }}
{{- end }}
{{- if $root.Values.tls.enabled }}

# Mutual TLS: the files are the service's TLS Secret, checked for a change
# every reload_interval_ms (cert-manager renewals need no restart).
[tls]
enabled = true
cert_file = {{ printf "%s/tls.crt" $root.Values.tls.mountPath | toJson }}
key_file = {{ printf "%s/tls.key" $root.Values.tls.mountPath | toJson }}
ca_file = {{ printf "%s/ca.crt" $root.Values.tls.mountPath | toJson }}
client_auth = {{ $root.Values.tls.clientAuth | toJson }}
reload_interval_ms = {{ $root.Values.tls.reloadIntervalMs | int64 }}
{{- end }}
{{ end -}}
