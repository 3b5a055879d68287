package v1alpha1

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
)

// badCase is a manifest the webhook refuses, with the field path and the
// message its error must carry.
type badCase struct {
	name    string
	mutate  func(*tokensv1alpha1.ApiToken)
	message string
}

func validToken() *tokensv1alpha1.ApiToken {
	return &tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "valid", Namespace: "ns"},
		Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
	}
}

func custom(scopes ...string) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) { a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, scopes }
}

func rotation(grace, renew string) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) {
		a.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: grace, RenewBefore: renew}
	}
}

func both(fs ...func(*tokensv1alpha1.ApiToken)) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) {
		for _, f := range fs {
			f(a)
		}
	}
}

func duration(d string) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) { a.Spec.Duration = d }
}

// badCases are refused on create, by ValidateApiToken alone.
var badCases = []badCase{
	{"missing type", func(a *tokensv1alpha1.ApiToken) { a.Spec.Type = "" }, "spec.type: Required value"},
	{"unknown type", func(a *tokensv1alpha1.ApiToken) { a.Spec.Type = "admin" }, `spec.type: Unsupported value: "admin": supported values: "read-only", "full-access", "custom"`},
	{"scopes on read-only", func(a *tokensv1alpha1.ApiToken) { a.Spec.Scopes = []string{"articles:read"} }, "spec.scopes: Forbidden: scopes are only allowed with type custom; a read-only token grants *:read"},
	{"scopes on full-access", func(a *tokensv1alpha1.ApiToken) {
		a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.FullAccess, []string{"articles:read"}
	}, "spec.scopes: Forbidden: scopes are only allowed with type custom; a full-access token grants *:*"},
	{"malformed idleTimeout", func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "90 days" }, "spec.idleTimeout: Invalid value:"},
	{"custom without scopes", custom(), "spec.scopes: Required value: a custom token must list at least one scope, e.g. articles:read"},
	{"scope without action", custom("articles:read", "users:read", "orders"), `spec.scopes[2]: Invalid value: "orders": must be resource:action, e.g. orders:read`},
	{"scope with empty resource", custom(":read"), `spec.scopes[0]: Invalid value: ":read": resource "" must be parts joined by ':'`},
	{"scope with upper case", custom("Articles:read"), `spec.scopes[0]: Invalid value: "Articles:read": resource "Articles" must be`},
	{"scope with empty action", custom("articles:"), `spec.scopes[0]: Invalid value: "articles:": action "" must be * or a lower-camel word`},
	{"scope with an empty part", custom("api::article.find"), `spec.scopes[0]: Invalid value: "api::article.find": resource "api:" must be parts joined by ':'`},
	{"scope nested too deep", custom("a:b:c:d:e:f:g:h:i:read"), `spec.scopes[0]: Invalid value: "a:b:c:d:e:f:g:h:i:read": resource "a:b:c:d:e:f:g:h:i" must be parts joined by ':' (at most 8)`},
	{"scope with a hyphenated action", custom("articles:find-one"), `spec.scopes[0]: Invalid value: "articles:find-one": action "find-one" must be * or a lower-camel word`},
	{"scope with a space", custom("articles: read"), `spec.scopes[0]: Invalid value: "articles: read": action " read" must be`},
	{"too many scopes", custom(strings.Split(strings.Repeat("a:read,", 65), ",")[:65]...), "spec.scopes: Too many: 65: must have at most 64 items"},
	{"missing duration", duration(""), `spec.duration: Required value: must be "unlimited" or a positive span such as 7d, 30d, 90d or 36h`},
	{"zero duration", duration("0d"), `spec.duration: Invalid value: "0d": must be positive (at least 1s); or "unlimited"`},
	{"negative duration", duration("-7d"), `spec.duration: Invalid value: "-7d": must be a positive span such as 30d, 2160h, 90m or 30s; or "unlimited"`},
	{"weeks", duration("2w"), `spec.duration: Invalid value: "2w": unit "w" must be d, h, m or s, in that order, each at most once`},
	{"milliseconds", duration("500ms"), `spec.duration: Invalid value: "500ms": unit "ms" must be d, h, m or s`},
	{"fraction", duration("1.5h"), `spec.duration: Invalid value: "1.5h": use whole numbers, such as 90m instead of 1.5h`},
	{"units out of order", duration("1h1d"), `spec.duration: Invalid value: "1h1d": unit "d" must be d, h, m or s, in that order`},
	{"overflowing duration", duration("999999d"), `spec.duration: Invalid value: "999999d": too long (at most about 292 years); or "unlimited"`},
	{"capitalised unlimited", duration("Unlimited"), `spec.duration: Invalid value: "Unlimited": must be a positive span`},
	{"renewBefore with unlimited", both(duration("unlimited"), rotation("", "7d")), "spec.rotation.renewBefore: Forbidden: renewBefore needs a finite spec.duration; an unlimited token never expires"},
	{"renewBefore equal to duration", rotation("", "30d"), `spec.rotation.renewBefore: Invalid value: "30d": must be shorter than spec.duration (30d)`},
	{"renewBefore longer than duration", both(duration("7d"), rotation("", "8d")), `spec.rotation.renewBefore: Invalid value: "8d": must be shorter than spec.duration (7d)`},
	{"malformed renewBefore", rotation("", "1week"), `spec.rotation.renewBefore: Invalid value: "1week": unit "w" must be d, h, m or s`},
	{"grace longer than duration", both(duration("1h"), rotation("2h", "")), `spec.rotation.gracePeriod: Invalid value: "2h": must not be longer than spec.duration (1h)`},
	{"zero grace", rotation("0m0s", ""), `spec.rotation.gracePeriod: Invalid value: "0m0s": must be positive (at least 1s)`},
	{"graceUntilNewTokenUsed without a grace", func(a *tokensv1alpha1.ApiToken) {
		a.Spec.Rotation = &tokensv1alpha1.Rotation{GraceUntilNewTokenUsed: true}
	}, "spec.rotation.graceUntilNewTokenUsed: Forbidden: needs spec.rotation.gracePeriod: it ends the previous token's grace when the new token is used, and never later than gracePeriod"},
	{"graceUntilNewTokenUsed with only renewBefore", both(duration("90d"), func(a *tokensv1alpha1.ApiToken) {
		a.Spec.Rotation = &tokensv1alpha1.Rotation{RenewBefore: "7d", GraceUntilNewTokenUsed: true}
	}), "spec.rotation.graceUntilNewTokenUsed: Forbidden: needs spec.rotation.gracePeriod"},
	{"audience not a name", func(a *tokensv1alpha1.ApiToken) { a.Spec.Audience = "Billing API" }, `spec.audience: Invalid value: "Billing API": must be a lower-case name such as content-api, admin or billing-api`},
	{"secretName with upper case", func(a *tokensv1alpha1.ApiToken) { a.Spec.SecretName = "My-Secret" }, `spec.secretName: Invalid value: "My-Secret": must be a valid Secret name: a lowercase RFC 1123 subdomain`},
	{"secretName with underscore", func(a *tokensv1alpha1.ApiToken) { a.Spec.SecretName = "my_secret" }, `spec.secretName: Invalid value: "my_secret": must be a valid Secret name`},
	{"secretName too long", func(a *tokensv1alpha1.ApiToken) { a.Spec.SecretName = strings.Repeat("a", 254) }, "spec.secretName: Invalid value: \"" + strings.Repeat("a", 254) + "\": must be a valid Secret name: must be no more than 253 characters"},
	{"description too long", func(a *tokensv1alpha1.ApiToken) { a.Spec.Description = strings.Repeat("x", 257) }, "spec.description: Too long: may not be more than 256 bytes"},
	{"template label key invalid", func(a *tokensv1alpha1.ApiToken) {
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"bad key": "x"}}
	}, `spec.secretTemplate.labels: Invalid value: "bad key": name part must consist of alphanumeric characters`},
	{"template overrides managed-by", func(a *tokensv1alpha1.ApiToken) {
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"app.kubernetes.io/managed-by": "me"}}
	}, "spec.secretTemplate.labels[app.kubernetes.io/managed-by]: Forbidden: is set by the operator"},
	// Secret replicators copy a Secret, token included, out of its
	// namespace; a token is delivered only into its own.
	{"template asks Reflector to copy the token everywhere", annotate("reflector.v1.k8s.emberstack.com/reflection-auto-namespaces", ".*"),
		"spec.secretTemplate.annotations[reflector.v1.k8s.emberstack.com/reflection-auto-namespaces]: Forbidden: is read by Reflector, which copies Secrets between namespaces: a token is delivered only into its own namespace"},
	{"template allows Reflector mirrors", annotate("reflector.v1.k8s.emberstack.com/reflection-allowed", "true"),
		"spec.secretTemplate.annotations[reflector.v1.k8s.emberstack.com/reflection-allowed]: Forbidden: is read by Reflector"},
	{"template asks kubernetes-replicator to push the token", annotate("replicator.v1.mittwald.de/replicate-to", "team-b"),
		"spec.secretTemplate.annotations[replicator.v1.mittwald.de/replicate-to]: Forbidden: is read by kubernetes-replicator, which copies Secrets between namespaces"},
	{"template lets kubernetes-replicator overwrite the token", annotate("replicator.v1.mittwald.de/replicate-from", "team-b/other"),
		"spec.secretTemplate.annotations[replicator.v1.mittwald.de/replicate-from]: Forbidden: is read by kubernetes-replicator"},
	{"template asks Kubed to sync the token", annotate("kubed.appscode.com/sync", ""),
		"spec.secretTemplate.annotations[kubed.appscode.com/sync]: Forbidden: is read by Kubed (Config Syncer), which copies Secrets between namespaces"},
	{"template labels the Secret for an External Secrets push", func(a *tokensv1alpha1.ApiToken) {
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"push.external-secrets.io/vault": "true"}}
	}, "spec.secretTemplate.labels[push.external-secrets.io/vault]: Forbidden: is reserved for External Secrets, whose PushSecret and ClusterPushSecret selectors push Secrets out of the cluster"},
	// spec.secretTemplate.data: key names, shadowing, size.
	{"data key shadows token", dataKey("token", tokensv1alpha1.FormatBearer),
		`spec.secretTemplate.data[token]: Forbidden: the key "token" always holds the raw token (workloads and the operator's tamper check read it); choose another key name`},
	{"data key drops the raw token", dataKey("token", tokensv1alpha1.FormatJSON), `spec.secretTemplate.data[token]: Forbidden: the key "token" always holds the raw token`},
	{"data key a path", dataKey("../token", tokensv1alpha1.FormatToken), `spec.secretTemplate.data: Invalid value: "../token": must be a valid Secret key`},
	{"data key with a space", dataKey("API KEY", tokensv1alpha1.FormatToken), `spec.secretTemplate.data: Invalid value: "API KEY": must be a valid Secret key`},
	{"data key too long", dataKey(strings.Repeat("k", 254), tokensv1alpha1.FormatToken), `spec.secretTemplate.data: Invalid value: "` + strings.Repeat("k", 254) + `": must be a valid Secret key: must be no more than 253 characters`},
	{"data format a template", dataKey("API_KEY", "{{.Token}}"), `spec.secretTemplate.data[API_KEY].format: Unsupported value: "{{.Token}}": supported values: "token", "bearer", "env", "json"`},
	{"data env variable injects a line", func(a *tokensv1alpha1.ApiToken) {
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Data: map[string]tokensv1alpha1.SecretDataKey{"app.env": {Format: tokensv1alpha1.FormatEnv, Variable: "A=1\nB"}}}
	}, `spec.secretTemplate.data[app.env].variable: Invalid value: "A=1\nB": must be an environment variable name`},
	{"data variable on bearer", func(a *tokensv1alpha1.ApiToken) {
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Data: map[string]tokensv1alpha1.SecretDataKey{"auth": {Format: tokensv1alpha1.FormatBearer, Variable: "X"}}}
	}, `spec.secretTemplate.data[auth].variable: Forbidden: variable is only allowed with format env`},
	{"data too many keys", func(a *tokensv1alpha1.ApiToken) {
		d := map[string]tokensv1alpha1.SecretDataKey{}
		for i := range 17 {
			d[fmt.Sprintf("K%d", i)] = tokensv1alpha1.SecretDataKey{Format: tokensv1alpha1.FormatToken}
		}
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Data: d}
	}, "spec.secretTemplate.data: Too many: 17: must have at most 16 items"},
	// spec.rotation.restartTargets: kinds, names, how many, duplicates.
	{"restart target of an unknown kind", restartTargets(tokensv1alpha1.RestartTarget{Kind: "CronJob", Name: "nightly"}),
		`spec.rotation.restartTargets[0].kind: Unsupported value: "CronJob": supported values: "Deployment", "StatefulSet", "DaemonSet"`},
	{"restart target not a name", restartTargets(tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartDeployment, Name: "Api_Server"}),
		`spec.rotation.restartTargets[0].name: Invalid value: "Api_Server": must be the name of a workload in the ApiToken's namespace: a lowercase RFC 1123 subdomain`},
	{"restart target named twice", restartTargets(tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartDeployment, Name: "api"}, tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartDeployment, Name: "api"}),
		`spec.rotation.restartTargets[1]: Duplicate value: "Deployment/api"`},
	{"too many restart targets", func(a *tokensv1alpha1.ApiToken) {
		var targets []tokensv1alpha1.RestartTarget
		for i := range 17 {
			targets = append(targets, tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartDeployment, Name: fmt.Sprintf("api-%d", i)})
		}
		restartTargets(targets...)(a)
	}, "spec.rotation.restartTargets: Too many: 17: must have at most 16 items"},
	{"template sets the data seal", annotate(tokensv1alpha1.DataSealAnnotation, "x.y"), "spec.secretTemplate.annotations[tokens.apitoken.dev/data-seal]: Forbidden: is set by the operator"},
	{"showOnce with a low-order public key", showOnce(lowOrderKey), `spec.showOnce.publicKey: Invalid value: "` + lowOrderKey + `": is not a usable X25519 public key`},
	{"showOnce with a short public key", showOnce("AAAA"), `spec.showOnce.publicKey: Invalid value: "AAAA": must be an X25519 public key of 32 bytes, not 3`},
	{"showOnce with a Secret name", both(showOnce(showOnceKey), func(a *tokensv1alpha1.ApiToken) { a.Spec.SecretName = "ci-token" }),
		"spec.secretName: Forbidden: is not allowed with showOnce: a show-once token has no Secret and is never regenerated"},
	{"showOnce with a rotation", both(showOnce(showOnceKey), rotation("5m", "")),
		"spec.rotation: Forbidden: is not allowed with showOnce: a show-once token has no Secret and is never regenerated"},
}

