package main

import (
	"bufio"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// writes returns kube-apiserver's count of write requests on Secrets and
// ApiTokens (status included).
func (cb *clusterBench) writes(ctx context.Context) (int64, error) {
	hc, err := rest.HTTPClientFor(cb.env.Config)
	if err != nil {
		return 0, err
	}
	v, err := promSumWhere(ctx, hc, strings.TrimSuffix(cb.env.Config.Host, "/")+"/metrics", "apiserver_request_total", func(line string) bool {
		if !strings.Contains(line, `resource="secrets"`) && !strings.Contains(line, `resource="apitokens"`) {
			return false
		}
		for _, verb := range []string{`verb="POST"`, `verb="PUT"`, `verb="PATCH"`, `verb="APPLY"`, `verb="DELETE"`} {
			if strings.Contains(line, verb) {
				return true
			}
		}
		return false
	})
	return int64(v), err
}

func pctDur(xs []time.Duration, p float64) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[int(p*float64(len(s)-1))].Round(100 * time.Microsecond)
}

// promSum sums, in the Prometheus text at url (fetched with hc), the
// samples of metric whose labels contain every one of match.
func promSum(ctx context.Context, hc *http.Client, url, metric string, match ...string) (float64, error) {
	return promSumWhere(ctx, hc, url, metric, func(line string) bool {
		for _, m := range match {
			if !strings.Contains(line, m) {
				return false
			}
		}
		return true
	})
}

// promSumWhere sums the samples of metric whose line keep accepts.
func promSumWhere(ctx context.Context, hc *http.Client, url, metric string, keep func(line string) bool) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total float64
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if (!strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ")) || !keep(line) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		total += v
	}
	return total, s.Err()
}

// wave is what one reconcile wave cost, from the operator's and
// kube-apiserver's own metrics.
type wave struct {
	reconciles, reconcileSeconds float64
	queueWaitSeconds             float64
	events, gets                 float64
}

// waveCounters reads the cumulative counters a wave is the difference of.
func (cb *clusterBench) waveCounters(ctx context.Context) (wave, error) {
	var w wave
	hc := &http.Client{Timeout: 10 * time.Second}
	api, err := rest.HTTPClientFor(cb.env.Config)
	if err != nil {
		return w, err
	}
	apiURL := strings.TrimSuffix(cb.env.Config.Host, "/") + "/metrics"
	for _, q := range []struct {
		into   *float64
		hc     *http.Client
		url    string
		metric string
		match  []string
	}{
		{&w.reconciles, hc, cb.metricsURL, "controller_runtime_reconcile_total", []string{`controller="apitoken"`}},
		{&w.reconcileSeconds, hc, cb.metricsURL, "controller_runtime_reconcile_time_seconds_sum", []string{`controller="apitoken"`}},
		{&w.queueWaitSeconds, hc, cb.metricsURL, "workqueue_queue_duration_seconds_sum", []string{`name="apitoken"`}},
		{&w.events, api, apiURL, "apiserver_request_total", []string{`resource="events"`, `verb="POST"`}},
		{&w.gets, api, apiURL, "apiserver_request_total", []string{`verb="GET"`, `scope="resource"`}},
	} {
		v, err := promSum(ctx, q.hc, q.url, q.metric, q.match...)
		if err != nil {
			return w, err
		}
		*q.into = v
	}
	return w, nil
}

func (w wave) minus(o wave) wave {
	return wave{reconciles: w.reconciles - o.reconciles, reconcileSeconds: w.reconcileSeconds - o.reconcileSeconds,
		queueWaitSeconds: w.queueWaitSeconds - o.queueWaitSeconds, events: w.events - o.events, gets: w.gets - o.gets}
}

// watchQueue samples the operator's work queue depth until stop is
// closed, and returns the deepest it saw.
func (cb *clusterBench) watchQueue(ctx context.Context, stop <-chan struct{}) <-chan float64 {
	out := make(chan float64, 1)
	go func() {
		hc := &http.Client{Timeout: 2 * time.Second}
		var deepest float64
		for {
			if d, err := promSum(ctx, hc, cb.metricsURL, "workqueue_depth", `name="apitoken"`); err == nil && d > deepest {
				deepest = d
			}
			select {
			case <-stop:
				out <- deepest
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return out
}
