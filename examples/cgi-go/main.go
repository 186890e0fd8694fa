// Command cgi-go shows the CGI/WAGI response contract: it answers with a
// header block (Status, Content-Type, a custom header), then a JSON
// description of the request it received.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type request struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers"`
}

func main() {
	body, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "read body:", err)
		os.Exit(1)
	}
	req := request{
		Method:  os.Getenv("REQUEST_METHOD"),
		Path:    os.Getenv("PATH_INFO"),
		Query:   os.Getenv("QUERY_STRING"),
		Body:    string(body),
		Headers: map[string]string{},
	}
	env := os.Environ()
	sort.Strings(env)
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "HTTP_") {
			req.Headers[k] = v
		}
	}
	fmt.Fprintf(os.Stderr, "cgi-go: %s %s (%d bytes)\n", req.Method, req.Path, len(body))
	status := "200 OK"
	if req.Method == "POST" {
		status = "201 Created"
	}
	fmt.Printf("Status: %s\r\nContent-Type: application/json\r\nX-Powered-By: kindling\r\n\r\n", status)
	out, _ := json.MarshalIndent(req, "", "  ")
	fmt.Println(string(out))
}
