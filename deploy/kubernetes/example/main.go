// Command example is the function the example Deployment runs: a WASI
// program that logs a heartbeat every $INTERVAL (default 10s) with the
// text of $MESSAGE, until it is stopped. Build it for kindling with
//
//	GOOS=wasip1 GOARCH=wasm go build -o ticker.wasm ./deploy/kubernetes/example
//
// and package it with the Dockerfile beside it.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	interval, err := time.ParseDuration(os.Getenv("INTERVAL"))
	if err != nil || interval <= 0 {
		interval = 10 * time.Second
	}
	msg := os.Getenv("MESSAGE")
	if msg == "" {
		msg = "hello from kindling"
	}
	for i := 1; ; i++ {
		fmt.Printf("%s (%d)\n", msg, i)
		time.Sleep(interval)
	}
}
