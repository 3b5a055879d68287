package v1alpha1

// Condition types.
const (
	// ConditionReady is True while the Secret holds a token that verifies.
	ConditionReady = "Ready"
	// ConditionExpiringSoon is True when a finite token is close to expiry.
	ConditionExpiringSoon = "ExpiringSoon"
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