// showOnceKey is a valid show-once public key; lowOrderKey is the X25519
// point u=1, which base64 and the schema accept and no box can be sealed to.
var (
	showOnceKey = func() string {
		_, pub, err := showonce.GenerateKey()
		if err != nil {
			panic(err)
		}
		return pub
	}()
	lowOrderKey = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)

// showOnce makes the token a show-once token sealed to key.
func showOnce(key string) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) { a.Spec.ShowOnce = &tokensv1alpha1.ShowOnce{PublicKey: key} }
}

// dataKey sets one key of the Secret's template data.
func dataKey(key string, format tokensv1alpha1.SecretDataFormat) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) {
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Data: map[string]tokensv1alpha1.SecretDataKey{key: {Format: format}, "API_KEY2": {Format: tokensv1alpha1.FormatToken}}}
	}
}

// restartTargets sets spec.rotation.restartTargets.
func restartTargets(targets ...tokensv1alpha1.RestartTarget) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) { a.Spec.Rotation = &tokensv1alpha1.Rotation{RestartTargets: targets} }
}

// annotate sets one annotation of the Secret's template.
func annotate(key, value string) func(*tokensv1alpha1.ApiToken) {
	return func(a *tokensv1alpha1.ApiToken) {
		a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Annotations: map[string]string{key: value, "reloader.stakater.com/match": "true"}}
	}
}

