package bench

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium returns the path of a Chromium (or Chrome) binary, or skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed (scripts/install-deps.sh installs it): cannot render the HTML report")
	return ""
}

// headless runs Chromium headless on page with extra flags and returns its
// stdout.
func headless(t *testing.T, bin, page string, flags ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--hide-scrollbars", "--user-data-dir=" + t.TempDir(),
	}, flags...)
	cmd := exec.CommandContext(ctx, bin, append(args, "file://"+page)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
	}
	return stdout.Bytes()
}

// TestHTMLReportInChromium renders a real report in headless Chromium and
// checks the page shows something and holds the charts' SVG elements.
func TestHTMLReportInChromium(t *testing.T) {
	bin := chromium(t)
	rep, err := Run(t.Context(), Options{
		Workloads: []Workload{echoWorkload(t, "echo-a", "a"), echoWorkload(t, "echo-b", "b")},
		Runs:      map[Mode]int{Cold: 2, Cached: 2, Warm: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	var page bytes.Buffer
	if err := rep.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	html := page.String()
	// Self-contained: no scripts, no links, nothing fetched.
	for _, bad := range []string{"<script", "<link", "src=", "@import", "url("} {
		if strings.Contains(html, bad) {
			t.Errorf("the page has %q: not self-contained", bad)
		}
	}
	if n := strings.Count(html, "http"); n != strings.Count(html, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Errorf("the page refers to %d URLs besides the SVG namespace", n)
	}
	path := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(path, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("screenshot", func(t *testing.T) {
		shot := filepath.Join(t.TempDir(), "shot.png")
		headless(t, bin, path, "--screenshot="+shot, "--window-size=1200,900")
		f, err := os.Open(shot)
		if err != nil {
			t.Fatalf("no screenshot: %v", err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		b := img.Bounds()
		if b.Dx() != 1200 || b.Dy() != 900 {
			t.Errorf("screenshot is %v, want 1200×900", b)
		}
		var n, nonWhite, colored int
		var sum, sumSq float64
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r, g, bl, _ := img.At(x, y).RGBA()
				r, g, bl = r>>8, g>>8, bl>>8
				lum := 0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)
				sum += lum
				sumSq += lum * lum
				n++
				if r < 240 || g < 240 || bl < 240 {
					nonWhite++
				}
				if max(r, g, bl)-min(r, g, bl) > 60 { // chart colors, not text
					colored++
				}
			}
		}
		mean := sum / float64(n)
		variance := sumSq/float64(n) - mean*mean
		t.Logf("screenshot: %.1f%% non-white, %.2f%% colored, luminance variance %.0f", 100*float64(nonWhite)/float64(n), 100*float64(colored)/float64(n), variance)
		if nonWhite < n/50 || variance < 100 {
			t.Errorf("the screenshot looks blank: %d of %d pixels non-white, variance %.0f", nonWhite, n, variance)
		}
		if colored < n/500 {
			t.Errorf("the screenshot has almost no colored pixels (%d): no bars drawn?", colored)
		}
	})

	t.Run("dom", func(t *testing.T) {
		dom := string(headless(t, bin, path, "--dump-dom"))
		count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(dom, -1)) }
		var segs, withPhase int
		for _, w := range rep.Workloads {
			for _, c := range w.Cells {
				segs += len(c.Phases)
			}
		}
		withPhase = count(`<rect class="seg" data-phase="[a-z]+"`)
		checks := []struct {
			what      string
			got, want int
		}{
			{"svg charts", count(`<svg `), 2 * len(rep.Workloads)},
			{"waterfall segments (a rect per phase per column)", count(`<rect class="seg"`), segs},
			{"segments naming their phase", withPhase, segs},
			{"total bars (a rect per column)", count(`<rect class="bar"`), len(rep.Workloads) * len(rep.Columns)},
			{"p90 whiskers", count(`<line class="whisker"`), len(rep.Workloads) * len(rep.Columns)},
			{"tooltips", count(`<title>`), segs + len(rep.Workloads)*len(rep.Columns) + 1},
			{"workload sections", count(`<section class="workload"`), len(rep.Workloads)},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: %d in the DOM, want %d", c.what, c.got, c.want)
			}
		}
		for _, c := range rep.Columns {
			if n := count(`<text class="label"[^>]*>` + regexp.QuoteMeta(c.Name) + `</text>`); n != 2*len(rep.Workloads) {
				t.Errorf("column %s labels %d bars, want %d", c.Name, n, 2*len(rep.Workloads))
			}
		}
		for _, note := range rep.Notes {
			if !strings.Contains(dom, "<li>"+note+"</li>") {
				t.Errorf("the DOM lacks the note %q", note)
			}
		}
	})
}
