package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Well-known names used on ApiTokens and on the Secrets generated for them.
const (
	// RegenerateAnnotation asks for a new token: a value not yet recorded in
	// status.lastHandledRegenerate is acted on once, as Flux's requestedAt.
	RegenerateAnnotation = "tokens.apitoken.dev/regenerate"
	// CreatedByAnnotation records who created the ApiToken, stamped by the
	// admission webhook from the admission request.
	CreatedByAnnotation = "tokens.apitoken.dev/created-by"
	// CreatedByGroupsAnnotation records the creator's groups (their role,
	// as bkend lists it) as a JSON array, stamped with CreatedByAnnotation.
	CreatedByGroupsAnnotation = "tokens.apitoken.dev/created-by-groups"
	// IssuedAtAnnotation on the Secret records when its token was issued, so
	// that a status lost in a restore can be rebuilt without a new token.
	IssuedAtAnnotation = "tokens.apitoken.dev/issued-at"
	// SealAnnotation on the Secret is a MAC, under the operator's salt, of
	// the ApiToken's UID, the issue time and the token: only the operator
	// can write one, so a status lost in a restore is rebuilt only from a
	// Secret the operator wrote, never from one a tenant planted.
	SealAnnotation = "tokens.apitoken.dev/seal"
	// SaltIDAnnotation on the Secret names the salt its seal was made with
	// (its ID, not the salt), so that a Secret restored without its
	// ApiToken's status and without that salt is held, not replaced.
	SaltIDAnnotation = "tokens.apitoken.dev/salt-id"
	// TemplateKeysAnnotation on the Secret lists the label and annotation
	// keys that came from spec.secretTemplate, so that keys dropped from the
	// template are removed and keys others added are kept.
	TemplateKeysAnnotation = "tokens.apitoken.dev/template-keys"
	// ManagedByLabel marks every Secret the operator manages.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel.
	ManagedByValue = "apitoken-operator"
	// ApiTokenLabel names the ApiToken a Secret belongs to.
	ApiTokenLabel = "tokens.apitoken.dev/apitoken"
	// SecretTokenKey is the key of the token in the generated Secret.
	SecretTokenKey = "token"
	// SecretNameSuffix is appended to the ApiToken's name for the default Secret name.
	SecretNameSuffix = "-token"
)

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

	// secretTemplate holds labels and annotations copied onto the Secret.
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
}

// SecretTemplate holds metadata copied onto the generated Secret.
type SecretTemplate struct {
	// labels are added to the Secret.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are added to the Secret (e.g. for a reloader).
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Rotation configures how a token is replaced.
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
}

// Phase summarises where a token is in its life.
// +kubebuilder:validation:Enum=Pending;Active;Expired;Inactive;Revoked;Failed
type Phase string

const (
	// PhasePending: no token has been issued yet.
	PhasePending Phase = "Pending"
	// PhaseActive: the token in the Secret verifies.
	PhaseActive Phase = "Active"
	// PhaseExpired: the token has passed status.expiresAt.
	PhaseExpired Phase = "Expired"
	// PhaseInactive: the token was not used for spec.idleTimeout.
	PhaseInactive Phase = "Inactive"
	// PhaseRevoked: spec.revoked is true.
	PhaseRevoked Phase = "Revoked"
	// PhaseFailed: the token cannot be delivered (see the Ready condition).
	PhaseFailed Phase = "Failed"
)

// Condition types.
const (
	// ConditionReady is True while the Secret holds a token that verifies.
	ConditionReady = "Ready"
	// ConditionExpiringSoon is True when a finite token is close to expiry.
	ConditionExpiringSoon = "ExpiringSoon"
)

// Granted is what a token grants.
type Granted struct {
	Type TokenType `json:"type"`
	// +optional
	// +listType=atomic
	Scopes []string `json:"scopes,omitempty"`
	// +optional
	Audience Audience `json:"audience,omitempty"`
}

