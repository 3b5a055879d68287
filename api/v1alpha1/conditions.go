package v1alpha1

// Condition types.
const (
	// ConditionReady is True while the Secret holds a token that verifies.
	ConditionReady = "Ready"
	// ConditionExpiringSoon is True when a finite token is close to expiry.
	ConditionExpiringSoon = "ExpiringSoon"
	// ConditionTargetsRestarted says whether spec.rotation.restartTargets
	// were restarted for the current token; absent without restart
	// targets, or before a token replaced the first one.
	ConditionTargetsRestarted = "TargetsRestarted"
)

// Condition reasons; the same words are the reasons of the Events.
const (
	// ReasonPermissionsChanged (an Event only): the type, scopes or
	// audience of a live token changed.
	ReasonPermissionsChanged = "PermissionsChanged"
	// ReasonGraceEnded (an Event only): the new token was used, so the
	// previous token's grace ended before its gracePeriod
	// (spec.rotation.graceUntilNewTokenUsed).
	ReasonGraceEnded = "GraceEnded"
	// ReasonLeakRevoked: a token was presented at the auth endpoint's
	// /v1/revoke as leaked: it was revoked, and a new token issued if it
	// was the current one (status.verification.leakRevocations).
	ReasonLeakRevoked = "LeakRevoked"
	// ReasonReplacedTokenPresented (a Warning Event only, from the auth
	// endpoint): a token this ApiToken replaced (replacedHash, or the
	// previous one past its grace) or revoked was presented again, and
	// refused: it may have leaked.
	ReasonReplacedTokenPresented = "ReplacedTokenPresented"
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
	// ReasonTargetsRestarted: every restart target was restarted (or is
	// missing) for the current token.
	ReasonTargetsRestarted = "TargetsRestarted"
	// ReasonRestartTargetMissing (an Event only): a restart target does
	// not exist; it is not restarted for this token (a workload created
	// later starts with it).
	ReasonRestartTargetMissing = "RestartTargetMissing"
	// ReasonRestartFailed: a restart target could not be patched (the
	// operator was not granted the opt-in RBAC, or the API server refused);
	// the token is delivered regardless, and the restart retried later.
	ReasonRestartFailed = "RestartFailed"
	// ReasonPickupPending: a show-once token is sealed in
	// status.showOnce.sealed and waits for its creator to pick it up; it
	// does not verify yet.
	ReasonPickupPending = "PickupPending"
	// ReasonPickedUp (an Event): the creator of a show-once token picked
	// it up with its proof; it verifies from now on.
	ReasonPickedUp = "PickedUp"
	// ReasonPickupRefused (an Event): the acknowledgement on a show-once
	// token is not the proof sealed with it; the token was not picked up.
	ReasonPickupRefused = "PickupRefused"
	// ReasonPickupExpired: nobody picked a show-once token up within its
	// pickup window; it never verifies.
	ReasonPickupExpired = "PickupExpired"
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

// Policy conditions and reasons (ApiTokenPolicy, docs/policy.md).
const (
	// ConditionPolicyCompliant (ApiToken) is False while the token breaks
	// a rule of an ApiTokenPolicy that selects its namespace; the message
	// names the policy and the field. The token keeps working.
	ConditionPolicyCompliant = "PolicyCompliant"
	// ConditionCompliant (ApiTokenPolicy) is False while a token of a
	// selected namespace, or a namespace's count of tokens, breaks it.
	ConditionCompliant = "Compliant"
	// ReasonPolicyViolation: the token (or, on a policy, a token or a
	// namespace) breaks a policy's rule; also the Warning Event's reason.
	ReasonPolicyViolation = "PolicyViolation"
	// ReasonCompliant: every rule is kept.
	ReasonCompliant = "Compliant"
	// ReasonPolicyUnknown: the policies or the namespace could not be
	// read; the condition says so until the next pass.
	ReasonPolicyUnknown = "PolicyUnknown"
)
