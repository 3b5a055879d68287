package v1alpha1

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
	// DataSealAnnotation on the Secret is "<fingerprint>.<MAC>": the
	// fingerprint of what secretTemplate.data rendered (the keys, their
	// formats and the token's identity) and a MAC, under the operator's
	// salt, over it, the token and every other data key, so that a rendered
	// key edited, added or removed by someone is seen and written back.
	DataSealAnnotation = "tokens.apitoken.dev/data-seal"
	// RestartedForAnnotation on the pod template of a restart target
	// (spec.rotation.restartTargets) is "<ApiToken name>/<status.restarts.forToken>":
	// written, as `kubectl rollout restart` writes
	// kubectl.kubernetes.io/restartedAt, after a new token reached the
	// Secret, it rolls the workload's pods onto the new token.
	RestartedForAnnotation = "tokens.apitoken.dev/restarted-for"
	// PickedUpAnnotation on a show-once ApiToken is its creator's proof of
	// pickup, opened from status.showOnce.sealed with the private key: the
	// operator compares it, in constant time, with the proof it sealed, and
	// only then does the token verify.
	PickedUpAnnotation = "tokens.apitoken.dev/picked-up"
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
