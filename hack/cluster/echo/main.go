// Command echo is the cluster suite's backend (test/cluster): an HTTP server
// that answers every request with 200 and a JSON echo of its method, path
// and headers, so a test sees what a proxy forwarded. A second listener
// (-count-listen) answers GET /count with the number of requests the first
// one served, so a test sees whether a proxy reached the backend at all.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("listen", ":8080", "the address to serve on")
	countAddr := flag.String("count-listen", ":9090", "the address that answers GET /count")
	flag.Parse()
	var served atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method,
			"path":   r.URL.RequestURI(),
			"host":   r.Host,
			"header": r.Header,
		})
	})
	count := http.NewServeMux()
	count.HandleFunc("GET /count", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, served.Load())
	})
	go func() {
		srv := &http.Server{Addr: *countAddr, Handler: count, ReadHeaderTimeout: 10 * time.Second}
		log.Fatal(srv.ListenAndServe())
	}()
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("Serving on %s (count on %s)", *addr, *countAddr)
	log.Fatal(srv.ListenAndServe())
}
