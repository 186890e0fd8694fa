package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/internal/testmodules"
)

func waitDone(t *testing.T, h *harness, id string) api.Invocation {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		inv, err := h.c.Invocation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if inv.Status == api.StatusSucceeded || inv.Status == api.StatusFailed {
			return inv
		}
		if time.Now().After(deadline) {
			t.Fatalf("invocation %s still %s", id, inv.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An asynchronous invocation answers 202 at once; its output can be
// followed while it runs, and its result fetched when it is done.
func TestAsyncInvocationAndFollow(t *testing.T) {
	h := start(t, t.TempDir())
	h.mustDeploy("sleeper", testmodules.BuildGo(t, "internal/testmodules/sleeper"), api.FunctionSpec{MemoryMB: 64})
	req := mustReq(t, "POST", h.srv.URL+"/v1/functions/sleeper/invoke", "500ms")
	req.Header.Set("Prefer", "respond-async")
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var accepted api.Invocation
	json.NewDecoder(resp.Body).Decode(&accepted)
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get("Location") != "/v1/invocations/"+accepted.ID || accepted.Status != api.StatusQueued {
		t.Fatalf("async answer: %d %v %+v", resp.StatusCode, resp.Header, accepted)
	}
	if time.Since(t0) > 400*time.Millisecond {
		t.Errorf("202 took %v: the request waited for the function", time.Since(t0))
	}
	// Follow the running invocation's output until it ends.
	follow, err := http.Get(h.srv.URL + "/v1/invocations/" + accepted.ID + "/logs?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	var ticks int
	sc := bufio.NewScanner(follow.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "tick ") {
			ticks++
		}
	}
	follow.Body.Close()
	if ticks < 3 {
		t.Errorf("followed %d tick lines, want the function's progress", ticks)
	}
	inv := waitDone(t, h, accepted.ID)
	if inv.Status != api.StatusSucceeded || inv.Response == nil || string(inv.Response.Body) != "slept 500ms" || !inv.Async {
		t.Fatalf("result %+v", inv)
	}
	// The finished invocation's logs are still there, without following.
	logs, err := http.Get(h.srv.URL + "/v1/invocations/" + accepted.ID + "/logs")
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Body.Close()
	b := new(strings.Builder)
	bufio.NewReader(logs.Body).WriteTo(b)
	if !strings.Contains(b.String(), "tick 1\n") {
		t.Fatalf("logs of a finished invocation: %q", b.String())
	}
}

func TestAsync_UnknownFunction(t *testing.T) {
	h := start(t, t.TempDir())
	resp, err := http.Post(h.srv.URL+"/v1/functions/nope/invoke?async=true", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkErrorBody(t, resp, 404, "not_found")
}

// Following a function's logs streams lines as invocations write them.
func TestFollowFunctionLogs(t *testing.T) {
	h := start(t, t.TempDir())
	h.mustDeploy("exit", testmodules.Exit, api.FunctionSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/v1/functions/exit/logs?follow=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	h.c.Invoke(context.Background(), "exit", nil)
	select {
	case l := <-lines:
		if !strings.HasSuffix(l, "bad request") {
			t.Fatalf("followed line %q", l)
		}
	case <-ctx.Done():
		t.Fatal("no line arrived while following")
	}
}
