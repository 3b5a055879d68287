{{/*
apitoken-operator.labels: the object's app.kubernetes.io/name (as
config/ sets it) and the labels Helm charts carry. Called with
(dict "root" $ "name" "apitoken-operator"); name may be empty.
*/}}
{{- define "apitoken-operator.labels" -}}
{{- $root := .root -}}
{{- $labels := dict
  "app.kubernetes.io/instance" $root.Release.Name
  "app.kubernetes.io/managed-by" $root.Release.Service
  "app.kubernetes.io/part-of" "apitoken-operator"
  "app.kubernetes.io/version" $root.Chart.AppVersion
  "helm.sh/chart" (printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_") -}}
{{- with .name }}{{ $_ := set $labels "app.kubernetes.io/name" . }}{{ end -}}
{{- toYaml (merge $labels $root.Values.commonLabels) -}}
{{- end }}

{{/*
apitoken-operator.podLabels: a pod template's labels: its
app.kubernetes.io/name (the Deployment's selector, which nothing
overrides), commonLabels, then the component's podLabels. Called with
(dict "root" $ "name" NAME "podLabels" MAP).
*/}}
{{- define "apitoken-operator.podLabels" -}}
{{- $labels := merge (dict "app.kubernetes.io/name" .name) (.podLabels | default dict) .root.Values.commonLabels -}}
{{- toYaml $labels -}}
{{- end }}

{{/*
apitoken-operator.namespace: where the chart's namespaced objects go:
namespaceOverride, or the release's namespace.
*/}}
{{- define "apitoken-operator.namespace" -}}
{{ .Values.namespaceOverride | default .Release.Namespace }}
{{- end }}

{{/* apitoken-operator.operatorServiceAccount: the operator's ServiceAccount. */}}
{{- define "apitoken-operator.operatorServiceAccount" -}}
{{ .Values.operator.serviceAccount.name | default "apitoken-operator" }}
{{- end }}

{{/* apitoken-operator.authServiceAccount: the auth-only replicas' ServiceAccount. */}}
{{- define "apitoken-operator.authServiceAccount" -}}
{{ .Values.auth.serviceAccount.name | default "apitoken-auth" }}
{{- end }}

{{/*
apitoken-operator.image: repository:tag, the tag defaulting to appVersion,
and @digest when image.digest is set (the runtime then pulls by digest).
*/}}
{{- define "apitoken-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{ with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/*
apitoken-operator.serviceAccount renders a ServiceAccount of the chart
when its create is true. Called with (dict "root" $ "name" NAME "sa"
VALUES).
*/}}
{{- define "apitoken-operator.serviceAccount" -}}
{{- if .sa.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  namespace: {{ include "apitoken-operator.namespace" .root }}
  labels:
    {{- include "apitoken-operator.labels" (dict "root" .root) | nindent 4 }}
  {{- with .sa.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- if not .sa.automount }}
automountServiceAccountToken: false
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
apitoken-operator.probe renders a probe: the chart's handler, then the
timings of VALUES (initialDelaySeconds, periodSeconds, timeoutSeconds,
failureThreshold, successThreshold). Called with (dict "handler" MAP
"timings" VALUES).
*/}}
{{- define "apitoken-operator.probe" -}}
{{- toYaml (merge (deepCopy (.timings | default dict)) .handler) -}}
{{- end }}

{{/* apitoken-operator.saltSecret: the name of the salt Secret. */}}
{{- define "apitoken-operator.saltSecret" -}}
{{ .Values.salt.existingSecret | default "apitoken-operator-salt" }}
{{- end }}

{{/* apitoken-operator.issuerRef: the issuer of cert-manager certificates. */}}
{{- define "apitoken-operator.issuerRef" -}}
{{- if .Values.certManager.issuerRef }}
{{- toYaml .Values.certManager.issuerRef }}
{{- else -}}
kind: Issuer
name: apitoken-operator-selfsigned
{{- end }}
{{- end }}

{{/*
apitoken-operator.authDNSNames: the names the auth endpoint's certificate
is valid for: its Service, and the usage Service the auth replicas report
to (--report-usage-to is checked against it), then auth.tls.dnsNames.
*/}}
{{- define "apitoken-operator.authDNSNames" -}}
{{- $ns := include "apitoken-operator.namespace" . -}}
- apitoken-operator-auth.{{ $ns }}.svc
- apitoken-operator-auth.{{ $ns }}.svc.cluster.local
- apitoken-operator-usage.{{ $ns }}.svc
- apitoken-operator-usage.{{ $ns }}.svc.cluster.local
{{- range .Values.auth.tls.dnsNames }}
- {{ . }}
{{- end }}
{{- end }}

{{/*
apitoken-operator.authIPAddresses: the IP SANs of the auth endpoint's
certificate: auth.tls.ipAddresses, then auth.service.clusterIP unless
listed already. Empty: none.
*/}}
{{- define "apitoken-operator.authIPAddresses" -}}
{{- $ips := .Values.auth.tls.ipAddresses | default list -}}
{{- with .Values.auth.service.clusterIP -}}
{{- if not (has . $ips) }}{{ $ips = append $ips . }}{{ end -}}
{{- end -}}
{{- range $ips }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* apitoken-operator.webhookDNSNames: the webhook Service's names. */}}
{{- define "apitoken-operator.webhookDNSNames" -}}
- apitoken-operator-webhook.{{ include "apitoken-operator.namespace" . }}.svc
- apitoken-operator-webhook.{{ include "apitoken-operator.namespace" . }}.svc.cluster.local
{{- end }}

{{/*
apitoken-operator.generatedTLS returns, as YAML, the certificate of the
Secret named .secretName for source helm: tls.crt, tls.key, ca.crt,
notAfter and names. Called with (dict "root" $ "secretName" NAME
"dnsNames" LIST "ipAddresses" LIST), ipAddresses optional.

Computed once per rendering (kept in .Values), so that the Secret, the
webhook configurations' caBundle and the pods' checksum agree. The
Secret in the cluster (lookup; nothing under helm template) is kept
until renewBeforeDays before its not-after annotation, or until the
names it is valid for (its names annotation) are no longer the ones
asked for; then a new CA and certificate are made, and ca.crt holds the new CA and the previous one,
so that the replicas still serving the old certificate stay trusted
while they roll.
*/}}
{{- define "apitoken-operator.generatedTLS" -}}
{{- $root := .root -}}
{{- if not (hasKey $root.Values "apitokenGeneratedTLS") -}}
{{- $_ := set $root.Values "apitokenGeneratedTLS" dict -}}
{{- end -}}
{{- $memo := $root.Values.apitokenGeneratedTLS -}}
{{- if not (hasKey $memo .secretName) -}}
{{- $cfg := $root.Values.selfSignedCertificates -}}
{{- $now := now | unixEpoch | int64 -}}
{{- $renewBefore := mul (int64 $cfg.renewBeforeDays) 86400 -}}
{{- $ips := .ipAddresses | default list -}}
{{- $namesRecord := join "," (concat .dnsNames $ips) -}}
{{- $existing := lookup "v1" "Secret" (include "apitoken-operator.namespace" $root) .secretName -}}
{{- $notAfterAnnotation := "" -}}
{{- $namesAnnotation := "" -}}
{{- if and $existing $existing.metadata.annotations -}}
{{- $notAfterAnnotation = index $existing.metadata.annotations "tokens.apitoken.dev/not-after" | default "" -}}
{{- $namesAnnotation = index $existing.metadata.annotations "tokens.apitoken.dev/names" | default "" -}}
{{- end -}}
{{- $keep := false -}}
{{- if and $notAfterAnnotation (eq $namesAnnotation $namesRecord) $existing.data (index $existing.data "tls.crt") (index $existing.data "tls.key") (index $existing.data "ca.crt") -}}
{{- $notAfter := toDate "2006-01-02T15:04:05Z07:00" $notAfterAnnotation | unixEpoch | int64 -}}
{{- $keep = gt (sub $notAfter $now) $renewBefore -}}
{{- end -}}
{{- if $keep -}}
{{- $_ := set $memo .secretName (dict "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) "ca" (index $existing.data "ca.crt" | b64dec) "notAfter" $notAfterAnnotation "names" $namesRecord) -}}
{{- else -}}
{{- $days := int $cfg.validityDays -}}
{{- $ca := genCA (printf "%s-ca" .secretName) $days -}}
{{- $names := .dnsNames -}}
{{- $cert := genSignedCert (first $names) $ips $names $days $ca -}}
{{- $bundle := $ca.Cert -}}
{{- if and $existing $existing.data (index $existing.data "ca.crt") -}}
{{- $previous := regexFind "(?s)-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----" (index $existing.data "ca.crt" | b64dec) -}}
{{- if $previous -}}
{{- $bundle = printf "%s\n%s\n" (trimSuffix "\n" $ca.Cert) $previous -}}
{{- end -}}
{{- end -}}
{{- $notAfter := dateInZone "2006-01-02T15:04:05Z" (dateModify (printf "+%dh" (mul $days 24)) now) "UTC" -}}
{{- $_ := set $memo .secretName (dict "crt" $cert.Cert "key" $cert.Key "ca" $bundle "notAfter" $notAfter "names" $namesRecord) -}}
{{- end -}}
{{- end -}}
{{- toYaml (index $memo .secretName) -}}
{{- end }}

{{/* apitoken-operator.webhookCABundle: the caBundle for source helm or secret (base64). */}}
{{- define "apitoken-operator.webhookCABundle" -}}
{{- $c := .Values.webhook.certificate -}}
{{- if eq $c.source "helm" -}}
{{- (include "apitoken-operator.generatedTLS" (dict "root" . "secretName" $c.secretName "dnsNames" (include "apitoken-operator.webhookDNSNames" . | fromYamlArray)) | fromYaml).ca | b64enc -}}
{{- else -}}
{{- $c.caBundle -}}
{{- end -}}
{{- end }}

{{/*
apitoken-operator.certChecksum: a checksum of the certificates Helm
generates (source helm), for the pods' annotations, so that new
certificates roll the pods with the new caBundle; empty otherwise (cert-
manager's renewals and your Secret's are reloaded by the running pods).
*/}}
{{- define "apitoken-operator.certChecksum" -}}
{{- $parts := list -}}
{{- if eq .Values.webhook.certificate.source "helm" -}}
{{- $parts = append $parts (include "apitoken-operator.generatedTLS" (dict "root" . "secretName" .Values.webhook.certificate.secretName "dnsNames" (include "apitoken-operator.webhookDNSNames" . | fromYamlArray))) -}}
{{- end -}}
{{- if eq .Values.auth.tls.source "helm" -}}
{{- $parts = append $parts (include "apitoken-operator.generatedTLS" (dict "root" . "secretName" .Values.auth.tls.secretName "dnsNames" (include "apitoken-operator.authDNSNames" . | fromYamlArray) "ipAddresses" (include "apitoken-operator.authIPAddresses" . | fromYamlArray))) -}}
{{- end -}}
{{- if $parts -}}
{{- join "\n" $parts | sha256sum -}}
{{- end -}}
{{- end }}

{{/*
apitoken-operator.validate fails on values that cannot work, and on a
second release in a cluster that has one.
*/}}
{{- define "apitoken-operator.validate" -}}
{{- if or .Values.fullnameOverride .Values.nameOverride -}}
{{- fail "fullnameOverride and nameOverride are not supported: the objects' names are fixed (Services apitoken-operator-auth, -usage, -webhook, -metrics, Deployments apitoken-operator and apitoken-auth, the ClusterRoles, the webhook configurations), as the alerts, the kubectl plugin and the docs name them, and a cluster runs one release (the CRD, the webhooks and the Secret policy are cluster-wide, and two operators would both reconcile every ApiToken). Leave them empty; namespaceOverride chooses the namespace" -}}
{{- end -}}
{{- with lookup "rbac.authorization.k8s.io/v1" "ClusterRole" "" "apitoken-operator-manager" -}}
{{- $annotations := .metadata.annotations | default dict -}}
{{- $name := index $annotations "meta.helm.sh/release-name" | default "" -}}
{{- $namespace := index $annotations "meta.helm.sh/release-namespace" | default "" -}}
{{- if and $name (or (ne $name $.Release.Name) (ne $namespace $.Release.Namespace)) -}}
{{- fail (printf "apitoken-operator is installed in this cluster already, by release %s in namespace %s: a cluster runs one release (the CRD, the webhooks, the ClusterRoles and the Secret policy are cluster-wide, and two operators would both reconcile every ApiToken). Upgrade that release instead (helm upgrade %s -n %s), or uninstall it first" $name $namespace $name $namespace) -}}
{{- end -}}
{{- end -}}
{{- $sources := list "certManager" "helm" "secret" -}}
{{- if not (has .Values.webhook.certificate.source $sources) -}}
{{- fail (printf "webhook.certificate.source must be one of certManager, helm, secret, not %q" .Values.webhook.certificate.source) -}}
{{- end -}}
{{- if not (has .Values.auth.tls.source $sources) -}}
{{- fail (printf "auth.tls.source must be one of certManager, helm, secret, not %q" .Values.auth.tls.source) -}}
{{- end -}}
{{- if and (eq .Values.webhook.certificate.source "secret") (not .Values.webhook.certificate.caBundle) -}}
{{- fail "webhook.certificate.source secret needs webhook.certificate.caBundle: the base64 PEM CA that signed the Secret's certificate" -}}
{{- end -}}
{{- $ip := "^([0-9]{1,3}[.]){3}[0-9]{1,3}$|^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$" -}}
{{- range (include "apitoken-operator.authIPAddresses" . | fromYamlArray) -}}
{{- if not (regexMatch $ip .) -}}
{{- fail (printf "auth.tls.ipAddresses and auth.service.clusterIP must be IP addresses, not %q" .) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.apiServerCIDRs) -}}
{{- fail "networkPolicy.enabled needs networkPolicy.apiServerCIDRs: the API server's addresses, which call the webhooks" -}}
{{- end -}}
{{- end }}
