package kindling

import (
	"bytes"
	"testing"
)

func TestReadRequestWriteResponse(t *testing.T) {
	var env envList
	for _, kv := range []string{"REQUEST_METHOD=GET", "REQUEST_METHOD=POST", "PATH_INFO=/a", "QUERY_STRING=q=1",
		"HTTP_X_TRACE_ID=t", "CONTENT_TYPE=text/plain", "GREETING=hi", "NOVALUE"} {
		env = env.add(kv)
	}
	r := newRequest([]byte("body"), env)
	if r.Method != "POST" || r.Path != "/a" || r.Query != "q=1" || string(r.Body) != "body" ||
		r.Header["X-Trace-Id"] != "t" || r.Header["Content-Type"] != "text/plain" || r.Getenv("GREETING") != "hi" {
		t.Fatalf("request = %+v", r)
	}
	var out bytes.Buffer
	if err := writeResponse(&out, Text(201, "made")); err != nil {
		t.Fatal(err)
	}
	want := "Status: 201\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nmade"
	if out.String() != want {
		t.Fatalf("response %q, want %q", out.String(), want)
	}
}

func TestParseEnvFrame(t *testing.T) {
	env, body, err := parseEnvFrame([]byte("KINDLING/1 12\nA=1\x00B=two=2\x00payload"))
	if err != nil || env.get("A") != "1" || env.get("B") != "two=2" || env.get("C") != "" || string(body) != "payload" {
		t.Fatalf("env %v body %q err %v", env, body, err)
	}
	for _, bad := range []string{"", "payload", "KINDLING/1 x\n", "KINDLING/1 99\nA=1\x00"} {
		if _, _, err := parseEnvFrame([]byte(bad)); err == nil {
			t.Errorf("parseEnvFrame(%q) accepted", bad)
		}
	}
}

func TestCanonical(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"X_TRACE_ID", "X-Trace-Id"},
		{"USER_AGENT", "User-Agent"},
		{"ACCEPT", "Accept"},
		{"x_lower", "X-Lower"},
		{"A__B", "A--B"},
		{"_LEADING", "-Leading"},
		{"DNT1", "Dnt1"},
		{"", ""},
	} {
		if got := canonical(c.in); got != c.want {
			t.Errorf("canonical(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestWriteResponse_LargeBody covers the body written on its own, after
// the header block, when it is too large to inline.
func TestWriteResponse_LargeBody(t *testing.T) {
	for _, n := range []int{0, inlineBody, inlineBody + 1, 3 * inlineBody} {
		body := bytes.Repeat([]byte{'x'}, n)
		var out bytes.Buffer
		if err := writeResponse(&out, Bytes(200, "application/x-test", body)); err != nil {
			t.Fatal(err)
		}
		head := "Status: 200\r\nContent-Type: application/x-test\r\n\r\n"
		if got := out.String(); got != head+string(body) {
			t.Errorf("%d-byte body: wrote %d bytes, want %d", n, len(got), len(head)+n)
		}
	}
}
