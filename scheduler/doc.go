// Package scheduler keeps warm pools of function instances on one node: it
// hands out instances to requests (Acquire/Release), starts new ones within
// a memory budget, queues requests it cannot serve yet, and closes or
// pre-warms idle instances as a keep-alive Policy decides.
//
// # Pools
//
// Each registered function has its own pool with its own mutex. An instance
// is starting, idle, busy or stopping (State). Acquire takes the most
// recently used instance with spare concurrency; failing that it starts a
// new instance if MaxInstances and the node's memory budget allow, evicting
// idle instances of other functions (least recently used first) when the
// budget is full; failing that the request waits in the function's bounded
// queue until its context ends. A full queue, or a full budget with nothing
// to evict, is refused with an error wrapping errdefs.ErrUnavailable inside
// an *errdefs.RetryableError carrying a Retry-After hint.
//
// # Concurrency
//
// There is no scheduler-wide lock on the request path. The function table
// is a sync.Map, each pool has its own mutex, and the memory budget is an
// atomic counter updated by compare-and-swap, so acquiring an idle instance
// of one function never waits for another function. Code never holds two
// pool locks at once. Slow work (starting and closing instances) always
// runs outside locks, through the Executor.
//
// Every instance reserves its MemoryMB from the budget when it is created
// and releases it exactly once, after its Close returned; an instance
// evicted for another function hands its reservation straight to the new
// instance, so eviction never lets a third party steal the freed memory.
//
// # Policies and virtual time
//
// A Policy (Fixed, None, NewHybrid, ParsePolicy) is told of every
// invocation and asked, whenever an instance turns idle, how long to keep
// it and whether to unload it and pre-warm a fresh one later. All timing
// goes through a Clock; FakeClock makes it virtual. Together with a custom
// Executor this lets the simulator in package sim replay traces through
// exactly this code.
package scheduler
