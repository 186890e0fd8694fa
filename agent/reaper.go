package agent

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper reaps every child process of this process, as PID 1 (or a child
// subreaper, see BecomeSubreaper) must: orphaned descendants are
// re-parented to it, and a child nobody waits for stays a zombie.
//
// It is the only waiter of the process: one loop waits for any child
// (wait4(-1)) on every SIGCHLD and hands each status to whoever started
// that child through Start; statuses of other children (orphans) are
// dropped. A process started any other way (exec.Cmd.Wait, os.Process.Wait)
// would have its status stolen by the loop, so while a Reaper runs, every
// child must be started through it, as Exec does when its Reaper is set.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	sig     chan os.Signal
	done    chan struct{}
	stopped chan struct{}
	reaped  int // orphans reaped, for tests
	once    sync.Once
}

// BecomeSubreaper makes this process a child subreaper
// (prctl(PR_SET_CHILD_SUBREAPER)): orphaned descendants are re-parented to
// it instead of to PID 1. PID 1 needs not call it.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("agent: prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// NewReaper starts reaping. Close stops it.
func NewReaper() *Reaper {
	r := &Reaper{
		waiters: map[int]chan syscall.WaitStatus{},
		sig:     make(chan os.Signal, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	signal.Notify(r.sig, syscall.SIGCHLD)
	go r.loop()
	return r
}

func (r *Reaper) loop() {
	defer close(r.stopped)
	for {
		r.reapAll() // also the children that exited before the first signal
		select {
		case <-r.sig:
		case <-r.done:
			return
		}
	}
}

// reapAll reaps every child that has exited. SIGCHLDs coalesce, so one
// signal may stand for many children.
func (r *Reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited
		}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		if ok {
			delete(r.waiters, pid)
			ch <- ws // buffered
		} else {
			r.reaped++
		}
		r.mu.Unlock()
	}
}

// Start starts a process as os.StartProcess does and returns it with a
// channel that receives its wait status once it exits. The caller must not
// call the process's Wait; it may signal it and should Release it.
func (r *Reaper) Start(name string, argv []string, attr *os.ProcAttr) (*os.Process, <-chan syscall.WaitStatus, error) {
	// The lock is held from the fork until the waiter is registered: a
	// child that exits at once is reaped by the loop, which then waits
	// for the lock and finds its waiter.
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[p.Pid] = ch
	return p, ch, nil
}

// Orphans returns how many children not started through Start the Reaper
// has reaped.
func (r *Reaper) Orphans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped
}

// Close stops reaping. Processes started through Start and still running
// are not waited for any more.
func (r *Reaper) Close() {
	r.once.Do(func() {
		signal.Stop(r.sig)
		close(r.done)
		<-r.stopped
	})
}
