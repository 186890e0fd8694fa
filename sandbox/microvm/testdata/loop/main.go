// Command loop is a conformance fixture: it never returns.
package main

func main() {
	for {
	}
}