// Condition reasons; the same words are the reasons of the Events.
const (
	// ReasonPermissionsChanged (an Event only): the type, scopes or
	// audience of a live token changed.
	ReasonPermissionsChanged = "PermissionsChanged"
	// ReasonGenerated: a first token was issued.
	ReasonGenerated = "Generated"
	// ReasonRegenerated: a new token was issued on request (annotation).
	ReasonRegenerated = "Regenerated"
	// ReasonRotated: a new token was issued by renewBefore.
	ReasonRotated = "Rotated"
	// ReasonSaltRotated: the operator's salt changed; every token was re-issued.
	ReasonSaltRotated = "SaltRotated"
	// ReasonSaltMismatch: the token's hashes were made with a salt that the
	// operator's salt Secret neither holds nor names as replaced (a lost or
	// wrongly restored salt); nothing is re-issued until the salt is
	// restored or its loss acknowledged (docs/operations.md).
	ReasonSaltMismatch = "SaltMismatch"
	// ReasonSecretMissing: the Secret was deleted and a new token was issued.
	ReasonSecretMissing = "SecretMissing"
	// ReasonSecretTampered: the Secret's token did not match and a new token was issued.
	ReasonSecretTampered = "SecretTampered"
	// ReasonUnrevoked: revoked was set back to false and a new token was issued.
	ReasonUnrevoked = "Unrevoked"
	// ReasonRecovered: the verification record was rebuilt from the Secret.
	ReasonRecovered = "Recovered"
	// ReasonSecretUntrusted: the record was lost and the Secret's token was
	// not adopted (its issued-at is missing or in the future); a new token
	// was issued.
	ReasonSecretUntrusted = "SecretUntrusted"
	// ReasonCutHeld: the token was to be cut without anyone asking (its
	// Secret tampered, missing or untrusted) while more such cuts than
	// the operator's limit (--max-cuts in --cut-window) were taken: it is
	// held, its recorded token keeps verifying, until a person releases it
	// by annotating tokens.apitoken.dev/regenerate (docs/operations.md).
	ReasonCutHeld = "CutHeld"
	// ReasonActive: the token is valid.
	ReasonActive = "Active"
	// ReasonInactive: the token was not used for spec.idleTimeout.
	ReasonInactive = "Inactive"
	// ReasonExpired: the token has expired.
	ReasonExpired = "Expired"
	// ReasonRevoked: the token was revoked.
	ReasonRevoked = "Revoked"
	// ReasonSecretConflict: a Secret of that name exists and is not owned
	// by this ApiToken. A token recorded for it was cut (its Secret was
	// taken from the operator); once that Secret is gone, or the
	// operator's again, a new token is issued (an Event of this reason).
	ReasonSecretConflict = "SecretConflict"
	// ReasonInvalidSpec: the spec cannot be acted on (a webhook-less install let it in).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonExpiringSoon: the token expires soon.
	ReasonExpiringSoon = "ExpiringSoon"
	// ReasonNotExpiringSoon: the token is not close to expiry.
	ReasonNotExpiringSoon = "NotExpiringSoon"
	// ReasonReconcileFailed (Ready only): the last pass failed with the
	// error in the message (a Secret write refused, the API server out of
	// reach) and is retried; the status is otherwise as the last pass that
	// succeeded left it.
	ReasonReconcileFailed = "ReconcileFailed"
)

// Verification is the record the auth endpoint verifies against: keyed
// hashes only, never a token. Hashes are base64 (std) HMAC-SHA512 digests.
type Verification struct {
	// saltID identifies the salt the hashes were made with (not the salt).
	// +optional
	SaltID string `json:"saltID,omitempty"`

	// hash is the digest of the token in the Secret.
	// +optional
	Hash string `json:"hash,omitempty"`

	// pendingHash is the digest of a token being written to the Secret; it
	// verifies so that a crash between the two writes never leaves the
	// Secret with a token that does not.
	// +optional
	PendingHash string `json:"pendingHash,omitempty"`

	// pendingReason is why the pending token is issued.
	// +optional
	PendingReason string `json:"pendingReason,omitempty"`

	// pendingRegenerate is the regenerate annotation value the pending
	// token answers, if any.
	// +optional
	PendingRegenerate string `json:"pendingRegenerate,omitempty"`

	// previousHash is the digest of the token replaced by the last
	// regeneration, valid until previousValidUntil.
	// +optional
	PreviousHash string `json:"previousHash,omitempty"`

	// previousValidUntil ends the grace period of previousHash.
	// +optional
	PreviousValidUntil *metav1.Time `json:"previousValidUntil,omitempty"`

	// revokedHash is the digest of a revoked token, kept only so that the
	// auth endpoint answers "revoked" rather than "unknown"; it never verifies.
	// +optional
	RevokedHash string `json:"revokedHash,omitempty"`
}

