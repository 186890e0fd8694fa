// Command sleeper is a long-running test function: it sleeps for the
// duration in its request body (default 1s), writing "tick N" to stderr
// every 100ms, then answers "slept <duration>".
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

func main() {
	body, _ := io.ReadAll(os.Stdin)
	d, err := time.ParseDuration(strings.TrimSpace(string(body)))
	if err != nil {
		d = time.Second
	}
	end := time.Now().Add(d)
	for i := 1; time.Now().Before(end); i++ {
		time.Sleep(min(100*time.Millisecond, time.Until(end)))
		fmt.Fprintf(os.Stderr, "tick %d\n", i)
	}
	fmt.Printf("slept %v", d)
}
