package authserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// BenchmarkDoors is one decision through each door that is not an HTTP
// proxy endpoint (BenchmarkEndpoints): gRPC ext_authz's Check without the
// network, and a TokenReview through its handler.
func BenchmarkDoors(b *testing.B) {
	f := newFixture()
	b.Run("grpc-ext-authz", func(b *testing.B) {
		x := &ExtAuthz{Handler: f.h}
		cr := checkRequest("GET", "/api/articles/7?page=2", map[string]string{"authorization": "Bearer " + f.tokens["reader"]}, map[string]string{"namespace": "team-a"})
		b.ReportAllocs()
		for b.Loop() {
			resp, err := x.Check(context.Background(), cr)
			if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
				b.Fatal(resp, err)
			}
		}
	})
	b.Run("tokenreview", func(b *testing.B) {
		body := reviewBody("v1", f.tokens["reader"], "content-api")
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodPost, TokenReviewPath, strings.NewReader(body))
			r.Header["Content-Type"] = []string{"application/json"}
			w := httptest.NewRecorder()
			f.h.ServeTokenReview(w, r)
			if w.Code != 200 || !strings.Contains(w.Body.String(), `"authenticated":true`) {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}
