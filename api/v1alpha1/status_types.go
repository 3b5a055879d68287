package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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

// Granted is what a token grants.
type Granted struct {
	Type TokenType `json:"type"`
	// +optional
	// +listType=atomic
	Scopes []string `json:"scopes,omitempty"`
	// +optional
	Audience Audience `json:"audience,omitempty"`
}

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

	// firstUsedAt is when a replica of the auth endpoint first accepted
	// the token recorded as hash (not the previous one) while
	// spec.rotation.graceUntilNewTokenUsed asked for it: the previous
	// token's grace ends then. It belongs to hash and is cleared when a
	// new token is recorded.
	// +optional
	FirstUsedAt *metav1.Time `json:"firstUsedAt,omitempty"`

	// replacedHash is the digest of the last token a regeneration
	// replaced, kept once its grace is over (or when it had none), so
	// that the auth endpoint can report it presented again (a
	// ReplacedTokenPresented Event): a sign that it leaked. It never
	// verifies, and is answered as an unknown token.
	// +optional
	ReplacedHash string `json:"replacedHash,omitempty"`

	// revokedHash is the digest of a revoked token, kept only so that the
	// auth endpoint answers "revoked" rather than "unknown"; it never verifies.
	// +optional
	RevokedHash string `json:"revokedHash,omitempty"`

	// leakRevocations are the requests, made at the auth endpoint's
	// /v1/revoke by whoever presented a recorded token, to revoke it as
	// leaked: written by the auth endpoint, acted on and cleared by the
	// reconciler (a new token for the current one, the end of its grace
	// for the previous one). A hash one of them names is refused from the
	// moment it is recorded. At most one per recorded hash.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=3
	LeakRevocations []LeakRevocation `json:"leakRevocations,omitempty"`
}

// LeakRevocation is one request to revoke a leaked token, made by
// presenting it: never the token or its hash.
type LeakRevocation struct {
	// token names the revoked token's recorded hash by a reference to it
	// (the first 128 bits of a SHA-256 of the hash, hex): enough to tell
	// which of the record's hashes it is, nothing to verify a token with.
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{32}$`
	Token string `json:"token"`

	// requestedAt is when the auth endpoint received the request.
	// +required
	RequestedAt metav1.Time `json:"requestedAt"`

	// client is the address of the client that presented the token.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Client string `json:"client,omitempty"`
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

	// lastLeakRevocation is the last leak revocation the operator acted on
	// (status.verification.leakRevocations, cleared once handled): which
	// token, when it was asked for and by which client. The Event
	// LeakRevoked says the same, for as long as Events are kept.
	// +optional
	LastLeakRevocation *LeakRevocation `json:"lastLeakRevocation,omitempty"`

	// verification holds the keyed hashes the auth endpoint verifies against.
	// +optional
	Verification *Verification `json:"verification,omitempty"`

	// granted is what the token grants (type, scopes, audience) as the
	// operator last saw the spec: a change of a live token records a
	// PermissionsChanged Event from this to the new grant.
	// +optional
	Granted *Granted `json:"granted,omitempty"`

	// restarts records the restarts of spec.rotation.restartTargets for
	// the current token; absent without restart targets.
	// +optional
	Restarts *Restarts `json:"restarts,omitempty"`

	// showOnce is the pickup of a show-once token (spec.showOnce).
	// +optional
	ShowOnce *ShowOnceStatus `json:"showOnce,omitempty"`

	// observedGeneration is the generation last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Restarts is what the operator did for spec.rotation.restartTargets.
type Restarts struct {
	// serial counts the tokens issued to replace one while restart
	// targets were set; forToken carries it.
	// +optional
	Serial int64 `json:"serial,omitempty"`

	// forToken identifies the token the targets are restarted for, as
	// "<serial>@<time it was issued, RFC 3339>": set with the token's
	// pending record, before it is written to the Secret, and written, with
	// the ApiToken's name, into each target's pod template annotation
	// tokens.apitoken.dev/restarted-for. It is never derived from the token
	// or its hash. Empty: nothing to restart (the first token).
	// +optional
	ForToken string `json:"forToken,omitempty"`

	// pending lists the targets still to restart for forToken
	// ("Deployment/api"): the spec's targets when the token was issued,
	// each removed once restarted, or found missing (a workload created
	// later starts with the current token). A target is never restarted
	// twice for one token, and one added to the spec later is not
	// restarted for a token issued before.
	// +optional
	// +listType=set
	Pending []string `json:"pending,omitempty"`
}

// ShowOnceStatus is the pickup of a show-once token. Everything in it may
// be read by whoever can read the ApiToken: the token is sealed to the
// creator's key, and the proof of pickup is sealed with it.
type ShowOnceStatus struct {
	// sealed is the token and its proof of pickup, sealed to
	// spec.showOnce.publicKey (X25519, HKDF-SHA256, AES-256-GCM, bound to
	// the ApiToken's namespace, name and UID), standard base64. It is
	// written with the token's hash in one status write, and cleared once
	// the token is picked up, when the pickup window ends, or when the
	// token is revoked.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Sealed string `json:"sealed,omitempty"`

	// pickupBy ends the pickup window: an acknowledgement seen later never
	// makes the token verify.
	// +optional
	PickupBy *metav1.Time `json:"pickupBy,omitempty"`

	// pickedUpAt is when the operator accepted the creator's proof of
	// pickup: from then on the token verifies.
	// +optional
	PickedUpAt *metav1.Time `json:"pickedUpAt,omitempty"`
}
