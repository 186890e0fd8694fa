package phase

import (
	"strconv"
	"time"
)

// strconvMillis renders d in milliseconds with microsecond precision.
func strconvMillis(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}
