package sim_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kindling-dev/kindling/scheduler"
	"github.com/kindling-dev/kindling/scheduler/sim"
	"github.com/kindling-dev/kindling/trace"
)

// A function called every 10 minutes: a fixed 5-minute keep-alive misses
// every call, a 15-minute one keeps the instance warm in between.
func ExampleRun() {
	var tr []trace.Invocation
	for i := range 6 {
		tr = append(tr, trace.Invocation{Function: "report", Arrival: time.Duration(i) * 10 * time.Minute, Duration: 2 * time.Second, MemoryMB: 256})
	}
	res, err := sim.Run(context.Background(), tr, sim.Config{StartCost: 500 * time.Millisecond},
		scheduler.Fixed(5*time.Minute), scheduler.Fixed(15*time.Minute))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := sim.WriteTable(os.Stdout, res); err != nil {
		fmt.Println(err)
	}
	// Output:
	//     policy  invocations  cold starts  cold rate  added p50  added p99  idle GB-s  peak MB  instances  pre-warmed  rejected
	//    fixed:5m            6            6    100.00%      500ms      500ms      375.0      256          6           0         0
	//   fixed:15m            6            1     16.67%         0s      500ms      747.4      256          1           0         0
}