// badUpdates are refused on update from validToken().
var badUpdates = []badCase{
	{"secretName changed", func(a *tokensv1alpha1.ApiToken) { a.Spec.SecretName = "other" }, `spec.secretName: Invalid value: "other": cannot be changed after creation (it is "valid-token"); create a new ApiToken instead`},
	{"showOnce added", both(showOnce(showOnceKey), func(a *tokensv1alpha1.ApiToken) { a.Spec.SecretName = "" }), "spec.showOnce: Forbidden: cannot be added or removed after creation; create a new ApiToken instead"},
}

// apiMessage is what the API server answers: the CRD schema refuses some
// shapes before the validating webhook is called, in its own words.
func (c badCase) apiMessage() string {
	if m, ok := schemaMessages[c.name]; ok {
		return m
	}
	return c.message
}

// schemaMessages are the API server's messages for the cases its CRD
// schema refuses before the validating webhook runs.
var schemaMessages = map[string]string{
	"missing type":                                 `spec.type: Unsupported value: "": supported values: "read-only", "full-access", "custom"`,
	"scopes on read-only":                          "spec.scopes: Forbidden: scopes are only allowed with type custom",
	"scopes on full-access":                        "spec.scopes: Forbidden: scopes are only allowed with type custom",
	"custom without scopes":                        "spec.scopes: Required value: a custom token must list at least one scope",
	"scope without action":                         `spec.scopes[2]: Invalid value: "orders": ` + scopeRule,
	"scope with empty resource":                    `spec.scopes[0]: Invalid value: ":read": ` + scopeRule,
	"scope with upper case":                        `spec.scopes[0]: Invalid value: "Articles:read": ` + scopeRule,
	"scope with empty action":                      `spec.scopes[0]: Invalid value: "articles:": ` + scopeRule,
	"scope with an empty part":                     `spec.scopes[0]: Invalid value: "api::article.find": ` + scopeRule,
	"scope nested too deep":                        `spec.scopes[0]: Invalid value: "a:b:c:d:e:f:g:h:i:read": ` + scopeRule,
	"scope with a hyphenated action":               `spec.scopes[0]: Invalid value: "articles:find-one": ` + scopeRule,
	"scope with a space":                           `spec.scopes[0]: Invalid value: "articles: read": ` + scopeRule,
	"missing duration":                             `spec.duration: Invalid value: "": ` + durationRule,
	"zero duration":                                `spec.duration: Invalid value: "0d": ` + durationRule,
	"negative duration":                            `spec.duration: Invalid value: "-7d": ` + durationRule,
	"weeks":                                        `spec.duration: Invalid value: "2w": ` + durationRule,
	"milliseconds":                                 `spec.duration: Invalid value: "500ms": ` + durationRule,
	"fraction":                                     `spec.duration: Invalid value: "1.5h": ` + durationRule,
	"units out of order":                           `spec.duration: Invalid value: "1h1d": ` + durationRule,
	"capitalised unlimited":                        `spec.duration: Invalid value: "Unlimited": ` + durationRule,
	"renewBefore with unlimited":                   "spec.rotation.renewBefore: Forbidden: renewBefore needs a finite duration",
	"malformed renewBefore":                        `spec.rotation.renewBefore: Invalid value: "1week": ` + spanRule,
	"zero grace":                                   `spec.rotation.gracePeriod: Invalid value: "0m0s": ` + spanRule,
	"graceUntilNewTokenUsed without a grace":       "spec.rotation.graceUntilNewTokenUsed: Forbidden: " + graceUntilUsedRule,
	"graceUntilNewTokenUsed with only renewBefore": "spec.rotation.graceUntilNewTokenUsed: Forbidden: " + graceUntilUsedRule,
	"audience not a name":                          `spec.audience: Invalid value: "Billing API": must be a lower-case name (a DNS label) such as content-api, admin or billing-api`,
	"secretName with upper case":                   `spec.secretName: Invalid value: "My-Secret": ` + secretNameRule,
	"secretName with underscore":                   `spec.secretName: Invalid value: "my_secret": ` + secretNameRule,
	"secretName too long":                          "spec.secretName: Too long: may not be more than 253 bytes",
	"too many scopes":                              "spec.scopes: Too many: 65: must have at most 64 items",
	"description too long":                         "spec.description: Too long: may not be more than 256 bytes",
	"secretName changed":                           "spec.secretName: Invalid value: secretName cannot be changed after creation; create a new ApiToken instead",
	"restart target not a name":                    `spec.rotation.restartTargets[0].name: Invalid value: "Api_Server": must be a workload's name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit`,
	"restart target named twice":                   `spec.rotation.restartTargets[1]: Duplicate value: {"kind":"Deployment","name":"api"}`,
	"showOnce with a short public key":             "spec.showOnce.publicKey: Invalid value: \"AAAA\": spec.showOnce.publicKey in body should be at least 44 chars long",
	"showOnce with a Secret name":                  "spec.showOnce: Forbidden: " + showOnceRule,
	"showOnce with a rotation":                     "spec.showOnce: Forbidden: " + showOnceRule,
	"showOnce added":                               "spec.showOnce: Invalid value: showOnce cannot be added or removed after creation; create a new ApiToken instead",
	"data format a template":                       `spec.secretTemplate.data.API_KEY.format: Unsupported value: "{{.Token}}": supported values: "token", "bearer", "env", "json"`,
}

// The CRD's CEL messages (api/v1alpha1 markers).
const (
	scopeRule          = "must be resource[:sub-resource...]:action, e.g. orders:read, table:data:read or articles:findOne; each resource part is * or lower-case, at most 8"
	durationRule       = "must be unlimited or a positive span of days, hours, minutes and seconds, such as 7d, 30d, 90d, 2160h, 1h30m or 30s"
	spanRule           = "must be a positive span of days, hours, minutes and seconds, such as 30s, 5m, 2h or 7d"
	graceUntilUsedRule = "graceUntilNewTokenUsed needs a gracePeriod: it ends the grace early, and never later than gracePeriod"
	secretNameRule     = "must be a valid Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
	showOnceRule       = "a show-once token has no Secret and is never regenerated: secretName, secretTemplate and rotation are not allowed with showOnce"
)
