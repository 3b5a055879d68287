package main

import (
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is one load run: throughput and latency percentiles.
type loadResult struct {
	rps              float64
	p50, p99, p999   time.Duration
	errors, requests int64
}

// newRequest builds the request a load run sends.
type newRequest func() *http.Request

func httpClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}, Timeout: 10 * time.Second}
}

// closedLoop runs closedLoopWith on a plain client, expecting 200s.
func closedLoop(mk newRequest, conns int, d time.Duration) loadResult {
	return closedLoopWith(httpClient(conns), mk, conns, d, http.StatusOK)
}

// closedLoopWith runs conns workers on c that each send the next request
// as soon as the previous answer arrives, for d, counting every status
// other than want as an error.
func closedLoopWith(c *http.Client, mk newRequest, conns int, d time.Duration, want int) loadResult {
	res := workers(conns, d, func() bool {
		resp, err := c.Do(mk())
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == want
	})
	c.CloseIdleConnections()
	return res
}

// workers runs n workers that each call call again as soon as it returns,
// for d, and summarizes the latencies; call reports success.
func workers(n int, d time.Duration, call func() bool) loadResult {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		errs, m  atomic.Int64
		deadline = time.Now().Add(d)
	)
	start := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<14)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				ok := call()
				local = append(local, time.Since(t0))
				m.Add(1)
				if !ok {
					errs.Add(1)
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(lat, m.Load(), errs.Load(), time.Since(start))
}

// openLoop sends requests at a fixed rate for d, whatever the answers do,
// and measures each latency from the instant the request was due, so a
// stall is charged to every request it delays (no coordinated omission).
func openLoop(mk newRequest, rate int, d time.Duration, want int) loadResult {
	c := httpClient(512)
	total := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, total)
	var errs atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	start := time.Now()
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := c.Do(mk())
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			lat[i] = time.Since(due)
			if err != nil || resp.StatusCode != want {
				errs.Add(1)
			}
		}(i, due)
	}
	wg.Wait()
	el := time.Since(start)
	c.CloseIdleConnections()
	return summarize(lat, int64(total), errs.Load(), el)
}

func summarize(lat []time.Duration, n, errs int64, el time.Duration) loadResult {
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		i := int(p * float64(len(lat)-1))
		return lat[i]
	}
	return loadResult{rps: float64(n) / el.Seconds(), p50: pct(0.50), p99: pct(0.99), p999: pct(0.999), errors: errs, requests: n}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func medianDur(xs []time.Duration) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
