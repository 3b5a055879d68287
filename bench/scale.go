package main

import (
	"fmt"
	"image/color"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
)

// parseSizes reads "1k,10k,100k" (or plain numbers) into token counts.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		if f == "" {
			continue
		}
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1_000, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "m"):
			mult, f = 1_000_000, strings.TrimSuffix(f, "m")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-scale: %q is not a token count (write 1k, 10k, 100k or a number)", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

// verifyAt is Index.Lookup's ns/op for a valid token among n.
func verifyAt(n int) float64 {
	ix, probe := syntheticIndex(n)
	now := time.Now()
	br := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			if _, v := ix.Lookup(probe, now); v != authserver.Valid {
				b.Fatal(v)
			}
		}
	})
	return float64(br.NsPerOp())
}

func size(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000 && n%1_000 == 0:
		return fmt.Sprintf("%dk", n/1_000)
	}
	return strconv.Itoa(n)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func eventsSetting(on bool) string {
	if on {
		return "`--generated-events=true` (default)"
	}
	return "`--generated-events=false`"
}

// clusterReport writes sections 4 to 6 from the curve.
func clusterReport(points []point, base baseline) (string, string) {
	rss0, heap0 := base.rss, base.heap
	var md, sum strings.Builder
	events := points[0].events
	md.WriteString(`## 4. Scale: time to Active against the API server floor

At each size, ApiTokens are created by 16 concurrent clients until all are ` + "`Active`" + ` (seen through a watch), next to the API server floor measured just before: the same client writing, for each token, what the operator's path writes, directly: the ApiToken, its Secret (same labels, annotations, owner and data) and its status (same fields). Neither side goes through admission webhooks, so both pay the same admission. The operator is the real binary with ` + "`--max-concurrent-reconciles=16`" + ` and ` + eventsSetting(events) + `; up to 10k, the same wave is also run with ` + eventsSetting(!events) + `. Writes are counted from kube-apiserver's ` + "`apiserver_request_total`" + ` (Secrets and ApiTokens, Events excluded; Events separately), the rest from the operator's own metrics. Each size starts from an empty namespace, after the previous size's objects are deleted.

| tokens | floor | operator: applied → all Active | ratio to floor | writes per token | writes in 10 s idle | Events per token | reconciles per token | GETs per token | deepest queue | time per reconcile |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
`)
	row := func(label string, p point, w waveResult, idle string) {
		n := float64(p.n)
		per := 0.0
		if w.wave.reconciles > 0 {
			per = w.wave.reconcileSeconds / w.wave.reconciles * 1000
		}
		fmt.Fprintf(&md, "| %s | %v | %v | **%.2fx** | %.2f | %s | %.2f | %.2f | %.2f | %.0f | %.1fms |\n", label, p.floor.Round(time.Millisecond), w.took.Round(time.Millisecond),
			float64(w.took)/float64(p.floor), w.writesPerToken, idle, w.wave.events/n, w.wave.reconciles/n, w.wave.gets/n, w.maxQueueDepth, per)
		fmt.Fprintf(&sum, "scale %-5s %-5s floor %v ours %v (%.2fx), %.2f writes/token, %.2f events/token, %.2f reconciles/token\n", size(p.n), onOff(w.events),
			p.floor.Round(time.Millisecond), w.took.Round(time.Millisecond), float64(w.took)/float64(p.floor), w.writesPerToken, w.wave.events/n, w.wave.reconciles/n)
	}
	for _, p := range points {
		row(size(p.n), p, p.waveResult, strconv.FormatInt(p.idleWrites, 10))
		if p.other != nil {
			row(size(p.n)+", Events "+onOff(p.other.events), p, *p.other, "")
		}
	}
	md.WriteString("\nTargets: time to Active within 1.3x of the floor of the same run; exactly 2 operator writes per new token (Secret, status) and none while idle. GETs are single-object reads (the operator's reads around its cache, and this bench's 100 reads of Secrets for section 5).\n\n![The scale curve](benchmarks-scale.png)\n\n")

	md.WriteString("## 5. Propagation\n\nFrom the revoke (`spec.revoked: true`, a patch) returning to the first 401 from the operator's auth endpoint (polled every millisecond), 100 tries at each size.\n\n| tokens | p50 | p99 | max |\n| --- | --- | --- | --- |\n")
	for _, p := range points {
		fmt.Fprintf(&md, "| %s | %v | %v | %v |\n", size(p.n), pctDur(p.revoke, 0.5), pctDur(p.revoke, 0.99), pctDur(p.revoke, 1))
		fmt.Fprintf(&sum, "propagation %-5s p50 %v p99 %v\n", size(p.n), pctDur(p.revoke, 0.5), pctDur(p.revoke, 0.99))
	}
	md.WriteString("\nTarget: < 1 s at p99 (kube-apiserver's own webhook-token cache holds answers for 2 minutes by default).\n\n")

	fmt.Fprintf(&md, "## 6. Memory, restart and verification by size\n\nAfter all tokens are Active and 12 s idle: the operator's resident memory (VmRSS; per token is the growth over the empty operator's %.1f MiB) and its live heap after a forced collection (over the empty operator's %.1f MiB); envtest's kube-apiserver and etcd (cumulative over the sizes: etcd keeps its history until compaction). Restart is process start → auth endpoint `/readyz` 200 (caches synced, index built). Verify is `Index.Lookup` of a valid token among that many.\n\n| tokens | operator RSS | RSS per token | live heap per token | kube-apiserver RSS | etcd RSS | restart → ready | verify ns/op |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n", mib(rss0), mib(heap0))
	for _, p := range points {
		per := float64(p.rss-rss0) / float64(p.n) / 1024
		heap := float64(p.heap-heap0) / float64(p.n) / 1024
		fmt.Fprintf(&md, "| %s | %.1f MiB | %.2f KiB | %.2f KiB | %.0f MiB | %.0f MiB | %v | %.0f |\n", size(p.n), mib(p.rss), per, heap, mib(p.apiRSS), mib(p.etcRSS), p.ready.Round(time.Millisecond), p.verifyNs)
		fmt.Fprintf(&sum, "memory %-5s operator %.1f MiB (%.2f KiB/token RSS, %.2f KiB/token heap), apiserver %.0f MiB, etcd %.0f MiB, restart->ready %v, verify %.0f ns\n", size(p.n), mib(p.rss), per, heap, mib(p.apiRSS), mib(p.etcRSS), p.ready.Round(time.Millisecond), p.verifyNs)
	}
	fmt.Fprintf(&md, "\nAn auth-only replica (`--enable-controller=false`, as `config/auth` runs it) at the same sizes: it caches ApiTokens as what its index decides on (`authserver.IndexView`) and the salt Secret alone. Per token over the empty replica's %.1f MiB RSS and %.1f MiB live heap.\n\n| tokens | auth replica RSS | RSS per token | live heap per token | start → ready |\n| --- | --- | --- | --- | --- |\n", mib(base.authRSS), mib(base.authHeap))
	for _, p := range points {
		per := float64(p.authRSS-base.authRSS) / float64(p.n) / 1024
		heap := float64(p.authHeap-base.authHeap) / float64(p.n) / 1024
		fmt.Fprintf(&md, "| %s | %.1f MiB | %.2f KiB | %.2f KiB | %v |\n", size(p.n), mib(p.authRSS), per, heap, p.authReady.Round(time.Millisecond))
		fmt.Fprintf(&sum, "auth-only %-5s %.1f MiB (%.2f KiB/token RSS, %.2f KiB/token heap), start->ready %v\n", size(p.n), mib(p.authRSS), per, heap, p.authReady.Round(time.Millisecond))
	}
	md.WriteString("\nTargets: ≤ 4 KiB RSS per token for the operator; ready within 5 s of a restart with 10k tokens. 100k tokens are measured with `make bench SCALE=1k,10k,100k` (most of an hour here).\n")
	return md.String(), sum.String()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// plotScale draws the curve into path (PNG): time to Active next to the
// floor, and memory per token next to its target.
func plotScale(points []point, base baseline, path string) error {
	rss0, heap0 := base.rss, base.heap
	if path == "" || len(points) == 0 {
		return nil
	}
	xy := func(f func(p point) float64) plotter.XYs {
		out := make(plotter.XYs, len(points))
		for i, p := range points {
			out[i].X, out[i].Y = float64(p.n), f(p)
		}
		return out
	}
	blue, grey, red := color.RGBA{B: 200, A: 255}, color.RGBA{R: 120, G: 120, B: 120, A: 255}, color.RGBA{R: 200, A: 255}

	timePlot := newScalePlot("Time to all Active", "seconds")
	timePlot.Y.Scale, timePlot.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	if err := addLine(timePlot, "operator", xy(func(p point) float64 { return p.took.Seconds() }), blue, false); err != nil {
		return err
	}
	if err := addLine(timePlot, "API server floor", xy(func(p point) float64 { return p.floor.Seconds() }), grey, true); err != nil {
		return err
	}
	if err := addLine(timePlot, "1.3x floor (target)", xy(func(p point) float64 { return 1.3 * p.floor.Seconds() }), red, true); err != nil {
		return err
	}

	memPlot := newScalePlot("Memory per ApiToken", "KiB")
	memPlot.Y.Scale, memPlot.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	if err := addLine(memPlot, "operator RSS per token (over empty)", xy(func(p point) float64 { return float64(p.rss-rss0) / float64(p.n) / 1024 }), blue, false); err != nil {
		return err
	}
	if err := addLine(memPlot, "operator live heap per token", xy(func(p point) float64 { return float64(p.heap-heap0) / float64(p.n) / 1024 }), blue, true); err != nil {
		return err
	}
	if err := addLine(memPlot, "auth-only replica live heap per token", xy(func(p point) float64 { return float64(p.authHeap-base.authHeap) / float64(p.n) / 1024 }), color.RGBA{G: 140, A: 255}, false); err != nil {
		return err
	}
	if err := addLine(memPlot, "kube-apiserver + etcd RSS per token", xy(func(p point) float64 { return float64(p.apiRSS+p.etcRSS) / float64(p.n) / 1024 }), grey, true); err != nil {
		return err
	}
	if err := addLine(memPlot, "4 KiB (operator target)", xy(func(point) float64 { return 4 }), red, true); err != nil {
		return err
	}

	return writePlots(path, timePlot, memPlot)
}

// addLine adds pts to pl as a line with points, named in its legend.
func addLine(pl *plot.Plot, name string, pts plotter.XYs, c color.Color, dashed bool) error {
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	l.Color, s.Color = c, c
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	pl.Add(l, s)
	pl.Legend.Add(name, l, s)
	return nil
}

// newScalePlot is a plot of the scale curve: ApiTokens on a log scale.
func newScalePlot(title, y string) *plot.Plot {
	pl := plot.New()
	pl.Title.Text, pl.X.Label.Text, pl.Y.Label.Text = title, "ApiTokens", y
	pl.X.Scale, pl.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	pl.Legend.Top, pl.Legend.Left = true, true
	return pl
}

// writePlots draws the time and memory plots side by side into path (PNG).
func writePlots(path string, timePlot, memPlot *plot.Plot) error {
	const w, h = 16 * vg.Centimeter, 11 * vg.Centimeter
	img := vgimg.New(2*w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Centimeter, PadTop: vg.Millimeter * 4, PadBottom: vg.Millimeter * 4, PadLeft: vg.Millimeter * 4, PadRight: vg.Millimeter * 4}
	canvases := plot.Align([][]*plot.Plot{{timePlot, memPlot}}, tiles, dc)
	timePlot.Draw(canvases[0][0])
	memPlot.Draw(canvases[0][1])
	f, err := os.Create(path) //nolint:gosec // the -plot path
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
