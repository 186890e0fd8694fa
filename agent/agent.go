// Package agent is the small program kindling runs inside an isolated
// sandbox — a container or a microVM — and the wire protocol the daemon
// speaks to it. The agent signals readiness once, then serves invocations
// one at a time under the function contract (docs/contract.md): it runs the
// function as a process with the request's environment, feeds it the body
// on stdin, and returns its stdout, stderr and exit code.
//
// The protocol runs over any byte stream (a unix socket, a virtio-serial
// port). After connecting, the agent writes the single byte Ready. Then
// each message is a 4-byte big-endian length followed by that many bytes of
// JSON: a Request from the daemon, a Response from the agent.
package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// Ready is the byte the agent writes when it can serve requests. The
// daemon blocks reading it: readiness is signalled, never polled.
const Ready byte = 'K'

// MaxMessage bounds a message's size.
const MaxMessage = 64 << 20

// Request is one invocation.
type Request struct {
	Env       []string `json:"env,omitempty"`
	Args      []string `json:"args,omitempty"`
	Stdin     []byte   `json:"stdin,omitempty"`
	TimeoutMs int      `json:"timeoutMs,omitempty"`
}

// Response is its outcome. ExitCode is -1 with Signal set when the
// function was killed; Error reports a failure of the agent itself (the
// function could not be started).
type Response struct {
	Stdout   []byte `json:"stdout,omitempty"`
	Stderr   []byte `json:"stderr,omitempty"`
	ExitCode int    `json:"exitCode"`
	Signal   string `json:"signal,omitempty"`
	TimedOut bool   `json:"timedOut,omitempty"`
	Error    string `json:"error,omitempty"`
}

// WriteMessage writes one length-prefixed JSON message.
func WriteMessage(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("agent: encode: %w", err)
	}
	if len(b) > MaxMessage {
		return fmt.Errorf("agent: message of %d bytes exceeds %d", len(b), MaxMessage)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		return fmt.Errorf("agent: write: %w", err)
	}
	return nil
}

// ReadMessage reads one length-prefixed JSON message into v.
func ReadMessage(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxMessage {
		return fmt.Errorf("agent: message of %d bytes exceeds %d", n, MaxMessage)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("agent: short message: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("agent: decode: %w", err)
	}
	return nil
}

// WaitReady blocks until the agent on r signals readiness.
func WaitReady(r io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("agent: waiting for readiness: %w", err)
	}
	if b[0] != Ready {
		return fmt.Errorf("agent: expected readiness byte %q, got %q", Ready, b[0])
	}
	return nil
}

// Call sends one request on conn and reads its response.
func Call(conn io.ReadWriter, req *Request) (*Response, error) {
	if err := WriteMessage(conn, req); err != nil {
		return nil, err
	}
	var resp Response
	if err := ReadMessage(conn, &resp); err != nil {
		return nil, fmt.Errorf("agent: reading response: %w", err)
	}
	return &resp, nil
}

// Runner runs one request.
type Runner interface {
	Run(ctx context.Context, req *Request) *Response
}

// Serve signals readiness on conn, then serves requests until conn closes.
func Serve(ctx context.Context, conn io.ReadWriter, run Runner) error {
	if _, err := conn.Write([]byte{Ready}); err != nil {
		return fmt.Errorf("agent: signal readiness: %w", err)
	}
	br := bufio.NewReader(conn)
	for {
		var req Request
		if err := ReadMessage(br, &req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := WriteMessage(conn, run.Run(ctx, &req)); err != nil {
			return err
		}
	}
}

// Exec runs the function as a new process per request.
type Exec struct {
	Path string   // the function's executable
	Args []string // arguments before the request's
	Env  []string // environment before the request's
	Dir  string
}

// Run implements Runner.
func (e *Exec) Run(ctx context.Context, req *Request) *Response {
	if req.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, e.Path, append(append([]string(nil), e.Args...), req.Args...)...)
	cmd.Env = append(append([]string(nil), e.Env...), req.Env...)
	cmd.Dir = e.Dir
	cmd.Stdin = bytes.NewReader(req.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Kill the whole process group on timeout: a function's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	resp := &Response{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		resp.ExitCode = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			resp.ExitCode, resp.Signal = -1, ws.Signal().String()
		}
		resp.TimedOut = ctx.Err() != nil
	default:
		resp.ExitCode, resp.Error = -1, err.Error()
	}
	return resp
}
