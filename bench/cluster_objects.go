package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

func parallel(n, workers int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func (cb *clusterBench) ensureNS(ctx context.Context, ns string) error {
	err := cb.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	return nil
}

func (cb *clusterBench) createTokens(ctx context.Context, ns string, n int) error {
	if err := cb.ensureNS(ctx, ns); err != nil {
		return err
	}
	return parallel(n, 16, func(i int) error {
		return cb.c.Create(ctx, &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", i), Namespace: ns},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		})
	})
}

// floor times the writes the operator's path needs, done by a plain
// client with the same objects: create the ApiToken, create its Secret
// (same labels, annotations, owner and data size), write its status once
// (same fields the operator records).
func (cb *clusterBench) floor(ctx context.Context, n int) (time.Duration, error) {
	ns := fmt.Sprintf("floor-%d", n)
	if err := cb.ensureNS(ctx, ns); err != nil {
		return 0, err
	}
	random := func(n int) string {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	start := time.Now()
	err := parallel(n, 16, func(i int) error {
		name := fmt.Sprintf("t%d", i)
		at := &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		}
		if err := cb.c.Create(ctx, at); err != nil {
			return err
		}
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		expires := metav1.NewTime(now.Add(30 * 24 * time.Hour))
		issued := now.UTC().Format(time.RFC3339)
		tok, _ := token.Generate()
		if err := cb.c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-token", Namespace: ns,
				Labels: map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue, tokensv1alpha1.ApiTokenLabel: name},
				Annotations: map[string]string{tokensv1alpha1.IssuedAtAnnotation: issued, tokensv1alpha1.SealAnnotation: random(64),
					tokensv1alpha1.SaltIDAnnotation: "0123456789abcdef"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: tokensv1alpha1.GroupVersion.String(), Kind: "ApiToken", Name: name, UID: at.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{tokensv1alpha1.SecretTokenKey: []byte(tok)}}); err != nil {
			return err
		}
		patch := client.MergeFromWithOptions(at.DeepCopy(), client.MergeFromWithOptimisticLock{})
		at.Status = tokensv1alpha1.ApiTokenStatus{
			Phase: tokensv1alpha1.PhaseActive, ObservedGeneration: at.Generation,
			SecretRef: &tokensv1alpha1.SecretReference{Name: name + "-token"},
			IssuedAt:  &now, ExpiresAt: &expires,
			Verification: &tokensv1alpha1.Verification{Hash: random(64), SaltID: "0123456789abcdef"},
			Granted:      &tokensv1alpha1.Granted{Type: tokensv1alpha1.ReadOnly, Audience: tokensv1alpha1.ContentAPI},
			Conditions: []metav1.Condition{
				{Type: tokensv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: tokensv1alpha1.ReasonActive, ObservedGeneration: at.Generation,
					LastTransitionTime: now, Message: "Secret " + name + "-token holds a valid token"},
				{Type: tokensv1alpha1.ConditionExpiringSoon, Status: metav1.ConditionFalse, Reason: tokensv1alpha1.ReasonNotExpiringSoon, ObservedGeneration: at.Generation,
					LastTransitionTime: now, Message: "The token expires at " + expires.UTC().Format(time.RFC3339)},
			},
		}
		return cb.c.Status().Patch(ctx, at, patch)
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	// Leave nothing for the operator to reconcile.
	return took, cb.drain(ctx, ns)
}

// deleteAll deletes every object of o's kind in ns. One delete-collection
// of 100k objects outlasts kube-apiserver's request timeout; each call
// deletes what it can in time, so it is called again until one completes.
func (cb *clusterBench) deleteAll(ctx context.Context, o client.Object, ns string) error {
	var err error
	for try := 0; try < 30; try++ {
		if err = cb.c.DeleteAllOf(ctx, o, client.InNamespace(ns)); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("deleting every %T in %s: %w", o, ns, err)
}

// drain deletes the ApiTokens of ns and their Secrets (itself: the
// garbage collector of envtest's kube-controller-manager deletes about 15
// per second, at its default client QPS) and waits until they are gone, so
// that the next measurement does not pay for it.
func (cb *clusterBench) drain(ctx context.Context, ns string) error {
	for _, o := range []client.Object{&tokensv1alpha1.ApiToken{}, &corev1.Secret{}} {
		if err := cb.deleteAll(ctx, o, ns); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(20 * time.Minute)
	for time.Now().Before(deadline) {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
		if err := cb.c.List(ctx, &list, client.InNamespace(ns), client.Limit(1)); err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return nil
		}
		time.Sleep(2 * time.Second)
	}
	return fmt.Errorf("the Secrets of %s were not deleted in 20 minutes", ns)
}

func (cb *clusterBench) watchActive(ctx context.Context, ns string) (func(n int, timeout time.Duration) error, error) {
	w, err := cb.c.Watch(ctx, &tokensv1alpha1.ApiTokenList{}, client.InNamespace(ns))
	if err != nil {
		return nil, err
	}
	return func(n int, timeout time.Duration) error {
		defer func() { w.Stop() }()
		active, count := map[string]bool{}, 0
		set := func(name string, is bool) {
			switch was := active[name]; {
			case is && !was:
				count++
			case was && !is:
				count--
			}
			active[name] = is
		}
		deadline := time.After(timeout)
		for count < n {
			select {
			case ev, ok := <-w.ResultChan():
				if at, isToken := ev.Object.(*tokensv1alpha1.ApiToken); ok && isToken {
					set(at.Name, at.Status.Phase == tokensv1alpha1.PhaseActive && ev.Type != watch.Deleted)
					continue
				}
				// Ended, or an error: recount, and watch on from there.
				fmt.Fprintf(os.Stderr, "bench: the watch of %s ended (%v); resuming\n", ns, ev.Object)
				w.Stop()
				var list tokensv1alpha1.ApiTokenList
				if err := cb.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
					return err
				}
				active, count = map[string]bool{}, 0
				for i := range list.Items {
					set(list.Items[i].Name, list.Items[i].Status.Phase == tokensv1alpha1.PhaseActive)
				}
				if w, err = cb.c.Watch(ctx, &tokensv1alpha1.ApiTokenList{}, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}}); err != nil {
					return err
				}
			case <-deadline:
				return fmt.Errorf("not all %d ApiTokens in %s became Active in %v", n, ns, timeout)
			}
		}
		return nil
	}, nil
}
