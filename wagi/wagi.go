// Package wagi implements kindling's function contract, compatible with
// CGI (RFC 3875) as WAGI applies it to WebAssembly: the request body on
// stdin; method, path, query, content type and length, and every request
// header as HTTP_* in the environment; the response on stdout, optionally
// preceded by a CGI header block whose Status and headers become the HTTP
// response's.
//
// The contract is the same for every sandbox; see docs/contract.md.
package wagi

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
)

// Request is the HTTP side of an invocation.
type Request struct {
	Method      string
	Path        string // PATH_INFO: the path below the function's route
	Query       string // raw query, without '?'
	Header      http.Header
	ContentLen  int64
	RemoteAddr  string
	Host        string
	ScriptName  string // the route prefix of the function, e.g. /fn/hello
	FunctionEnv map[string]string
}

// Env returns the CGI environment for r as "K=V" pairs, in a stable order.
func Env(r Request) []string {
	env := map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_SOFTWARE":   "kindling",
		"REQUEST_METHOD":    r.Method,
		"PATH_INFO":         r.Path,
		"QUERY_STRING":      r.Query,
		"SCRIPT_NAME":       r.ScriptName,
		"CONTENT_LENGTH":    strconv.FormatInt(r.ContentLen, 10),
		"CONTENT_TYPE":      r.Header.Get("Content-Type"),
	}
	if r.Host != "" {
		host, port, ok := strings.Cut(r.Host, ":")
		env["SERVER_NAME"] = host
		env["HTTP_HOST"] = r.Host
		if ok {
			env["SERVER_PORT"] = port
		}
	}
	if r.RemoteAddr != "" {
		host, _, _ := strings.Cut(r.RemoteAddr, ":")
		if strings.HasPrefix(r.RemoteAddr, "[") {
			host = r.RemoteAddr[1:strings.Index(r.RemoteAddr, "]")]
		}
		env["REMOTE_ADDR"] = host
	}
	for k, vs := range r.Header {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Content-Type" || ck == "Content-Length" || ck == "Authorization" || ck == "Proxy" {
			continue // given above, or withheld as CGI requires
		}
		env["HTTP_"+strings.ToUpper(strings.ReplaceAll(ck, "-", "_"))] = strings.Join(vs, ", ")
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Response is a function's output, split into status, headers and body.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// maxHeaderBlock bounds how far ParseOutput looks for a CGI header block.
const maxHeaderBlock = 64 << 10

// ParseOutput splits stdout into a response. If stdout starts with a CGI
// header block (lines "Name: value", at least one of them Content-Type,
// Status or Location, ended by a blank line) its headers are applied;
// otherwise the whole output is the body, served with status 200.
func ParseOutput(stdout []byte) (Response, error) {
	resp := Response{Status: http.StatusOK, Header: http.Header{}, Body: stdout}
	end, sepLen := headerEnd(stdout)
	if end < 0 {
		return resp, nil
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(stdout[:end+sepLen])))
	h, err := tp.ReadMIMEHeader()
	if err != nil || !isCGIHeader(h) {
		return resp, nil // not a header block: plain output
	}
	resp.Body = stdout[end+sepLen:]
	if s := h.Get("Status"); s != "" {
		code, err := strconv.Atoi(strings.Fields(s)[0])
		if err != nil || code < 100 || code > 999 {
			return resp, fmt.Errorf("invalid CGI Status header %q", s)
		}
		resp.Status = code
		h.Del("Status")
	} else if h.Get("Location") != "" {
		resp.Status = http.StatusFound
	}
	resp.Header = http.Header(h)
	return resp, nil
}

// headerEnd finds the blank line that ends a header block: the index where
// it starts and the length of the separator, or -1.
func headerEnd(b []byte) (int, int) {
	if len(b) > maxHeaderBlock {
		b = b[:maxHeaderBlock]
	}
	crlf := bytes.Index(b, []byte("\r\n\r\n"))
	lf := bytes.Index(b, []byte("\n\n"))
	switch {
	case crlf >= 0 && (lf < 0 || crlf < lf):
		return crlf, 4
	case lf >= 0:
		return lf, 2
	}
	return -1, 0
}

func isCGIHeader(h textproto.MIMEHeader) bool {
	if len(h) == 0 {
		return false
	}
	return h.Get("Content-Type") != "" || h.Get("Status") != "" || h.Get("Location") != ""
}
