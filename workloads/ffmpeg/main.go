// Command ffmpeg is a video-filter function modelled on the ffmpeg benchmark:
// it generates raw RGB24 frames of a moving test pattern and converts each
// one to grayscale with the integer BT.601 luma formula. The result is the
// SHA-256 digest of the gray frames. KINDLING_SIZE is the number of 320×240
// frames (small: 30, medium: 300, large: 1800).
package main

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const (
	name   = "ffmpeg"
	width  = 320
	height = 240
)

func init() { harness.Register("ffmpeg", run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	frames := harness.Size(name, 30, 300, 1800)

	rgb := make([]byte, width*height*3)
	gray := make([]byte, width*height)
	digest := sha256.New()
	for f := range frames {
		render(rgb, f)
		grayscale(gray, rgb)
		digest.Write(gray)
	}
	harness.Emit(name, hex.EncodeToString(digest.Sum(nil)))
}

// render draws frame f of a test pattern that scrolls diagonally.
func render(rgb []byte, f int) {
	for y := range height {
		for x := range width {
			p := (y*width + x) * 3
			rgb[p] = byte(x + 2*f)
			rgb[p+1] = byte(y + 3*f)
			rgb[p+2] = byte((x ^ y) + f)
		}
	}
}

// grayscale writes the luma of each RGB pixel: (299R + 587G + 114B) / 1000,
// rounded to nearest.
func grayscale(gray, rgb []byte) {
	for i := range gray {
		r, g, b := int(rgb[3*i]), int(rgb[3*i+1]), int(rgb[3*i+2])
		gray[i] = byte((299*r + 587*g + 114*b + 500) / 1000)
	}
}
