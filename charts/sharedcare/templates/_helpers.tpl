{{/*
Names, labels and the per-service settings every template shares.
*/}}

{{/* The services the chart knows, in dependency order. */}}
{{- define "sharedcare.serviceNames" -}}
identity consent records audit
{{- end -}}

{{/* Chart name, or nameOverride. */}}
{{- define "sharedcare.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name, at most 63 characters (DNS label limit): the
release name, followed by the chart name unless the release name holds it.
*/}}
{{- define "sharedcare.fullname" -}}
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

{{/*
"<fullname>-<suffix>" within 63 characters: the fullname is cut, never the
suffix, so two services never collide on a long release name.
Call with (dict "root" $ "suffix" "identity").
*/}}
{{- define "sharedcare.resourceName" -}}
{{- $room := sub 62 (len .suffix) | int -}}
{{- printf "%s-%s" (include "sharedcare.fullname" .root | trunc $room | trimSuffix "-") .suffix -}}
{{- end -}}

{{/* Name of a service's resources. Call with (dict "root" $ "svc" "identity"). */}}
{{- define "sharedcare.componentName" -}}
{{- include "sharedcare.resourceName" (dict "root" .root "suffix" .svc) -}}
{{- end -}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "sharedcare.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The application version: the image tag, or the chart's appVersion. */}}
{{- define "sharedcare.version" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* Labels on every resource. Call with (dict "root" $ "component" "identity"). */}}
{{- define "sharedcare.labels" -}}
helm.sh/chart: {{ include "sharedcare.chart" .root }}
{{ include "sharedcare.selectorLabels" . }}
app.kubernetes.io/version: {{ include "sharedcare.version" .root | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: sharedcare
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with include "sharedcare.extraLabels" .root.Values.commonLabels }}
{{ . }}
{{- end }}
{{- end -}}

{{/*
User-given labels (commonLabels, podLabels) as YAML, without the standard
keys the chart sets itself (a duplicate key would break the manifest).
*/}}
{{- define "sharedcare.extraLabels" -}}
{{- $extra := omit (. | default dict) "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" "app.kubernetes.io/version" "app.kubernetes.io/part-of" "app.kubernetes.io/managed-by" -}}
{{- if $extra -}}
{{- toYaml $extra -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels: name + instance (+ component). Selectors are immutable, so
nothing that changes between releases (like the version) belongs here.
*/}}
{{- define "sharedcare.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sharedcare.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
The image reference: repository:tag, or repository@digest when pinned.
*/}}
{{- define "sharedcare.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "sharedcare.version" .) -}}
{{- end -}}
{{- end -}}

{{/*
Deep-merges map .src into map .dst in place. Unlike sprig's merge, a false,
0 or "" in .src still wins (so a service can switch off what defaults switch
on). Maps merge key by key; lists and scalars replace.
*/}}
{{- define "sharedcare.mergeInto" -}}
{{- $dst := .dst -}}
{{- range $key, $value := .src -}}
{{- $current := get $dst $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- include "sharedcare.mergeInto" (dict "dst" $current "src" $value) -}}
{{- else -}}
{{- $_ := set $dst $key (deepCopy $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A service's effective settings as YAML: `defaults` with services.<svc> merged
over them, plus `name` (the service) and `fullname` (its resource name).
Call with (dict "root" $ "svc" "identity") and read with fromYaml.
*/}}
{{- define "sharedcare.serviceConfig" -}}
{{- $cfg := deepCopy .root.Values.defaults -}}
{{- include "sharedcare.mergeInto" (dict "dst" $cfg "src" (get .root.Values.services .svc)) -}}
{{- $_ := set $cfg "name" .svc -}}
{{- $_ := set $cfg "fullname" (include "sharedcare.componentName" .) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The gRPC health service name: sharedcare.<svc>.v1.<Svc>Service. */}}
{{- define "sharedcare.grpcServiceName" -}}
{{- printf "sharedcare.%s.v1.%sService" . (title .) -}}
{{- end -}}

{{/*
A service's in-cluster URL: https:// with tls.enabled, else http://.
Call with (dict "root" $ "svc" "identity").
*/}}
{{- define "sharedcare.serviceUrl" -}}
{{- $port := get (get .root.Values.services .svc) "port" | int -}}
{{- $scheme := ternary "https" "http" (.root.Values.tls.enabled | default false) -}}
{{- printf "%s://%s:%d" $scheme (include "sharedcare.componentName" .) $port -}}
{{- end -}}

{{/* identity's URL as the other services see it. */}}
{{- define "sharedcare.identityUrl" -}}
{{- .Values.auth.identityUrl | default (include "sharedcare.serviceUrl" (dict "root" . "svc" "identity")) -}}
{{- end -}}

{{/* Name of the ServiceAccount a service runs as. Takes a serviceConfig map. */}}
{{- define "sharedcare.serviceAccountName" -}}
{{- if .serviceAccount.create -}}
{{- default .fullname .serviceAccount.name -}}
{{- else -}}
{{- default "default" .serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding identity's, consent's and records' secrets. */}}
{{- define "sharedcare.authSecretName" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- include "sharedcare.resourceName" (dict "root" . "suffix" "auth") -}}
{{- end -}}
{{- end -}}

{{/* Where secret files, the config file and records' classification map are mounted. */}}
{{- define "sharedcare.configDir" -}}/etc/sharedcare/config{{- end -}}
{{- define "sharedcare.classificationDir" -}}/etc/sharedcare/classification{{- end -}}
{{- define "sharedcare.authDir" -}}/etc/sharedcare/auth{{- end -}}
{{- define "sharedcare.databaseDir" -}}/etc/sharedcare/database{{- end -}}

{{/*
The Secret holding a service's certificate, key and CA (kubernetes.io/tls
layout: tls.crt, tls.key, ca.crt). Call with (dict "root" $ "svc" "identity").
*/}}
{{- define "sharedcare.tlsSecretName" -}}
{{- $given := get (.root.Values.tls.existingSecrets | default dict) .svc | default "" -}}
{{- $given | default (include "sharedcare.resourceName" (dict "root" .root "suffix" (printf "%s-tls" .svc))) -}}
{{- end -}}

{{/*
The Secret keys each service mounts from the auth Secret (dict key -> file).
Takes a serviceConfig map: records' previous keys are mounted only with
services.records.previousKeyEncryptionKeys (a missing key would stop the pod
from starting, so the Secret need not hold it otherwise).
*/}}
{{- define "sharedcare.authItems" -}}
{{- if eq .name "identity" -}}
signing-key.pem: signing-key.pem
bootstrap.toml: bootstrap.toml
identity-key-encryption-key: identity-key-encryption-key
nhs-index-key: nhs-index-key
{{- else if eq .name "consent" -}}
consent-client-secret: consent-client-secret
{{- else if eq .name "records" -}}
records-client-secret: records-client-secret
records-key-encryption-key: records-key-encryption-key
{{- if .previousKeyEncryptionKeys }}
records-previous-key-encryption-keys: records-previous-key-encryption-keys
{{- end }}
{{- else if eq .name "audit" -}}
audit-log-key.pem: audit-log-key.pem
{{- end -}}
{{- end -}}

{{/*
The services that call others as themselves: each has an [auth] client_id
(services.<svc>.clientId, a `service` principal in the bootstrap file) and
its secret in the auth Secret as "<svc>-client-secret".
*/}}
{{- define "sharedcare.clientServices" -}}
consent records
{{- end -}}

{{/*
records' classification map (TOML): services.records.classificationMap, or
the chart's copy of the default compiled into records
(files/classification.toml, kept equal to services/records/classification.toml
by the chart tests). Takes the root context.
*/}}
{{- define "sharedcare.classificationMap" -}}
{{- .Values.services.records.classificationMap | default (.Files.Get "files/classification.toml") -}}
{{- end -}}

{{/* The services that are switched on, space separated. */}}
{{- define "sharedcare.enabledServices" -}}
{{- $out := list -}}
{{- range $svc := splitList " " (include "sharedcare.serviceNames" .) -}}
{{- if (get $.Values.services $svc).enabled -}}
{{- $out = append $out $svc -}}
{{- end -}}
{{- end -}}
{{- join " " $out -}}
{{- end -}}

{{/* An IntOrString value: numbers print as integers, percentages quoted. */}}
{{- define "sharedcare.intOrPercent" -}}
{{- if kindIs "string" . -}}
{{- . | quote -}}
{{- else -}}
{{- . | int -}}
{{- end -}}
{{- end -}}

{{/*
Egress rules every sharedcare pod needs, as a YAML list: DNS, PostgreSQL
(postgres backend), the OTLP collector (when the service exports:
telemetry.otlpEndpoint or otel.enabled) and
networkPolicy.extraEgress. Call with (dict "root" $ "cfg" <serviceConfig map>).
*/}}
{{- define "sharedcare.commonEgress" -}}
{{- $np := .root.Values.networkPolicy -}}
{{- $rules := list -}}
{{- if $np.dns.enabled -}}
{{- $rule := dict "ports" (list (dict "port" 53 "protocol" "UDP") (dict "port" 53 "protocol" "TCP")) -}}
{{- with $np.dns.to -}}{{- $_ := set $rule "to" . -}}{{- end -}}
{{- $rules = append $rules $rule -}}
{{- end -}}
{{- if eq .root.Values.storage.backend "postgres" -}}
{{- $rule := dict "ports" (list (dict "port" ($np.postgres.port | int) "protocol" "TCP")) -}}
{{- with $np.postgres.to -}}{{- $_ := set $rule "to" . -}}{{- end -}}
{{- $rules = append $rules $rule -}}
{{- end -}}
{{- if or .cfg.telemetry.otlpEndpoint .root.Values.otel.enabled -}}
{{- $rule := dict "ports" (list (dict "port" ($np.otlp.port | int) "protocol" "TCP")) -}}
{{- with $np.otlp.to -}}{{- $_ := set $rule "to" . -}}{{- end -}}
{{- $rules = append $rules $rule -}}
{{- end -}}
{{- toYaml (concat $rules $np.extraEgress) -}}
{{- end -}}

{{/* The port of an http(s) URL, or "" when it names none. Call with the URL. */}}
{{- define "sharedcare.urlPort" -}}
{{- $host := (urlParse .).host -}}
{{- if regexMatch ":[0-9]+$" $host -}}
{{- regexFind "[0-9]+$" $host -}}
{{- end -}}
{{- end -}}

{{/* Namespace of an optional monitoring object: its own, or the release's. Call with (dict "root" $ "namespace" <value>). */}}
{{- define "sharedcare.monitoringNamespace" -}}
{{- .namespace | default .root.Release.Namespace -}}
{{- end -}}
