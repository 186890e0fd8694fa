// Package harness is the tiny runtime shared by the benchmark functions in
// kindling's workloads suite. It implements the function contract: it reads
// the KINDLING_SIZE knob, the request body on stdin, and writes a CGI header
// block followed by a single JSON result line to stdout.
//
// It deliberately avoids fmt and encoding/json so that the smallest workloads
// stay small once compiled to WebAssembly.
package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"strconv"
	"strings"
)

// SizeEnv is the environment variable holding the size knob.
const SizeEnv = "KINDLING_SIZE"

// Size returns the problem size selected by KINDLING_SIZE: small (the
// default, also used when the variable is unset or empty), medium or large
// map to the given values, and a positive decimal integer is used as is. Any
// other value is reported with Fail on behalf of workload.
func Size(workload string, small, medium, large int) int {
	switch v := strings.ToLower(strings.TrimSpace(os.Getenv(SizeEnv))); v {
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

// Body returns the request body read from stdin; it may be empty.
func Body(workload string) []byte {
	b, err := io.ReadAll(os.Stdin)
	if err != nil {
		Fail(workload, "reading request body: "+err.Error())
	}
	return b
}

// Digest returns the lowercase hex SHA-256 digest of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Emit writes the CGI response carrying result and exits successfully.
func Emit(workload, result string) {
	var b strings.Builder
	b.WriteString("Content-Type: application/json\n\n")
	b.WriteString(`{"workload":`)
	writeJSONString(&b, workload)
	b.WriteString(`,"result":`)
	writeJSONString(&b, result)
	b.WriteString("}\n")
	if _, err := io.WriteString(os.Stdout, b.String()); err != nil {
		Fail(workload, "writing response: "+err.Error())
	}
	os.Exit(0)
}

// Fail reports a failure of workload on stderr and exits with status 1.
func Fail(workload, msg string) {
	io.WriteString(os.Stderr, workload+": "+msg+"\n")
	os.Exit(1)
}

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
