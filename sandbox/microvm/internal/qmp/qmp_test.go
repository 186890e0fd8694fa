package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"
)

// fakeQEMU answers QMP like QEMU does, from a script of replies per
// command, and can emit events.
func fakeQEMU(t *testing.T, conn net.Conn, replies map[string]string, events map[string][]string) {
	t.Helper()
	go func() {
		defer conn.Close()
		conn.Write([]byte(`{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}` + "\n"))
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var cmd struct {
				Execute string `json:"execute"`
			}
			if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
				return
			}
			reply, ok := replies[cmd.Execute]
			if !ok {
				reply = `{"return": {}}`
			}
			conn.Write([]byte(reply + "\n"))
			for _, ev := range events[cmd.Execute] {
				conn.Write([]byte(ev + "\n"))
			}
			if cmd.Execute == "quit" {
				return
			}
		}
	}()
}

func TestClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, b := net.Pipe()
	fakeQEMU(t, b, map[string]string{
		"query-status": `{"return": {"running": false, "status": "paused"}}`,
		"cont":         `{"error": {"class": "GenericError", "desc": "not now"}}`,
	}, map[string][]string{
		"migrate": {
			`{"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {}}`,
			`{"event": "MIGRATION", "data": {"status": "completed"}, "timestamp": {}}`,
		},
	})
	c, err := New(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.QueryStatus(ctx)
	if err != nil || st.Status != "paused" || st.Running {
		t.Fatalf("query-status = %+v, %v", st, err)
	}
	var qerr *Error
	if err := c.Cont(ctx); !errors.As(err, &qerr) || qerr.Class != "GenericError" || qerr.Command != "cont" {
		t.Fatalf("cont = %v, want a GenericError", err)
	}
	events, stop := c.Subscribe("MIGRATION")
	defer stop()
	if err := c.Migrate(ctx, "fd:state"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitMigration(ctx, events); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the client did not notice the monitor closing")
	}
	if _, err := c.QueryStatus(ctx); err == nil {
		t.Fatal("a command on a closed monitor succeeded")
	}
}

func TestClient_MigrationFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, b := net.Pipe()
	fakeQEMU(t, b, map[string]string{
		"query-migrate": `{"return": {"status": "failed", "error-desc": "bad stream"}}`,
	}, map[string][]string{
		"migrate-incoming": {`{"event": "MIGRATION", "data": {"status": "failed"}}`},
	})
	c, err := New(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events, stop := c.Subscribe("MIGRATION")
	defer stop()
	if err := c.MigrateIncoming(ctx, "fd:6"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitMigration(ctx, events); err == nil || err.Error() != "qmp: migration failed: bad stream" {
		t.Fatalf("WaitMigration = %v", err)
	}
}

func TestClient_NoGreeting(t *testing.T) {
	a, b := net.Pipe()
	go func() { b.Write([]byte(`{"return": {}}` + "\n")); b.Close() }()
	if _, err := New(context.Background(), a); err == nil {
		t.Fatal("accepted a monitor without a greeting")
	}
}
