package function

import (
	"context"
	"fmt"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/store"
	"github.com/kindling-dev/kindling/wagi"
)

// maxAttempts bounds how often a job is started: one that was running each
// time the daemon died is given up on after this many.
const maxAttempts = 5

// InvokeAsync accepts an invocation to run in the background. The request
// is written durably before InvokeAsync returns, so it runs at least once
// even if the daemon is killed right after: pending jobs are resumed by
// ResumeJobs on the next start. The result is fetched with Invocation.
func (s *Service) InvokeAsync(ctx context.Context, name string, req Request) (api.Invocation, error) {
	if _, ok := s.lookup(name); !ok {
		return api.Invocation{}, fmt.Errorf("function %q: %w", name, errdefs.ErrNotFound)
	}
	now := time.Now().UTC()
	job := store.Job{ID: newID(), Function: name, Body: req.Body, Env: req.Env, AcceptedAt: now}
	inv := api.Invocation{ID: job.ID, Function: name, Status: api.StatusQueued, StartedAt: now, Async: true}
	if err := s.store.Enqueue(job, inv); err != nil {
		return api.Invocation{}, fmt.Errorf("accept invocation of %q: %w", name, err)
	}
	s.startLive(job.ID) // followers wait here until it runs
	s.startJob(job)
	return inv, nil
}

// ResumeJobs starts every accepted job that has not completed: those a
// previous daemon accepted and did not finish.
func (s *Service) ResumeJobs() (int, error) {
	jobs, err := s.store.PendingJobs()
	if err != nil {
		return 0, fmt.Errorf("resume jobs: %w", err)
	}
	for _, j := range jobs {
		s.startLive(j.ID)
		s.startJob(j)
	}
	return len(jobs), nil
}

// startJob runs a job in the background, at most asyncWorkers at a time.
func (s *Service) startJob(j store.Job) {
	s.jobs.Add(1)
	go func() {
		defer s.jobs.Done()
		select {
		case s.asyncSlots <- struct{}{}:
		case <-s.stopJobs:
			return // stays in the store; the next start resumes it
		}
		defer func() { <-s.asyncSlots }()
		s.runJob(j)
	}()
}

func (s *Service) runJob(j store.Job) {
	defer s.endLive(j.ID)
	j, err := s.store.StartJob(j.ID)
	if err != nil {
		s.log.Error("async job lost", "id", j.ID, "err", err)
		return
	}
	final := api.Invocation{ID: j.ID, Function: j.Function, StartedAt: time.Now().UTC(), Async: true, Attempts: j.Attempts}
	if j.Attempts > maxAttempts {
		final.Status = api.StatusFailed
		final.Error = &api.ErrorInfo{Kind: string(errdefs.KindCrash), Message: fmt.Sprintf("gave up after %d attempts that did not complete", maxAttempts)}
	} else {
		res, err := s.run(s.jobCtx, j.Function, Request{Body: j.Body, Env: j.Env}, j.ID)
		if s.jobCtx.Err() != nil {
			return // shutting down: the job stays pending and runs again on the next start
		}
		switch {
		case err != nil:
			final.Status, final.EndedAt = api.StatusFailed, time.Now().UTC()
			final.Error = &api.ErrorInfo{Kind: errdefs.KindOf(err), Message: err.Error()}
		default:
			final = res.Invocation
			final.Async, final.Attempts = true, j.Attempts
			if res.Err == nil {
				final.Response = response(res.Stdout)
			}
		}
	}
	if err := s.store.CompleteJob(final); err != nil {
		s.log.Error("async result not stored; the job will run again", "id", j.ID, "err", err)
	}
}

// response parses a function's stdout as the HTTP trigger would.
func response(stdout []byte) *api.Response {
	out, err := wagi.ParseOutput(stdout)
	if err != nil {
		return &api.Response{Status: 502, Body: []byte(err.Error())}
	}
	r := &api.Response{Status: out.Status, Body: out.Body, Headers: map[string]string{}}
	for k := range out.Header {
		r.Headers[k] = out.Header.Get(k)
	}
	return r
}
