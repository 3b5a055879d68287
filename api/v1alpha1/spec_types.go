package v1alpha1

// TokenType sets which scopes a token grants.
// +kubebuilder:validation:Enum=read-only;full-access;custom
type TokenType string

const (
	// ReadOnly grants the read action on every resource (*:read).
	ReadOnly TokenType = "read-only"
	// FullAccess grants every action on every resource (*:*).
	FullAccess TokenType = "full-access"
	// Custom grants exactly the listed scopes.
	Custom TokenType = "custom"
)

// Audience is where a token may be presented, by name: a lower-case DNS
// label such as billing-api; a token is refused where another audience is
// required.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="must be a lower-case name (a DNS label) such as content-api, admin or billing-api"
type Audience string

const (
	// ContentAPI is the default audience: the public content API.
	ContentAPI Audience = "content-api"
	// Admin is the administration API.
	Admin Audience = "admin"
	// Kubernetes is the Kubernetes API server, through its webhook token
	// authentication (TokenReview).
	Kubernetes Audience = "kubernetes"
)

// Presentation is how a client must present a token: bkend's API_KEY and
// BEARER_TOKEN kinds.
// +kubebuilder:validation:Enum=any;bearer;api-key
type Presentation string

const (
	// AnyHeader accepts the token from Authorization: Bearer or X-API-Key.
	AnyHeader Presentation = "any"
	// BearerHeader accepts it only from Authorization: Bearer.
	BearerHeader Presentation = "bearer"
	// APIKeyHeader accepts it only from X-API-Key.
	APIKeyHeader Presentation = "api-key"
)

// Unlimited is the duration of a token that never expires.
const Unlimited = "unlimited"

