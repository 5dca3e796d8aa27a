{{/*
Checks on the values that the JSON schema cannot express. Each failure says
what is wrong and what to do instead. Included once, from validate.yaml.
*/}}

{{/*
Paths of values that look like plain-text secrets, one per line.
Call with (dict "path" "" "value" .Values).
*/}}
{{- define "sharedcare.plainSecretPaths" -}}
{{- $path := .path -}}
{{- if kindIs "map" .value -}}
{{- range $key, $value := .value -}}
{{- $here := ternary $key (printf "%s.%s" $path $key) (eq $path "") -}}
{{- $k := lower $key -}}
{{- $secretName := or (eq $k "password") (hasSuffix "password" $k) (hasSuffix "clientsecret" $k) (eq $k "signingkey") (eq $k "keyencryptionkey") (eq $k "databaseurl") (and (eq $k "url") (hasSuffix "postgres" (lower $path))) -}}
{{- if and $secretName (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{ $here }}
{{- end -}}
{{- include "sharedcare.plainSecretPaths" (dict "path" $here "value" $value) -}}
{{- end -}}
{{- else if kindIs "slice" .value -}}
{{- range $i, $value := .value -}}
{{- include "sharedcare.plainSecretPaths" (dict "path" (printf "%s[%d]" $path $i) "value" $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sharedcare.validate" -}}
{{- $values := .Values -}}

{{- /* 1. No secret in plain values. */ -}}
{{- $found := include "sharedcare.plainSecretPaths" (dict "path" "" "value" $values) | trim -}}
{{- if $found -}}
{{- fail (printf "plain-text secret in values (%s): secrets never go in values; put them in a Kubernetes Secret and use storage.postgres.existingSecret (database URL) or auth.existingSecret (signing keys, bootstrap file, client secrets, key-encryption keys)" (splitList "\n" $found | join ", ")) -}}
{{- end -}}

{{- /* 2. Where the auth secrets come from: exactly one source. */ -}}
{{- if and $values.auth.existingSecret $values.auth.generateDevSecrets -}}
{{- fail "auth.existingSecret and auth.generateDevSecrets are both set: with an existing Secret set auth.generateDevSecrets=false" -}}
{{- end -}}
{{- if not (or $values.auth.existingSecret $values.auth.generateDevSecrets) -}}
{{- fail "no auth secrets: set auth.existingSecret (a Secret with signing-key.pem, audit-log-key.pem, bootstrap.toml, records-client-secret, consent-client-secret, identity-key-encryption-key, records-key-encryption-key, nhs-index-key) or, for development only, auth.generateDevSecrets=true" -}}
{{- end -}}
{{- /*
Rotating records' key-encryption key is done in a Secret the operator owns:
the chart cannot know the old key of a generated Secret it is asked to
replace, and a generated (development) Secret has nothing worth rotating.
*/ -}}
{{- if and $values.services.records.previousKeyEncryptionKeys (not $values.auth.existingSecret) -}}
{{- fail "services.records.previousKeyEncryptionKeys=true needs auth.existingSecret: rotate records' key in a Secret you manage, with the new key in records-key-encryption-key and the old one(s) in records-previous-key-encryption-keys (see the chart's README, \"Rotating records' key-encryption key\")" -}}
{{- end -}}

{{- $enabled := splitList " " (include "sharedcare.enabledServices" .) | compact -}}

{{- /* 3. Storage. */ -}}
{{- if eq $values.storage.backend "postgres" -}}
{{- if not $values.storage.postgres.existingSecret -}}
{{- fail "storage.backend=postgres needs storage.postgres.existingSecret: the name of a Secret holding the database URL (key storage.postgres.key)" -}}
{{- end -}}
{{- if and $values.auth.generateDevSecrets (not $values.auth.allowDevSecretsWithPostgres) -}}
{{- fail "auth.generateDevSecrets=true with storage.backend=postgres: generated secrets are for development; use auth.existingSecret (and generateDevSecrets=false), or set auth.allowDevSecretsWithPostgres=true for a throwaway install" -}}
{{- end -}}
{{- else -}}
{{- range $svc := $enabled -}}
{{- $cfg := include "sharedcare.serviceConfig" (dict "root" $ "svc" $svc) | fromYaml -}}
{{- if gt (int $cfg.replicaCount) 1 -}}
{{- fail (printf "services.%s: replicaCount=%d with storage.backend=sqlite: SQLite allows one replica per service; use storage.backend=postgres to scale" $svc (int $cfg.replicaCount)) -}}
{{- end -}}
{{- if $cfg.autoscaling.enabled -}}
{{- fail (printf "services.%s: autoscaling.enabled with storage.backend=sqlite: SQLite allows one replica per service; use storage.backend=postgres to scale" $svc) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* 4. Services that others call. */ -}}
{{- if and (has "records" $enabled) (not $values.services.consent.enabled) (not $values.services.records.consentUrl) -}}
{{- fail "records is enabled but consent is not: enable services.consent or set services.records.consentUrl" -}}
{{- end -}}
{{- if and (has "records" $enabled) (not $values.services.audit.enabled) (not $values.services.records.auditUrl) -}}
{{- fail "records is enabled but audit is not: enable services.audit or set services.records.auditUrl" -}}
{{- end -}}
{{- if and (has "identity" $enabled) (not $values.services.consent.enabled) (not $values.services.identity.consentUrl) -}}
{{- fail "identity is enabled but consent is not: enable services.consent or set services.identity.consentUrl" -}}
{{- end -}}
{{- if and (has "identity" $enabled) (not $values.services.audit.enabled) (not $values.services.identity.auditUrl) -}}
{{- fail "identity is enabled but audit is not: enable services.audit or set services.identity.auditUrl" -}}
{{- end -}}
{{- if and (has "consent" $enabled) (not $values.services.audit.enabled) (not $values.services.consent.auditUrl) -}}
{{- fail "consent is enabled but audit is not: enable services.audit or set services.consent.auditUrl" -}}
{{- end -}}
{{- if and (not $values.services.identity.enabled) (not $values.auth.identityUrl) -}}
{{- range $svc := $enabled -}}
{{- fail (printf "%s is enabled but identity is not: enable services.identity or set auth.identityUrl" $svc) -}}
{{- end -}}
{{- end -}}

{{- /* 5. Per-service settings. */ -}}
{{- range $svc := $enabled -}}
{{- $cfg := include "sharedcare.serviceConfig" (dict "root" $ "svc" $svc) | fromYaml -}}
{{- range $env := $cfg.extraEnv -}}
{{- if and (hasKey $env "value") (regexMatch "(?i)(SECRET|PASSWORD|TOKEN|DATABASE__URL)" $env.name) -}}
{{- fail (printf "services.%s: extraEnv %s has a literal value: secrets never go in values; use valueFrom.secretKeyRef" $svc $env.name) -}}
{{- end -}}
{{- end -}}
{{- if $cfg.autoscaling.enabled -}}
{{- if gt (int $cfg.autoscaling.minReplicas) (int $cfg.autoscaling.maxReplicas) -}}
{{- fail (printf "services.%s: autoscaling.minReplicas is above autoscaling.maxReplicas" $svc) -}}
{{- end -}}
{{- if and (not $cfg.autoscaling.targetCPUUtilizationPercentage) (not $cfg.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- fail (printf "services.%s: autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" $svc) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* 6. Metrics and traces. */ -}}
{{- if $values.metrics.enabled -}}
{{- range $svc := $enabled -}}
{{- $cfg := include "sharedcare.serviceConfig" (dict "root" $ "svc" $svc) | fromYaml -}}
{{- if eq (int $cfg.port) (int $values.metrics.port) -}}
{{- fail (printf "metrics.port=%d is services.%s.port too: the metrics port must differ from every gRPC port" (int $values.metrics.port) $svc) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $values.otel.enabled (not $values.otel.endpoint) -}}
{{- fail "otel.enabled=true needs otel.endpoint: the OTLP collector's URL (OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://otel-collector.observability:4317" -}}
{{- end -}}
{{- /* The NetworkPolicy opens egress on networkPolicy.otlp.port only: an
endpoint on another port would be silently blocked. */ -}}
{{- if $values.networkPolicy.enabled -}}
{{- $endpoints := dict -}}
{{- if $values.otel.enabled -}}{{- $_ := set $endpoints "otel.endpoint" $values.otel.endpoint -}}{{- end -}}
{{- range $svc := $enabled -}}
{{- $cfg := include "sharedcare.serviceConfig" (dict "root" $ "svc" $svc) | fromYaml -}}
{{- with $cfg.telemetry.otlpEndpoint -}}{{- $_ := set $endpoints (printf "services.%s.telemetry.otlpEndpoint" $svc) . -}}{{- end -}}
{{- end -}}
{{- range $key, $url := $endpoints -}}
{{- $port := include "sharedcare.urlPort" $url -}}
{{- if and $port (ne (int $port) (int $values.networkPolicy.otlp.port)) -}}
{{- fail (printf "%s (%s) is on port %s but networkPolicy.otlp.port is %d: the NetworkPolicy would block it; set networkPolicy.otlp.port=%s" $key $url $port (int $values.networkPolicy.otlp.port) $port) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $values.services.consent.clientId $values.services.records.clientId -}}
{{- fail (printf "services.consent.clientId and services.records.clientId are both %q: each service calls the others as its own principal" $values.services.records.clientId) -}}
{{- end -}}
{{- if and (has "records" $enabled) -}}
{{- $cfg := include "sharedcare.serviceConfig" (dict "root" $ "svc" "records") | fromYaml -}}
{{- if ge (int64 $cfg.maxResourceBytes) (int64 $cfg.server.maxMessageBytes) -}}
{{- fail "services.records: maxResourceBytes must be below server.maxMessageBytes" -}}
{{- end -}}
{{- end -}}
{{- end -}}
