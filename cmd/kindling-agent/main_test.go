package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/agent"
)

// The test binary runs as the agent when this variable is set.
const runAsAgent = "KINDLING_AGENT_TEST_RUN_AS_AGENT"

func TestMain(m *testing.M) {
	if os.Getenv(runAsAgent) != "" {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// startAgent runs the agent (this test binary) with args, connected to a
// socket the test listens on, and returns the connection once the agent is
// ready, and the agent's process.
func startAgent(t *testing.T, args ...string) (net.Conn, *exec.Cmd) {
	t.Helper()
	return startAgentWith(t, nil, args...)
}

// startAgentWith is startAgent with the agent's process attributes.
func startAgentWith(t *testing.T, attr *syscall.SysProcAttr, args ...string) (net.Conn, *exec.Cmd) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], append([]string{"--connect", sock}, args...)...)
	cmd.Env = append(os.Environ(), runAsAgent+"=1")
	cmd.SysProcAttr = attr
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent's stderr:\n%s", stderr.String())
		}
	})
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := agent.WaitReady(conn); err != nil {
		t.Fatal(err)
	}
	return conn, cmd
}

// TestSubreaper_ReapsOrphans runs the agent as a child subreaper (as it is
// PID 1 in a container) with a function that double-forks: its grandchild
// sleeps, is orphaned when its parent exits, is re-parented to the agent,
// and exits. The agent must reap it — no zombie stays behind — and still
// report the function's own exit code, request after request.
func TestSubreaper_ReapsOrphans(t *testing.T) {
	conn, agentCmd := startAgent(t, "--subreaper", "/bin/sh", "-c")
	agentPid := agentCmd.Process.Pid

	// The subshell starts sleep in the background, prints its pid and
	// exits: sleep is orphaned. Its output goes elsewhere so the response
	// does not wait for it.
	const script = `( sleep 0.3 </dev/null >/dev/null 2>&1 & echo $! ); exit 7`
	var orphans []int
	for i := 0; i < 3; i++ {
		resp, err := agent.Call(conn, &agent.Request{Args: []string{script}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ExitCode != 7 || resp.Signal != "" || resp.Error != "" {
			t.Fatalf("request %d: got %+v, want exit code 7", i, resp)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(resp.Stdout)))
		if err != nil {
			t.Fatalf("request %d: stdout %q: %v", i, resp.Stdout, err)
		}
		if st := procStatus(pid); st["PPid"] != strconv.Itoa(agentPid) {
			t.Fatalf("request %d: orphan %d has parent %q, want the agent %d (state %q)", i, pid, st["PPid"], agentPid, st["State"])
		}
		orphans = append(orphans, pid)
	}
	// Statuses keep reaching their requests while orphans exit around them.
	for i := 0; i < 20; i++ {
		resp, err := agent.Call(conn, &agent.Request{Args: []string{"( exit 9 & ); exit " + strconv.Itoa(i%5)}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ExitCode != i%5 {
			t.Fatalf("quick request %d: got %+v, want exit code %d", i, resp, i%5)
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range orphans {
		for {
			st := procStatus(pid)
			if st == nil || st["PPid"] != strconv.Itoa(agentPid) {
				break // reaped (or its pid already reused by an unrelated process)
			}
			if time.Now().After(deadline) {
				t.Fatalf("orphan %d of the agent is still there, state %q", pid, st["State"])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	awaitNoChildren(t, agentPid)
}

// As PID 1 of a new pid namespace, as in a container, the agent reaps
// orphans without being told to.
func TestPID1_ReapsOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a new pid namespace needs root")
	}
	conn, agentCmd := startAgentWith(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}, "/bin/sh", "-c")
	for i := 0; i < 5; i++ {
		resp, err := agent.Call(conn, &agent.Request{Args: []string{"echo $PPID; ( sleep 0.2 </dev/null >/dev/null 2>&1 & ); exit 5"}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ExitCode != 5 || strings.TrimSpace(string(resp.Stdout)) != "1" {
			t.Fatalf("request %d: got %+v (stdout %q), want exit code 5 from a child of PID 1", i, resp, resp.Stdout)
		}
	}
	awaitNoChildren(t, agentCmd.Process.Pid)
}

// awaitNoChildren waits until the process pid has no children left: the
// functions' orphans have exited and were reaped. A zombie never goes.
func awaitNoChildren(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		kids, zombies := children(pid)
		if len(kids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent still has children %v, zombies %v", kids, zombies)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Without --subreaper (and not PID 1), the agent reaps only its own
// function processes, which it still does.
func TestAgent_NoSubreaper(t *testing.T) {
	conn, _ := startAgent(t, "/bin/sh", "-c")
	resp, err := agent.Call(conn, &agent.Request{Args: []string{"cat; exit 3"}, Stdin: []byte("body")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitCode != 3 || string(resp.Stdout) != "body" {
		t.Fatalf("got %+v", resp)
	}
}

// procStatus reads /proc/PID/status as a map, nil when there is no such
// process.
func procStatus(pid int) map[string]string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	st := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

// children lists the processes whose parent is pid, and which of them
// are zombies.
func children(pid int) (all, zombies []int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st := procStatus(p)
		if st["PPid"] != strconv.Itoa(pid) {
			continue
		}
		all = append(all, p)
		if strings.HasPrefix(st["State"], "Z") {
			zombies = append(zombies, p)
		}
	}
	return all, zombies
}
