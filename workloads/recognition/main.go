// Command recognition is an inference function modelled on the image
// recognition benchmark: it classifies generated 28×28 grayscale images with
// a small convolutional network whose weights come from a fixed-seed PRNG:
// conv(8 filters, 3×3) → ReLU → 2×2 max pool → dense(10) → argmax. The
// result is the SHA-256 digest of the predicted classes and the IEEE 754 bits
// of the logits. Every product is explicitly rounded before it is
// accumulated, so the logits are bit-identical on every target.
// KINDLING_SIZE is the number of images (small: 128, medium: 1024, large:
// 8192).
package main

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const (
	name    = "recognition"
	side    = 28       // input image side
	filters = 8        // convolution filters
	kernel  = 3        // convolution kernel side
	conv    = side - 2 // side after a valid 3×3 convolution
	pooled  = conv / 2 // side after 2×2 max pooling
	classes = 10       // output classes
	hidden  = filters * pooled * pooled
)

// model holds the network's parameters.
type model struct {
	kernels [filters][kernel * kernel]float64
	bias    [filters]float64
	dense   [classes][hidden]float64
	dbias   [classes]float64
}

func init() { harness.Register("recognition", run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	images := harness.Size(name, 128, 1024, 8192)

	rng := rand.New(rand.NewPCG(11, 12))
	m := newModel(rng)
	img := make([]float64, side*side)
	out := make([]byte, 0, images*(1+8*classes))
	for range images {
		draw(rng, img)
		logits := m.forward(img)
		out = append(out, byte(argmax(logits)))
		for _, v := range logits {
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
		}
	}
	harness.Emit(name, harness.Digest(out))
}

// newModel draws every weight uniformly from [-0.5, 0.5).
func newModel(rng *rand.Rand) *model {
	w := func() float64 { return rng.Float64() - 0.5 }
	m := new(model)
	for f := range filters {
		for k := range m.kernels[f] {
			m.kernels[f][k] = w()
		}
		m.bias[f] = w()
	}
	for c := range classes {
		for h := range m.dense[c] {
			m.dense[c][h] = w() / 16
		}
		m.dbias[c] = w()
	}
	return m
}

// draw renders a ring of random centre and radius over faint noise, with
// pixel values in [0, 1].
func draw(rng *rand.Rand, img []float64) {
	cx, cy, r := 8+rng.IntN(12), 8+rng.IntN(12), 3+rng.IntN(6)
	for y := range side {
		for x := range side {
			d := (x-cx)*(x-cx) + (y-cy)*(y-cy) - r*r
			v := rng.IntN(32)
			if d > -2*r && d < 2*r {
				v += 223
			}
			img[y*side+x] = float64(v) / 255
		}
	}
}

// forward runs the network on one image and returns the class logits.
func (m *model) forward(img []float64) [classes]float64 {
	var act [conv * conv]float64
	var features [hidden]float64
	for f := range filters {
		// Convolution and ReLU.
		for y := range conv {
			for x := range conv {
				s := m.bias[f]
				for ky := range kernel {
					for kx := range kernel {
						s += float64(m.kernels[f][ky*kernel+kx] * img[(y+ky)*side+x+kx])
					}
				}
				act[y*conv+x] = max(s, 0)
			}
		}
		// 2×2 max pooling.
		for y := range pooled {
			for x := range pooled {
				i := 2*y*conv + 2*x
				features[(f*pooled+y)*pooled+x] = max(act[i], act[i+1], act[i+conv], act[i+conv+1])
			}
		}
	}
	var logits [classes]float64
	for c := range classes {
		s := m.dbias[c]
		for h, v := range features {
			s += float64(m.dense[c][h] * v)
		}
		logits[c] = s
	}
	return logits
}

// argmax returns the index of the largest logit.
func argmax(logits [classes]float64) int {
	best := 0
	for c, v := range logits {
		if v > logits[best] {
			best = c
		}
	}
	return best
}
