// Command image is an image-processing function: it generates a deterministic
// picture, encodes it as JPEG, decodes it, rotates it by 90 degrees and
// re-encodes the result. The result is the SHA-256 digest of the rotated
// pixels. KINDLING_SIZE is the side of the square image in pixels (small:
// 256, medium: 512, large: 1024).
package main

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const name = "image"

func init() { harness.Register(name, run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	side := harness.Size(name, 256, 512, 1024)

	var encoded bytes.Buffer
	if err := jpeg.Encode(&encoded, generate(side), &jpeg.Options{Quality: 85}); err != nil {
		harness.Fail(name, "encoding: "+err.Error())
	}
	decoded, err := jpeg.Decode(&encoded)
	if err != nil {
		harness.Fail(name, "decoding: "+err.Error())
	}
	rotated := rotate90(decoded)
	var out bytes.Buffer
	if err := jpeg.Encode(&out, rotated, &jpeg.Options{Quality: 85}); err != nil {
		harness.Fail(name, "re-encoding: "+err.Error())
	}
	harness.Emit(name, harness.Digest(rotated.Pix))
}

// generate draws a side×side picture of overlapping gradients and a checker
// pattern, using integer arithmetic only.
func generate(side int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, side, side))
	for y := range side {
		for x := range side {
			checker := uint8(((x / 16) + (y / 16)) % 2 * 64)
			img.SetRGBA(x, y, color.RGBA{
				R: uint8(x * 255 / side),
				G: uint8(y*255/side) ^ checker,
				B: uint8((x*y)>>6) + checker,
				A: 0xff,
			})
		}
	}
	return img
}

// rotate90 returns src rotated 90 degrees clockwise as an RGBA image.
func rotate90(src image.Image) *image.RGBA {
	b := src.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, b.Dy(), b.Dx()))
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.RGBAModel.Convert(src.At(x, y)).(color.RGBA)
			// Pixel (x, y) moves to column (height-1-y), row x.
			dst.SetRGBA(b.Max.Y-1-y, x-b.Min.X, c)
		}
	}
	return dst
}
