package salt

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// ReasonSaltSecretWaiting is the reason of the Warning Event Wait records
// on the salt Secret while it waits for one that someone else provides.
const ReasonSaltSecretWaiting = "SaltSecretWaiting"

// Wait loads the salt as Load does and, while the Secret cannot be loaded
// yet (a *WaitingError), tries again every interval until ctx ends. Each
// reason is logged when it first appears and then every minute, recorded
// as a Warning Event (ReasonSaltSecretWaiting) regarding the salt Secret
// when rec is set, and reported by Waiting until the salt is loaded. Any
// other error of Load is returned at once.
func (s *Store) Wait(ctx context.Context, c client.Client, env string, create bool, rec events.EventRecorder, interval time.Duration) error {
	log := logf.FromContext(ctx)
	var last string
	var logged time.Time
	defer s.setWaiting("")
	for {
		err := s.Load(ctx, c, env, create)
		var w *WaitingError
		if !errors.As(err, &w) {
			return err
		}
		s.setWaiting(w.Error())
		if w.Why != last || time.Since(logged) >= time.Minute {
			log.Info("Waiting for the salt Secret; not ready until it is loaded", "secret", w.Secret, "why", w.Why)
			logged = time.Now()
		}
		if w.Why != last && rec != nil && s.Provided {
			regarding := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: w.Secret.Namespace, Name: w.Secret.Name, UID: w.uid}}
			rec.Eventf(regarding, nil, corev1.EventTypeWarning, ReasonSaltSecretWaiting, w.action, "%s", "The operator waits for this salt Secret and is not ready: "+w.Why)
		}
		last = w.Why
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Waiting says what Wait is waiting for ("" when it is not waiting): the
// Secret and what it lacks, never the salt.
func (s *Store) Waiting() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

func (s *Store) setWaiting(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting = why
}

// NotLoadedMessage is the readiness check's message while the salt is not
// loaded: it names the Secret, and whether someone else provides it.
func (s *Store) NotLoadedMessage() string {
	if s.Provided {
		return "the salt is not loaded yet: waiting for the salt Secret " + s.ref.String() + ", which someone else provides (--salt-create=false); the log and the Secret's Events say what it lacks"
	}
	return "the salt is not loaded yet"
}