// ApiTokenSpec is the desired state of an ApiToken.
// +kubebuilder:validation:XValidation:rule="self.type != 'custom' || (has(self.scopes) && size(self.scopes) > 0)",message="a custom token must list at least one scope",fieldPath=".scopes",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="self.type == 'custom' || !has(self.scopes) || size(self.scopes) == 0",message="scopes are only allowed with type custom",fieldPath=".scopes",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.rotation) || !has(self.rotation.renewBefore) || self.duration != 'unlimited'",message="renewBefore needs a finite duration",fieldPath=".rotation.renewBefore",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.secretName) || (has(self.secretName) && self.secretName == oldSelf.secretName)",message="secretName cannot be changed after creation; create a new ApiToken instead",fieldPath=".secretName"
// +kubebuilder:validation:XValidation:rule="has(self.showOnce) == has(oldSelf.showOnce)",message="showOnce cannot be added or removed after creation; create a new ApiToken instead",fieldPath=".showOnce"
// +kubebuilder:validation:XValidation:rule="!has(self.showOnce) || (!has(self.secretName) && !has(self.secretTemplate) && !has(self.rotation))",message="a show-once token has no Secret and is never regenerated: secretName, secretTemplate and rotation are not allowed with showOnce",fieldPath=".showOnce",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.showOnce) || !has(oldSelf.revoked) || !oldSelf.revoked || (has(self.revoked) && self.revoked)",message="a revoked show-once token cannot be un-revoked (nobody could pick a new token up); create a new ApiToken instead",fieldPath=".revoked",reason=FieldValueForbidden
type ApiTokenSpec struct {
	// description says what the token is for.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`

	// type sets the scopes the token grants: read-only (*:read),
	// full-access (*:*) or custom (exactly spec.scopes).
	// +required
	Type TokenType `json:"type"`

	// scopes lists what a custom token grants, each
	// resource[:sub-resource...]:action: the last part is the action, the
	// others name the resource ("articles:read", "table:data:read",
	// "articles:findOne"). "*" matches any one part or any action, and a
	// resource of "*" alone matches every resource ("*:*"). read covers
	// find and findOne. See docs/scopes.md.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^([*]|[a-z0-9]([a-z0-9._-]*[a-z0-9])?)(:([*]|[a-z0-9]([a-z0-9._-]*[a-z0-9])?)){0,7}:([*]|[a-z][a-zA-Z0-9]*)$')",message="must be resource[:sub-resource...]:action, e.g. orders:read, table:data:read or articles:findOne; each resource part is * or lower-case, at most 8"
	Scopes []string `json:"scopes,omitempty"`

	// duration is how long a token is valid after it is issued: "unlimited",
	// or a positive span (at least 1s) in days, hours, minutes and seconds,
	// in that order, such as "7d", "30d", "90d", "1d12h", or a Kubernetes/Go
	// duration string as cert-manager takes: "2160h", "1h30m", "30s".
	// +required
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self == 'unlimited' || (self.matches('^((0|[1-9][0-9]*)d)?((0|[1-9][0-9]*)h)?((0|[1-9][0-9]*)m)?((0|[1-9][0-9]*)s)?$') && self.matches('[1-9]'))",message="must be unlimited or a positive span of days, hours, minutes and seconds, such as 7d, 30d, 90d, 2160h, 1h30m or 30s"
	Duration string `json:"duration"`

	// audience is where the token may be presented, by name: content-api
	// (default), admin (Strapi's), kubernetes (the API server, through
	// webhook token authentication), or any lower-case DNS label naming a
	// service, such as billing-api. A route requires one by name.
	// +optional
	// +kubebuilder:default=content-api
	Audience Audience `json:"audience,omitempty"`

	// presentation is how clients must send the token: any (default;
	// Authorization: Bearer or X-API-Key), bearer (Authorization: Bearer
	// only; the only kind the Kubernetes API server can present) or
	// api-key (X-API-Key only). A token sent the other way is refused with
	// invalid_request.
	// +optional
	// +kubebuilder:default=any
	Presentation Presentation `json:"presentation,omitempty"`

	// secretName is the Secret the token is written to, under the key
	// "token". Defaults to <name>-token. It cannot change after creation.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a valid Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
	SecretName string `json:"secretName,omitempty"`

	// secretTemplate holds labels and annotations copied onto the Secret,
	// and data: more keys rendered from the token (API_KEY, a Bearer header
	// value, an env file, a JSON document) beside the key "token".
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`

	// rotation sets the grace period after a regeneration and automatic renewal.
	// +optional
	Rotation *Rotation `json:"rotation,omitempty"`

	// idleTimeout makes a token that has not been used for this long
	// Inactive: refused, until it is regenerated, e.g. "90d". The idle time
	// runs from the later of status.issuedAt and status.lastUsedAt.
	// Default: none.
	// +optional
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^((0|[1-9][0-9]*)d)?((0|[1-9][0-9]*)h)?((0|[1-9][0-9]*)m)?((0|[1-9][0-9]*)s)?$') && self.matches('[1-9]')",message="must be a positive span of days, hours, minutes and seconds, such as 30d, 90d, 12h or 2160h"
	IdleTimeout string `json:"idleTimeout,omitempty"`

	// revoked makes the token invalid at once and removes it from the
	// Secret. Setting it back to false issues a new token.
	// +optional
	Revoked bool `json:"revoked,omitempty"`

	// showOnce issues the token once to its creator instead of into a
	// Secret (kubectl apitoken create --show-once): the operator seals it
	// to publicKey into status.showOnce.sealed, keeps only its hash, and
	// the token verifies only once its creator has picked it up (the
	// tokens.apitoken.dev/picked-up annotation, set to the proof sealed
	// with it) within pickupWindow; a token nobody picked up in time never
	// verifies. No Secret is ever written. It cannot be added, removed or
	// changed after creation, and a show-once token is never regenerated.
	// See docs/lifecycle.md#show-once-tokens.
	// +optional
	ShowOnce *ShowOnce `json:"showOnce,omitempty"`
}

// ShowOnce is how a show-once token is handed to its creator.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="showOnce cannot be changed after creation; create a new ApiToken instead"
type ShowOnce struct {
	// publicKey is the creator's X25519 public key, standard base64 of 32
	// bytes: the token is sealed to it. The kubectl plugin makes the key
	// pair in memory and never stores the private key.
	// +required
	// +kubebuilder:validation:MinLength=44
	// +kubebuilder:validation:MaxLength=44
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9+/]{43}=$')",message="must be an X25519 public key: standard base64 of 32 bytes"
	// +kubebuilder:validation:XValidation:rule="self != 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='",message="must not be the all-zero key"
	PublicKey string `json:"publicKey"`

	// pickupWindow is how long after the token is issued its creator may
	// pick it up, e.g. "5m" (the default), at most 1h. A token not picked
	// up by then never verifies.
	// +optional
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^((0|[1-9][0-9]*)d)?((0|[1-9][0-9]*)h)?((0|[1-9][0-9]*)m)?((0|[1-9][0-9]*)s)?$') && self.matches('[1-9]')",message="must be a positive span of hours, minutes and seconds, such as 2m, 5m or 1h"
	PickupWindow string `json:"pickupWindow,omitempty"`
}

// SecretTemplate holds metadata copied onto the generated Secret, and keys
// rendered into its data from the token.
type SecretTemplate struct {
	// labels are added to the Secret.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are added to the Secret (e.g. for a reloader).
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// data adds keys to the Secret, each rendered from the current token
	// in a format of a closed list (no template language): the key is the
	// Secret key (letters, digits, '-', '_', '.'; not "token", which always
	// holds the raw token), the value says how. At most 16 keys. Every key
	// changes with the token (a regeneration, a rotation), is emptied when
	// the token is revoked, and never holds the previous token during its
	// grace period. A rendered key edited by someone is written back.
	// See docs/lifecycle.md#rendered-keys.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	Data map[string]SecretDataKey `json:"data,omitempty"`
}

// SecretDataFormat is how a key of secretTemplate.data renders the token.
// +kubebuilder:validation:Enum=token;bearer;env;json
type SecretDataFormat string

const (
	// FormatToken is the raw token, as in the key "token" (e.g. API_KEY).
	FormatToken SecretDataFormat = "token"
	// FormatBearer is an Authorization header value: "Bearer <token>".
	FormatBearer SecretDataFormat = "bearer"
	// FormatEnv is an env file of one line: "<variable>=<token>" and a newline.
	FormatEnv SecretDataFormat = "env"
	// FormatJSON is a JSON document: {"token", "name", "namespace",
	// "audience", "expiresAt" (absent for an unlimited token)}.
	FormatJSON SecretDataFormat = "json"
)

// SecretDataKey says how one key of secretTemplate.data is rendered.
// +kubebuilder:validation:XValidation:rule="!has(self.variable) || self.format == 'env'",message="variable is only allowed with format env",fieldPath=".variable",reason=FieldValueForbidden
type SecretDataKey struct {
	// format is how the token is rendered: token (the raw token), bearer
	// ("Bearer <token>"), env ("<variable>=<token>" and a newline) or json
	// (the token, the ApiToken's name and namespace, its audience and
	// expiresAt).
	// +required
	Format SecretDataFormat `json:"format"`

	// variable is the variable name of format env, e.g. API_TOKEN (the
	// default): a letter or '_', then letters, digits or '_'.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z_][A-Za-z0-9_]*$')",message="must be an environment variable name: a letter or '_', then letters, digits or '_'"
	Variable string `json:"variable,omitempty"`
}

// Rotation configures how a token is replaced.
// +kubebuilder:validation:XValidation:rule="!has(self.graceUntilNewTokenUsed) || !self.graceUntilNewTokenUsed || has(self.gracePeriod)",message="graceUntilNewTokenUsed needs a gracePeriod: it ends the grace early, and never later than gracePeriod",fieldPath=".graceUntilNewTokenUsed",reason=FieldValueForbidden
type Rotation struct {
	// gracePeriod is how long the previous token stays valid after a
	// regeneration, e.g. "5m" (kubelet takes a minute or two to refresh a
	// mounted Secret). Default: none.
	// +optional
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^((0|[1-9][0-9]*)d)?((0|[1-9][0-9]*)h)?((0|[1-9][0-9]*)m)?((0|[1-9][0-9]*)s)?$') && self.matches('[1-9]')",message="must be a positive span of days, hours, minutes and seconds, such as 30s, 5m, 2h or 7d"
	GracePeriod string `json:"gracePeriod,omitempty"`

	// renewBefore regenerates the token automatically this long before it
	// expires, e.g. "7d". Only with a finite duration, and shorter than it.
	// +optional
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^((0|[1-9][0-9]*)d)?((0|[1-9][0-9]*)h)?((0|[1-9][0-9]*)m)?((0|[1-9][0-9]*)s)?$') && self.matches('[1-9]')",message="must be a positive span of days, hours, minutes and seconds, such as 30s, 5m, 2h or 7d"
	RenewBefore string `json:"renewBefore,omitempty"`

	// graceUntilNewTokenUsed ends the previous token's grace as soon as
	// the new token has been accepted by any replica of the auth endpoint
	// (recorded in status.verification.firstUsedAt), and never later than
	// gracePeriod, which it needs. A use of the previous token never ends
	// its own grace. Default: false (the grace always lasts gracePeriod).
	// +optional
	GraceUntilNewTokenUsed bool `json:"graceUntilNewTokenUsed,omitempty"`

	// restartTargets are workloads in the ApiToken's namespace that read
	// the token when they start (an environment variable): after each new
	// token that replaces one (a regeneration, a rotation, a re-issue; not
	// the first token) has been written to the Secret, the operator
	// restarts each of them as `kubectl rollout restart` does, by an
	// annotation of its pod template (tokens.apitoken.dev/restarted-for),
	// once per token. The operator needs the opt-in RBAC for it, and
	// whoever adds a target must be allowed to patch it. At most 16.
	// See docs/lifecycle.md#restart-targets.
	// +optional
	// +listType=map
	// +listMapKey=kind
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	RestartTargets []RestartTarget `json:"restartTargets,omitempty"`
}

// RestartKind is the kind (apps/v1) of a restart target.
// +kubebuilder:validation:Enum=Deployment;StatefulSet;DaemonSet
type RestartKind string

const (
	// RestartDeployment is an apps/v1 Deployment.
	RestartDeployment RestartKind = "Deployment"
	// RestartStatefulSet is an apps/v1 StatefulSet.
	RestartStatefulSet RestartKind = "StatefulSet"
	// RestartDaemonSet is an apps/v1 DaemonSet.
	RestartDaemonSet RestartKind = "DaemonSet"
)

// RestartTarget names a workload in the ApiToken's namespace.
type RestartTarget struct {
	// kind is Deployment, StatefulSet or DaemonSet.
	// +required
	Kind RestartKind `json:"kind"`

	// name is the workload's name, in the ApiToken's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a workload's name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
	Name string `json:"name"`
}

// String names the target as "Deployment/api".
func (t RestartTarget) String() string {
	return string(t.Kind) + "/" + t.Name
}
