package server_test

import (
	"os"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kindling-dev/kindling/server"
)

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

// TestOpenAPIInSync checks that docs/openapi.yaml documents exactly the
// routes the server serves, with the same methods.
func TestOpenAPIInSync(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		if _, any := item["x-any-method"]; any {
			documented["* "+path] = true
			continue
		}
		for _, m := range httpMethods {
			if _, ok := item[m]; ok {
				documented[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	served := map[string]bool{}
	for _, r := range server.New(server.Config{}).Routes() {
		method, path, ok := strings.Cut(r, " ")
		if !ok {
			method, path = "*", r
		}
		served[method+" "+strings.ReplaceAll(path, "...}", "}")] = true
	}
	// /metrics is registered only with a metrics registry.
	served["GET /metrics"] = true
	for _, r := range sorted(served) {
		if !documented[r] {
			t.Errorf("route %s is served but not in docs/openapi.yaml", r)
		}
	}
	for _, r := range sorted(documented) {
		if !served[r] {
			t.Errorf("docs/openapi.yaml documents %s, which the server does not serve", r)
		}
	}
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
