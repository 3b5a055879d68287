// Command echo is the cluster suite's backend (test/cluster): an HTTP server
// that answers every request with 200 and a JSON echo of its method, path
// and headers, so a test sees what a proxy forwarded.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"time"
)

func main() {
	addr := flag.String("listen", ":8080", "the address to serve on")
	flag.Parse()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method,
			"path":   r.URL.RequestURI(),
			"host":   r.Host,
			"header": r.Header,
		})
	})
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("Serving on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}
