// Package harness is the tiny runtime shared by the benchmark functions in
// kindling's workloads suite, on top of the kindling Go SDK. A workload
// registers its run function in init; each request sets the KINDLING_SIZE
// knob and the body, and run ends with Emit (a CGI header block and one
// JSON result line) or Fail. The same source runs as a WASI command, as a
// snapshot-restored reactor, and natively.
//
// It deliberately avoids fmt and encoding/json so that the smallest workloads
// stay small once compiled to WebAssembly.
package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	kindling "github.com/kindling-dev/kindling/sdk/go"
)

// current is the request being served (one at a time per instance).
var current *kindling.Request

// emitted and failed end a run: Emit and Fail panic with them and the
// handler registered by Register recovers.
type emitted struct{ body string }
type failed struct{ msg string }

// Register makes run the function's handler; call it from init.
func Register(workload string, run func()) {
	kindling.Handle(func(r *kindling.Request) (resp *kindling.Response, err error) {
		current = r
		defer func() {
			current = nil
			switch v := recover().(type) {
			case nil:
				err = errors.New(workload + ": finished without a result")
			case emitted:
				resp = kindling.Bytes(200, "application/json", []byte(v.body))
			case failed:
				err = errors.New(workload + ": " + v.msg)
			default:
				panic(v)
			}
		}()
		run()
		return nil, nil
	})
}

// Main serves one request as a command; call it from main.
func Main() { kindling.Main() }

// SizeEnv is the environment variable holding the size knob.
const SizeEnv = "KINDLING_SIZE"

// Size returns the problem size selected by KINDLING_SIZE: small (the
// default, also used when the variable is unset or empty), medium or large
// map to the given values, and a positive decimal integer is used as is. Any
// other value is reported with Fail on behalf of workload.
func Size(workload string, small, medium, large int) int {
	switch v := strings.ToLower(strings.TrimSpace(current.Getenv(SizeEnv))); v {
	case "", "small":
		return small
	case "medium":
		return medium
	case "large":
		return large
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			Fail(workload, "invalid "+SizeEnv+" "+strconv.Quote(v)+": want small, medium, large or a positive integer")
		}
		return n
	}
}

// Body returns the request body; it may be empty.
func Body(workload string) []byte { return current.Body }

// Digest returns the lowercase hex SHA-256 digest of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Emit ends the run with a response carrying result.
func Emit(workload, result string) {
	var b strings.Builder
	b.WriteString(`{"workload":`)
	writeJSONString(&b, workload)
	b.WriteString(`,"result":`)
	writeJSONString(&b, result)
	b.WriteString("}\n")
	panic(emitted{b.String()})
}

// Fail ends the run with a failure: msg goes to stderr and the invocation
// exits with status 1.
func Fail(workload, msg string) { panic(failed{msg}) }

// writeJSONString writes s as a JSON string literal. Non-ASCII UTF-8 passes
// through unchanged, which JSON allows.
func writeJSONString(b *strings.Builder, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
