package agent

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestServeExec(t *testing.T) {
	daemon, guest := net.Pipe()
	defer daemon.Close()
	go Serve(context.Background(), guest, &Exec{Path: "/bin/sh", Args: []string{"-c"}, Env: []string{"BASE=1"}})
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
