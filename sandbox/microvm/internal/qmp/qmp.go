// Package qmp is a small client for the QEMU Machine Protocol: JSON
// commands and replies, and asynchronous events, over one stream (a unix
// socket or a socketpair handed to QEMU with -chardev socket,fd=N).
//
// A Client reads the greeting, negotiates capabilities, then runs commands
// one at a time (QMP answers in order) while a reader goroutine routes
// replies to the waiting command and events to subscribers.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Error is a command's error reply.
type Error struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// Event is an asynchronous event, such as {"event":"MIGRATION","data":{...}}.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// Client talks to one QEMU monitor. It is safe for concurrent use;
// commands are serialized.
type Client struct {
	conn net.Conn

	cmdMu sync.Mutex // one command in flight

	mu      sync.Mutex
	reply   chan message // the waiting command's reply
	subs    map[int]subscription
	nextSub int
	err     error         // why the reader stopped
	done    chan struct{} // closed when the reader stops
}

type subscription struct {
	name string
	ch   chan Event
}

type message struct {
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	QMP    json.RawMessage `json:"QMP"`
}

// New reads QEMU's greeting from conn, enters command mode
// (qmp_capabilities) and returns the client. ctx bounds the handshake.
func New(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{conn: conn, subs: map[int]subscription{}, done: make(chan struct{})}
	greeting := make(chan error, 1)
	go c.read(greeting)
	select {
	case err := <-greeting:
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("qmp: greeting: %w", err)
		}
	case <-ctx.Done():
		conn.Close()
		return nil, fmt.Errorf("qmp: greeting: %w", ctx.Err())
	}
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) read(greeting chan<- error) {
	dec := json.NewDecoder(bufio.NewReader(c.conn))
	var err error
	for first := true; ; first = false {
		var m message
		if err = dec.Decode(&m); err != nil {
			break
		}
		if first {
			if m.QMP == nil {
				err = errors.New("no QMP greeting")
				break
			}
			greeting <- nil
			continue
		}
		c.dispatch(m)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = fmt.Errorf("qmp: monitor closed: %w", io.EOF)
	}
	select {
	case greeting <- err:
	default:
	}
	c.mu.Lock()
	c.err = err
	for id, s := range c.subs {
		close(s.ch)
		delete(c.subs, id)
	}
	c.mu.Unlock()
	close(c.done)
}

func (c *Client) dispatch(m message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.Event != "" {
		for _, s := range c.subs {
			if s.name == m.Event || s.name == "" {
				select {
				case s.ch <- Event{Name: m.Event, Data: m.Data}:
				default: // a subscriber that does not keep up loses events
				}
			}
		}
		return
	}
	if c.reply != nil {
		c.reply <- m
		c.reply = nil
	}
}

// Subscribe returns a channel receiving the events named name ("" for
// all) from now on, and a function that ends the subscription. The
// channel is closed when the monitor closes.
func (c *Client) Subscribe(name string) (<-chan Event, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan Event, 16)
	if c.err != nil {
		close(ch)
		return ch, func() {}
	}
	id := c.nextSub
	c.nextSub++
	c.subs[id] = subscription{name: name, ch: ch}
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := c.subs[id]; ok {
			delete(c.subs, id)
			close(ch)
		}
	}
}

// Execute runs command with args (nil for none) and returns its "return"
// value. An error reply is an *Error.
func (c *Client) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	return c.execute(ctx, command, args, nil)
}

// SendFD hands QEMU the open file f under name (the getfd command, with
// the descriptor attached as SCM_RIGHTS), for commands that take "fd:NAME".
// The monitor must be a unix socket.
func (c *Client) SendFD(ctx context.Context, name string, f *os.File) error {
	_, err := c.execute(ctx, "getfd", map[string]string{"fdname": name}, f)
	return err
}