// SecretReference names the Secret in the ApiToken's namespace.
type SecretReference struct {
	// name of the Secret.
	// +required
	Name string `json:"name"`
}

// ApiTokenStatus is the observed state of an ApiToken, written by the operator only.
type ApiTokenStatus struct {
	// phase is Pending, Active, Expired, Revoked or Failed.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// conditions: Ready and ExpiringSoon.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// secretRef names the Secret holding the token.
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`

	// issuedAt is when the current token was issued.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// expiresAt is issuedAt + duration; absent for an unlimited token.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// lastUsedAt is when the token last verified at the auth endpoint
	// (updated at most once a minute).
	// +optional
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`

	// lastRegeneratedAt is when the token was last replaced.
	// +optional
	LastRegeneratedAt *metav1.Time `json:"lastRegeneratedAt,omitempty"`

	// lastHandledRegenerate is the last value of the regenerate annotation acted on.
	// +optional
	LastHandledRegenerate string `json:"lastHandledRegenerate,omitempty"`

	// verification holds the keyed hashes the auth endpoint verifies against.
	// +optional
	Verification *Verification `json:"verification,omitempty"`

	// granted is what the token grants (type, scopes, audience) as the
	// operator last saw the spec: a change of a live token records a
	// PermissionsChanged Event from this to the new grant.
	// +optional
	Granted *Granted `json:"granted,omitempty"`

	// observedGeneration is the generation last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// The rule on spec.revoked below lets it go back to false only once the
// operator has recorded the revocation: no hash left in the verifying set
// of status.verification, which the API server reads from the stored
// status. A revocation undone before the operator saw it (a GitOps
// self-heal, a backlog, a failover) would otherwise leave the revoked
// token in the record, valid again.

// ApiToken is an API token delivered into a Secret and verified by the
// operator's auth endpoint.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec.revoked) || !oldSelf.spec.revoked || (has(self.spec.revoked) && self.spec.revoked) || !has(self.status) || !has(self.status.verification) || ((!has(self.status.verification.hash) || size(self.status.verification.hash) == 0) && (!has(self.status.verification.pendingHash) || size(self.status.verification.pendingHash) == 0) && (!has(self.status.verification.previousHash) || size(self.status.verification.previousHash) == 0))",message="cannot be set back to false until the operator has recorded the revocation (status.phase Revoked); retry in a moment: un-revoking then issues a new token",fieldPath=".spec.revoked",reason=FieldValueForbidden
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=at;apitok,categories=tokens
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Last Used",type=date,JSONPath=`.status.lastUsedAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Presentation",type=string,JSONPath=`.spec.presentation`,priority=1
// +kubebuilder:printcolumn:name="Audience",type=string,JSONPath=`.spec.audience`,priority=1
// +kubebuilder:printcolumn:name="Created By",type=string,JSONPath=`.metadata.annotations.tokens\.apitoken\.dev/created-by`,priority=1
// +kubebuilder:printcolumn:name="Description",type=string,JSONPath=`.spec.description`,priority=1
type ApiToken struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired token.
	// +required
	Spec ApiTokenSpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status ApiTokenStatus `json:"status,omitempty"`
}

// ApiTokenList is a list of ApiTokens.
// +kubebuilder:object:root=true
type ApiTokenList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ApiToken `json:"items"`
}

// SecretName returns the name of the token's Secret: spec.secretName, or
// <name>-token when unset.
func (t *ApiToken) SecretName() string {
	if t.Spec.SecretName != "" {
		return t.Spec.SecretName
	}
	return t.Name + SecretNameSuffix
}
