// Package agent is the small program kindling runs inside an isolated
// sandbox — a container or a microVM — and the wire protocol the daemon
// speaks to it. The agent signals readiness once, then serves invocations
// one at a time under the function contract (docs/contract.md): it runs the
// function as a process with the request's environment, feeds it the body
// on stdin, and returns its stdout, stderr and exit code. As a sandbox's
// PID 1 it also reaps the orphans functions leave (Reaper).
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
	"os"
	"os/exec"
	"slices"
	"strings"
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

// Exec runs the function as a new process per request, in a process
// group of its own.
type Exec struct {
	Path string   // the function's executable
	Args []string // arguments before the request's
	Env  []string // environment before the request's
	Dir  string
	// Reaper, when set, starts the function's processes and delivers
	// their exit statuses: the agent is PID 1 or a subreaper and reaps
	// every child, orphans included. Nil waits for each process itself.
	Reaper *Reaper
}

// Run implements Runner.
func (e *Exec) Run(ctx context.Context, req *Request) *Response {
	if req.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	ws, stdout, stderr, err := e.run(ctx, req)
	resp := &Response{Stdout: stdout, Stderr: stderr}
	switch {
	case err != nil:
		resp.ExitCode, resp.Error = -1, err.Error()
	case ws.Signaled():
		resp.ExitCode, resp.Signal = -1, ws.Signal().String()
		resp.TimedOut = ctx.Err() != nil
	case ws.ExitStatus() != 0:
		resp.ExitCode = ws.ExitStatus()
		resp.TimedOut = ctx.Err() != nil
	}
	return resp
}

// run starts the function, feeds it the request's body, collects its
// output until both pipes close, and returns its wait status. At ctx's end
// it kills the function's whole process group: its children too.
func (e *Exec) run(ctx context.Context, req *Request) (syscall.WaitStatus, []byte, []byte, error) {
	path := e.Path
	if !strings.Contains(path, "/") {
		lp, err := exec.LookPath(path)
		if err != nil {
			return 0, nil, nil, err
		}
		path = lp
	}
	var files [3][2]*os.File // stdin, stdout, stderr: read and write ends
	defer func() {
		for _, f := range files {
			for _, end := range f {
				if end != nil {
					end.Close()
				}
			}
		}
	}()
	for i := range files {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, nil, nil, err
		}
		files[i] = [2]*os.File{r, w}
	}
	attr := &os.ProcAttr{
		Dir:   e.Dir,
		Env:   dedupEnv(append(append([]string(nil), e.Env...), req.Env...)),
		Files: []*os.File{files[0][0], files[1][1], files[2][1]},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	argv := append(append([]string{e.Path}, e.Args...), req.Args...)
	var (
		p      *os.Process
		status <-chan syscall.WaitStatus
		err    error
	)
	if e.Reaper != nil {
		p, status, err = e.Reaper.Start(path, argv, attr)
	} else {
		p, err = os.StartProcess(path, argv, attr)
	}
	if err != nil {
		return 0, nil, nil, err
	}
	// The child's ends belong to the child now.
	for _, end := range []**os.File{&files[0][0], &files[1][1], &files[2][1]} {
		(*end).Close()
		*end = nil
	}
	pid := p.Pid
	stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
	defer stop()

	stdin := files[0][1]
	files[0][1] = nil
	go func() {
		// A function that does not read its body gets EPIPE here: not an error.
		_, _ = stdin.Write(req.Stdin)
		stdin.Close()
	}()
	var stdout, stderr bytes.Buffer
	copied := make(chan struct{}, 2)
	for i, buf := range []*bytes.Buffer{&stdout, &stderr} {
		r := files[i+1][0]
		go func() {
			_, _ = buf.ReadFrom(r)
			copied <- struct{}{}
		}()
	}

	var ws syscall.WaitStatus
	if status != nil {
		ws = <-status
		p.Release()
	} else {
		st, err := p.Wait()
		if err != nil {
			return 0, nil, nil, err
		}
		ws = st.Sys().(syscall.WaitStatus)
	}
	// The output ends when every process holding the pipes (a child the
	// function left behind, too) has closed them. At ctx's end the group
	// is killed, which closes them, unless a process left the group
	// (setsid): after outputGrace the agent stops reading.
	outputDone := make(chan struct{})
	go func() {
		<-copied
		<-copied
		close(outputDone)
	}()
	select {
	case <-outputDone:
	case <-ctx.Done():
		select {
		case <-outputDone:
		case <-time.After(outputGrace):
			files[1][0].Close()
			files[2][0].Close()
			<-outputDone
		}
	}
	return ws, stdout.Bytes(), stderr.Bytes(), nil
}

// outputGrace is how long past a request's deadline the agent keeps
// reading output held open by processes outside the function's group.
const outputGrace = 100 * time.Millisecond

// dedupEnv keeps the last of each variable's values, as os/exec does: the
// request's environment overrides the function's.
func dedupEnv(env []string) []string {
	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(env[i], "=")
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, env[i])
	}
	slices.Reverse(out)
	return out
}