func (c *Client) execute(ctx context.Context, command string, args any, fd *os.File) (json.RawMessage, error) {
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{command, args}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	reply := make(chan message, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, c.err)
	}
	c.reply = reply
	c.mu.Unlock()
	if err := c.write(append(b, '\n'), fd); err != nil {
		c.mu.Lock()
		c.reply = nil
		c.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case m := <-reply:
		if m.Error != nil {
			m.Error.Command = command
			return nil, m.Error
		}
		return m.Return, nil
	case <-c.done:
		return nil, fmt.Errorf("qmp %s: %w", command, c.err)
	case <-ctx.Done():
		// The reply may still come; the connection is unusable for the
		// next command, so close it.
		c.conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

func (c *Client) write(b []byte, fd *os.File) error {
	if fd == nil {
		_, err := c.conn.Write(b)
		return err
	}
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return errors.New("passing a descriptor needs a unix socket")
	}
	_, _, err := uc.WriteMsgUnix(b, syscall.UnixRights(int(fd.Fd())), nil)
	return err
}

// Done is closed when the monitor connection ends (QEMU exited or Close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Status is the VM's run state, from query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// QueryStatus runs query-status.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	raw, err := c.Execute(ctx, "query-status", nil)
	if err != nil {
		return Status{}, err
	}
	var s Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return Status{}, fmt.Errorf("qmp query-status: %w", err)
	}
	return s, nil
}

// Stop pauses the VM's CPUs.
func (c *Client) Stop(ctx context.Context) error {
	_, err := c.Execute(ctx, "stop", nil)
	return err
}

// Cont resumes the VM.
func (c *Client) Cont(ctx context.Context) error {
	_, err := c.Execute(ctx, "cont", nil)
	return err
}

// Quit makes QEMU exit. The monitor closes right after the reply.
func (c *Client) Quit(ctx context.Context) error {
	_, err := c.Execute(ctx, "quit", nil)
	return err
}

// SetCapabilities enables or disables migration capabilities, e.g.
// {"x-ignore-shared": true, "events": true}.
func (c *Client) SetCapabilities(ctx context.Context, caps map[string]bool) error {
	type capability struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	var list []capability
	for name, on := range caps {
		list = append(list, capability{name, on})
	}
	_, err := c.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": list})
	return err
}

// Migrate starts an outgoing migration to uri ("exec:...", "fd:NAME").
func (c *Client) Migrate(ctx context.Context, uri string) error {
	_, err := c.Execute(ctx, "migrate", map[string]any{"uri": uri})
	return err
}

// MigrateIncoming starts the incoming migration of a VM started with
// -incoming defer.
func (c *Client) MigrateIncoming(ctx context.Context, uri string) error {
	_, err := c.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri})
	return err
}

// MigrationStatus is the status of the current migration, from
// query-migrate.
type MigrationStatus struct {
	Status      string `json:"status"`
	ErrorDesc   string `json:"error-desc"`
	TotalTimeMs int64  `json:"total-time"`
}

// QueryMigrate runs query-migrate.
func (c *Client) QueryMigrate(ctx context.Context) (MigrationStatus, error) {
	raw, err := c.Execute(ctx, "query-migrate", nil)
	if err != nil {
		return MigrationStatus{}, err
	}
	var s MigrationStatus
	if err := json.Unmarshal(raw, &s); err != nil {
		return MigrationStatus{}, fmt.Errorf("qmp query-migrate: %w", err)
	}
	return s, nil
}

// WaitMigration waits, on MIGRATION events (the "events" capability must
// be on), until the migration completes or fails. events must come from
// Subscribe("MIGRATION") before the migration started.
func (c *Client) WaitMigration(ctx context.Context, events <-chan Event) error {
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("qmp: waiting for migration: %w", c.err)
			}
			var d struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return fmt.Errorf("qmp: MIGRATION event: %w", err)
			}
			switch d.Status {
			case "completed":
				return nil
			case "failed", "cancelled":
				msg := d.Status
				if s, err := c.QueryMigrate(ctx); err == nil && s.ErrorDesc != "" {
					msg += ": " + s.ErrorDesc
				}
				return fmt.Errorf("qmp: migration %s", msg)
			}
		case <-ctx.Done():
			return fmt.Errorf("qmp: waiting for migration: %w", ctx.Err())
		}
	}
}
