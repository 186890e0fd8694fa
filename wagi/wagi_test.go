package wagi

import (
	"net/http"
	"slices"
	"testing"
)

func TestParseOutput(t *testing.T) {
	tests := []struct {
		name       string
		out        string
		wantStatus int
		wantHeader map[string]string
		wantBody   string
	}{
		{"plain", "hello\n", 200, nil, "hello\n"},
		{"empty", "", 200, nil, ""},
		{"content type", "Content-Type: text/html\n\n<p>hi</p>", 200, map[string]string{"Content-Type": "text/html"}, "<p>hi</p>"},
		{"status and crlf", "Status: 201 Created\r\nX-Id: 7\r\nContent-Type: text/plain\r\n\r\nmade", 201, map[string]string{"X-Id": "7"}, "made"},
		{"location", "Location: /there\n\n", 302, map[string]string{"Location": "/there"}, ""},
		{"colon in body is not a header", "note: this is text\n\nmore", 200, nil, "note: this is text\n\nmore"},
		{"blank line but no header", "line one\n\nline two", 200, nil, "line one\n\nline two"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseOutput([]byte(tc.out))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tc.wantStatus || string(r.Body) != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", r.Status, r.Body, tc.wantStatus, tc.wantBody)
			}
			for k, v := range tc.wantHeader {
				if r.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, r.Header.Get(k), v)
				}
			}
			if r.Header.Get("Status") != "" {
				t.Error("Status header leaked into the response headers")
			}
		})
	}
}

func TestParseOutput_BadStatus(t *testing.T) {
	if _, err := ParseOutput([]byte("Status: abc\n\n")); err == nil {
		t.Fatal("want error for non-numeric Status")
	}
}

func TestEnv(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-Id", "abc")
	h.Set("Authorization", "secret")
	env := Env(Request{Method: "POST", Path: "/a/b", Query: "x=1", Header: h, ContentLen: 12,
		Host: "localhost:8080", RemoteAddr: "127.0.0.1:5555", ScriptName: "/fn/f"})
	for _, want := range []string{
		"REQUEST_METHOD=POST", "PATH_INFO=/a/b", "QUERY_STRING=x=1", "CONTENT_TYPE=application/json",
		"CONTENT_LENGTH=12", "HTTP_X_REQUEST_ID=abc", "SERVER_NAME=localhost", "SERVER_PORT=8080",
		"REMOTE_ADDR=127.0.0.1", "SCRIPT_NAME=/fn/f", "HTTP_HOST=localhost:8080",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("env lacks %q: %v", want, env)
		}
	}
	for _, kv := range env {
		if kv == "HTTP_AUTHORIZATION=secret" {
			t.Error("Authorization must not be passed to the function")
		}
	}
}

func FuzzParseOutput(f *testing.F) {
	f.Add([]byte("Content-Type: text/plain\n\nbody"))
	f.Add([]byte("Status: 404\r\n\r\n"))
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseOutput(b)
		if err != nil {
			return
		}
		if r.Status < 100 || r.Status > 999 {
			t.Fatalf("status %d out of range", r.Status)
		}
		if len(r.Body) > len(b) {
			t.Fatal("body longer than output")
		}
	})
}
