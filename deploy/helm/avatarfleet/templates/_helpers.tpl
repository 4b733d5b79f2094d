{{/* Names, labels and shared pieces of the AvatarFleet chart. */}}

{{- define "avatarfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "avatarfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "avatarfleet.labels" -}}
app.kubernetes.io/name: {{ include "avatarfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* selectorLabels takes (list $ "component"). */}}
{{- define "avatarfleet.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "avatarfleet.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "avatarfleet.workerName" -}}
{{- printf "%s-worker" (include "avatarfleet.fullname" .) -}}
{{- end -}}

{{- define "avatarfleet.controlplaneName" -}}
{{- printf "%s-controlplane" (include "avatarfleet.fullname" .) -}}
{{- end -}}

{{/* image takes (list $ .Values.x.image). */}}
{{- define "avatarfleet.image" -}}
{{- $ := index . 0 -}}{{- $img := index . 1 -}}
{{- printf "%s:%s" $img.repository (default $.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "avatarfleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "avatarfleet.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "avatarfleet.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "avatarfleet.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "avatarfleet.tokenKeysSecret" -}}
{{- default (printf "%s-token-keys" (include "avatarfleet.fullname" .)) .Values.tokenKeys.existingSecret -}}
{{- end -}}

{{/* etcdEndpoints: the in-chart members or the external endpoints, comma-separated. */}}
{{- define "avatarfleet.etcdEndpoints" -}}
{{- if .Values.etcd.inChart.enabled -}}
{{- $n := printf "%s-etcd" (include "avatarfleet.fullname" .) -}}
{{- $eps := list -}}
{{- range $i := until 3 -}}
{{- $eps = append $eps (printf "https://%s-%d.%s.%s.svc.%s:2379" $n $i $n $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $eps -}}
{{- else -}}
{{- join "," .Values.etcd.endpoints -}}
{{- end -}}
{{- end -}}

{{- define "avatarfleet.natsURL" -}}
{{- if .Values.nats.inChart.enabled -}}
{{- printf "tls://%s-nats.%s.svc.%s:4222" (include "avatarfleet.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* etcdSecret / natsSecret: where the links' CA and credentials are. */}}
{{- define "avatarfleet.etcdSecret" -}}
{{- if .Values.etcd.inChart.enabled -}}{{ printf "%s-etcd-tls" (include "avatarfleet.fullname" .) }}{{- else -}}{{ .Values.etcd.existingSecret }}{{- end -}}
{{- end -}}

{{- define "avatarfleet.natsSecret" -}}
{{- if .Values.nats.inChart.enabled -}}{{ printf "%s-nats-tls" (include "avatarfleet.fullname" .) }}{{- else -}}{{ .Values.nats.existingSecret }}{{- end -}}
{{- end -}}

{{/*
linkArgs: the etcd, NATS and fleet-TLS flags of one party; takes
(list $ "controlplane"|"worker"). A worker's files are named by its pod name,
$(POD_NAME), which Kubernetes expands from the container's env.
*/}}
{{- define "avatarfleet.linkArgs" -}}
{{- $ := index . 0 -}}{{- $role := index . 1 -}}
{{- $self := ternary "controlplane" "$(POD_NAME)" (eq $role "controlplane") -}}
- --etcd={{ include "avatarfleet.etcdEndpoints" $ }}
- --etcd-prefix={{ $.Values.etcd.prefix }}
- --etcd-ca=/etc/avatarfleet/etcd/ca.crt
{{- if $.Values.etcd.inChart.enabled }}
- --etcd-cert=/etc/avatarfleet/etcd/client.crt
- --etcd-key=/etc/avatarfleet/etcd/client.key
{{- else if eq $role "controlplane" }}
- --etcd-username={{ $.Values.etcd.controlplaneUsername }}
- --etcd-password-file=/etc/avatarfleet/etcd/controlplane-password
{{- else }}
- --etcd-username=avatarfleet-worker-$(POD_NAME)
- --etcd-password-file=/etc/avatarfleet/etcd/$(POD_NAME)-password
{{- end }}
- --nats={{ include "avatarfleet.natsURL" $ }}
- --nats-ca=/etc/avatarfleet/nats/ca.crt
{{- if or $.Values.nats.inChart.enabled (eq $.Values.nats.auth "fleetCert") }}
- --nats-cert=/etc/avatarfleet/fleet/{{ $self }}.crt
- --nats-key=/etc/avatarfleet/fleet/{{ $self }}.key
{{- else if eq $role "controlplane" }}
- --nats-user=controlplane
- --nats-password-file=/etc/avatarfleet/nats/controlplane-password
{{- else }}
- --nats-user=worker/$(POD_NAME)
- --nats-password-file=/etc/avatarfleet/nats/$(POD_NAME)-password
{{- end }}
- --fleet-ca=/etc/avatarfleet/fleet/ca.crt
- --fleet-cert=/etc/avatarfleet/fleet/{{ $self }}.crt
- --fleet-key=/etc/avatarfleet/fleet/{{ $self }}.key
- --log-level={{ $.Values.logLevel }}
- --log-format={{ $.Values.logFormat }}
{{- end -}}

{{/* linkVolumes: the Secrets behind linkArgs' files (mode 0440, group fsGroup). */}}
{{- define "avatarfleet.linkVolumes" -}}
- name: fleet-tls
  secret:
    secretName: {{ .Values.fleetTLS.existingSecret }}
    defaultMode: 0440
- name: etcd
  secret:
    secretName: {{ include "avatarfleet.etcdSecret" . }}
    defaultMode: 0440
- name: nats
  secret:
    secretName: {{ include "avatarfleet.natsSecret" . }}
    defaultMode: 0440
{{- end -}}

{{- define "avatarfleet.linkMounts" -}}
- name: fleet-tls
  mountPath: /etc/avatarfleet/fleet
  readOnly: true
- name: etcd
  mountPath: /etc/avatarfleet/etcd
  readOnly: true
- name: nats
  mountPath: /etc/avatarfleet/nats
  readOnly: true
{{- end -}}
