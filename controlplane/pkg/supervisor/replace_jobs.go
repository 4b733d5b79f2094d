package supervisor

import (
	"context"
	"sync"
)

// jobs runs the reaper's work on session ids: at most one goroutine per
// session at a time, at most limit of them working at once (re-placing
// several lost sessions concurrently, never over-committing: each takes its
// slot by a transaction). A start for an id whose job is running marks it
// to run once more when it ends, so no change is missed.
type jobs struct {
	ctx context.Context
	run func(ctx context.Context, id string)
	sem chan struct{}

	mu     sync.Mutex
	active map[string]bool // id → run again when done
	wg     sync.WaitGroup
}

func newJobs(ctx context.Context, limit int, run func(ctx context.Context, id string)) *jobs {
	if limit <= 0 {
		limit = 1
	}
	return &jobs{ctx: ctx, run: run, sem: make(chan struct{}, limit), active: map[string]bool{}}
}

// start runs a job for id, or marks its running job to run again.
func (j *jobs) start(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.active[id]; ok {
		j.active[id] = true
		return
	}
	if j.ctx.Err() != nil {
		return
	}
	j.active[id] = false
	j.wg.Go(func() { j.loop(id) })
}

func (j *jobs) loop(id string) {
	select {
	case j.sem <- struct{}{}:
		defer func() { <-j.sem }()
	case <-j.ctx.Done():
		j.mu.Lock()
		delete(j.active, id)
		j.mu.Unlock()
		return
	}
	for {
		j.run(j.ctx, id)
		j.mu.Lock()
		if j.active[id] && j.ctx.Err() == nil {
			j.active[id] = false
			j.mu.Unlock()
			continue
		}
		delete(j.active, id)
		j.mu.Unlock()
		return
	}
}

// running counts the ids with a job.
func (j *jobs) running() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.active)
}

// wait returns once every job has ended (their context ends with the
// leadership term).
func (j *jobs) wait() { j.wg.Wait() }
