// Package kindling is the Go SDK for kindling functions. A function is a
// handler registered in init:
//
//	package main
//
//	import kindling "github.com/kindling-dev/kindling/sdk/go"
//
//	func init() {
//		kindling.Handle(func(r *kindling.Request) (*kindling.Response, error) {
//			return kindling.Text(200, "hello, "+string(r.Body)), nil
//		})
//	}
//
//	func main() { kindling.Main() }
//
// Built with `kindling build` (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared)
// it is a reactor module: kindling runs its initialization once at deploy
// time, snapshots the initialized instance, and starts every invocation from
// that snapshot by calling the exported kindling_handle — no Go runtime
// start-up per request. Built as an ordinary command (no -buildmode), the
// same source runs the classic way: Main serves one request per process.
//
// Request data follows kindling's CGI/WAGI contract (docs/contract.md). The
// SDK reads the environment of the current request directly from WASI,
// because the Go runtime's copy of the environment is the one it saw at
// initialization — in a snapshot, that was deploy time.
package kindling

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Request is one invocation's input.
type Request struct {
	Method string
	Path   string // PATH_INFO
	Query  string // raw query string
	// Header holds the request headers, keyed in canonical form ("X-Trace").
	Header map[string]string
	Body   []byte
	env    envList
}

// Getenv returns a variable of this request's environment: the function's
// own env or a CGI variable.
func (r *Request) Getenv(key string) string { return r.env.get(key) }

// envList is a request's environment in its order. A request has a few
// dozen variables and a handler reads a few: scanning them costs the guest
// far less than building a map of them would.
type envList []envVar

type envVar struct{ key, value string }

// get returns key's value, the last one if the key repeats.
func (l envList) get(key string) string {
	for i := len(l) - 1; i >= 0; i-- {
		if l[i].key == key {
			return l[i].value
		}
	}
	return ""
}

// add appends kv ("KEY=VALUE") if it has a "=".
func (l envList) add(kv string) envList {
	if k, v, ok := strings.Cut(kv, "="); ok {
		return append(l, envVar{k, v})
	}
	return l
}

// Response is a handler's answer.
type Response struct {
	Status int
	Header map[string]string
	Body   []byte
}

// Text returns a text/plain response.
func Text(status int, body string) *Response {
	return &Response{Status: status, Header: map[string]string{"Content-Type": "text/plain; charset=utf-8"}, Body: []byte(body)}
}

// Bytes returns a response with the given content type.
func Bytes(status int, contentType string, body []byte) *Response {
	return &Response{Status: status, Header: map[string]string{"Content-Type": contentType}, Body: body}
}

// Handler serves one request. A returned error fails the invocation: its
// message goes to stderr and the invocation ends with exit code 1.
type Handler func(*Request) (*Response, error)

var handler Handler

// Handle registers the function's handler. Call it from init, so that a
// snapshot taken after initialization holds it.
func Handle(h Handler) { handler = h }

// Main serves one request when the module runs as a command; call it from
// main. (Reactor builds never run main.)
func Main() { os.Exit(serve(false)) }

// envFrameMagic starts the environment header kindling puts on a
// reactor's stdin (see sandbox/wasm.EnvFrameMagic).
const envFrameMagic = "KINDLING/1 "

// serve reads the request, runs the handler and writes the response; it
// returns the exit code. A reactor (framed) finds the request's
// environment in a header on stdin; a command in its WASI environment.
func serve(framed bool) int {
	if handler == nil {
		fmt.Fprintln(os.Stderr, "kindling: no handler registered (call kindling.Handle in init)")
		return 2
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kindling: read request:", err)
		return 1
	}
	var env envList
	if framed {
		env, in, err = parseEnvFrame(in)
	} else {
		env = environ()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kindling: read request:", err)
		return 1
	}
	req := newRequest(in, env)
	resp, err := handler(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := writeResponse(os.Stdout, resp); err != nil {
		fmt.Fprintln(os.Stderr, "kindling: write response:", err)
		return 1
	}
	return 0
}

// parseEnvFrame splits "KINDLING/1 <n>\n" + n bytes of NUL-terminated
// KEY=VALUE pairs from the body that follows.
func parseEnvFrame(in []byte) (envList, []byte, error) {
	rest, ok := strings.CutPrefix(string(in[:min(len(in), 64)]), envFrameMagic)
	if !ok {
		return nil, nil, fmt.Errorf("no %q header on stdin", strings.TrimSpace(envFrameMagic))
	}
	num, _, ok := strings.Cut(rest, "\n")
	n, err := strconv.Atoi(num)
	start := len(envFrameMagic) + len(num) + 1
	if !ok || err != nil || n < 0 || start+n > len(in) {
		return nil, nil, fmt.Errorf("malformed %q header", strings.TrimSpace(envFrameMagic))
	}
	// One copy of the block: every key and value is a substring of it.
	block := string(in[start : start+n])
	env := make(envList, 0, strings.Count(block, "\x00")+1)
	for block != "" {
		var kv string
		kv, block, _ = strings.Cut(block, "\x00")
		env = env.add(kv)
	}
	return env, in[start+n:], nil
}

// newRequest reads the CGI variables of env in one pass, a later value of
// a variable winning.
func newRequest(body []byte, env envList) *Request {
	headers := 0
	for _, e := range env {
		if strings.HasPrefix(e.key, "HTTP_") || e.key == "CONTENT_TYPE" {
			headers++
		}
	}
	r := &Request{Header: make(map[string]string, headers), Body: body, env: env}
	contentType := ""
	for _, e := range env {
		switch e.key {
		case "REQUEST_METHOD":
			r.Method = e.value
		case "PATH_INFO":
			r.Path = e.value
		case "QUERY_STRING":
			r.Query = e.value
		case "CONTENT_TYPE":
			contentType = e.value
		default:
			if name, ok := strings.CutPrefix(e.key, "HTTP_"); ok {
				r.Header[canonical(name)] = e.value
			}
		}
	}
	if contentType != "" {
		r.Header["Content-Type"] = contentType
	}
	return r
}

// canonical turns X_TRACE_ID into X-Trace-Id (ASCII, as CGI names are),
// in one allocation: it runs for every header of every request.
func canonical(name string) string {
	var b strings.Builder
	b.Grow(len(name))
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_':
			c, upper = '-', true
		case upper:
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			upper = false
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// inlineBody is the largest body written together with the header block,
// in one write: each write is a call out of the sandbox.
const inlineBody = 64 << 10

func writeResponse(w io.Writer, resp *Response) error {
	if resp == nil {
		resp = &Response{Status: 204}
	}
	status := resp.Status
	if status == 0 {
		status = 200
	}
	var b bytes.Buffer
	b.Grow(256 + min(len(resp.Body), inlineBody))
	b.WriteString("Status: ")
	b.WriteString(strconv.Itoa(status))
	b.WriteString("\r\n")
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(resp.Header[k])
		b.WriteString("\r\n")
	}
	if resp.Header["Content-Type"] == "" {
		b.WriteString("Content-Type: application/octet-stream\r\n")
	}
	b.WriteString("\r\n")
	body := resp.Body
	if len(body) <= inlineBody {
		b.Write(body)
		body = nil
	}
	if _, err := w.Write(b.Bytes()); err != nil || len(body) == 0 {
		return err
	}
	_, err := w.Write(body)
	return err
}
