package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestServeExec(t *testing.T) {
	testServeExec(t, &Exec{Path: "/bin/sh", Args: []string{"-c"}, Env: []string{"BASE=1"}})
}

// With a Reaper, as when the agent is PID 1, every outcome is the same:
// the reaper hands the function's status to its request.
func TestServeExec_Reaper(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	testServeExec(t, &Exec{Path: "sh", Args: []string{"-c"}, Env: []string{"BASE=1"}, Reaper: r})
}

func testServeExec(t *testing.T, run *Exec) {
	daemon, guest := net.Pipe()
	defer daemon.Close()
	go Serve(context.Background(), guest, run)
	if err := WaitReady(daemon); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		req      Request
		stdout   string
		stderr   string
		exit     int
		signal   bool
		timedOut bool
	}{
		{"echo stdin and env", Request{Args: []string{`cat; echo " $BASE $EXTRA"`}, Env: []string{"EXTRA=x"}, Stdin: []byte("body")}, "body 1 x\n", "", 0, false, false},
		{"exit code and stderr", Request{Args: []string{"echo oops >&2; exit 3"}}, "", "oops\n", 3, false, false},
		{"killed by signal", Request{Args: []string{"kill -9 $$"}}, "", "", -1, true, false},
		{"timeout kills the group", Request{Args: []string{"sleep 5 & sleep 5"}, TimeoutMs: 100}, "", "", -1, true, true},
		{"request env overrides", Request{Args: []string{`echo $BASE`}, Env: []string{"BASE=2"}}, "2\n", "", 0, false, false},
		{"exit at once, body unread", Request{Args: []string{"exit 4"}, Stdin: make([]byte, 256<<10)}, "", "", 4, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := Call(daemon, &tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.Stdout) != tc.stdout || string(resp.Stderr) != tc.stderr || resp.ExitCode != tc.exit ||
				(resp.Signal != "") != tc.signal || resp.TimedOut != tc.timedOut {
				t.Fatalf("got %+v (stdout %q stderr %q)", resp, resp.Stdout, resp.Stderr)
			}
		})
	}
}

// A deadline that passed before the function started is reported as a
// timeout, not as an error of the agent.
func TestExec_DeadlinePassedBeforeStart(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	resp := (&Exec{Path: "/bin/sh", Args: []string{"-c", "sleep 5"}}).Run(ctx, &Request{})
	if !resp.TimedOut || resp.Error != "" || resp.Signal == "" {
		t.Fatalf("got %+v, want a timed-out, killed function", resp)
	}
}

func TestExec_NoSuchFunction(t *testing.T) {
	resp := (&Exec{Path: "/nonexistent/function"}).Run(context.Background(), &Request{})
	if resp.ExitCode != -1 || !strings.Contains(resp.Error, "no such file") {
		t.Fatalf("got %+v", resp)
	}
}

// TestReaper_Hammer starts many short processes at once through one
// Reaper: each status reaches its own starter, none is lost to the loop.
func TestReaper_Hammer(t *testing.T) {
	r := NewReaper()
	defer r.Close()
	const n = 32
	errs := make(chan error, n)
	for i := range n {
		go func() {
			p, status, err := r.Start("/bin/sh", []string{"sh", "-c", "exit " + strconv.Itoa(i%7)}, &os.ProcAttr{})
			if err != nil {
				errs <- err
				return
			}
			p.Release()
			if ws := <-status; ws.ExitStatus() != i%7 {
				errs <- fmt.Errorf("process %d: exit %d, want %d", i, ws.ExitStatus(), i%7)
				return
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestMessages_Errors(t *testing.T) {
	var v Response
	if err := ReadMessage(strings.NewReader("\xff\xff\xff\xff"), &v); err == nil {
		t.Error("oversize length accepted")
	}
	if err := ReadMessage(strings.NewReader("\x00\x00\x00\x05{bad"), &v); err == nil {
		t.Error("short message accepted")
	}
	if err := WaitReady(strings.NewReader("x")); err == nil {
		t.Error("wrong readiness byte accepted")
	}
}
