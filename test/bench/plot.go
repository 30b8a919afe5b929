package bench

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The plot is drawn by hand on an image.RGBA: a log-log chart of latency
// against source size needs lines, squares and a few labels, and
// x/image's fixed 7x13 face is all the text it needs.

type series struct {
	name string
	col  color.RGBA
	get  func(SizeResult) Dist
}

var plotSeries = []series{
	{"cp -a", color.RGBA{0xd6, 0x27, 0x28, 0xff}, func(s SizeResult) Dist { return s.Cp }},
	{"cp -a --reflink=always", color.RGBA{0xff, 0x7f, 0x0e, 0xff}, func(s SizeResult) Dist { return s.Reflink }},
	{"snapvol @now (Get+Mount)", color.RGBA{0x1f, 0x77, 0xb4, 0xff}, func(s SizeResult) Dist { return s.Now }},
	{"snapvol @latest (Get+Mount)", color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, func(s SizeResult) Dist { return s.Latest }},
	{"bare snapshot ioctl", color.RGBA{0x55, 0x55, 0x55, 0xff}, func(s SizeResult) Dist { return s.Bare }},
}

type canvas struct {
	*image.RGBA
}

func (c canvas) dot(x, y, r int, col color.Color) {
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			c.Set(x+dx, y+dy, col)
		}
	}
}

// line draws a segment of width 2*r+1 (Bresenham, thickened).
func (c canvas) line(x0, y0, x1, y1, r int, col color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		c.dot(x0, y0, r, col)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func (c canvas) dashed(x0, y0, x1, y1 int, col color.Color) {
	n := max(abs(x1-x0), abs(y1-y0))
	for i := 0; i <= n; i++ {
		if (i/4)%2 == 0 {
			c.Set(x0+(x1-x0)*i/max(n, 1), y0+(y1-y0)*i/max(n, 1), col)
		}
	}
}

func (c canvas) text(x, y int, s string, col color.Color) {
	d := font.Drawer{Dst: c.RGBA, Src: image.NewUniform(col), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func textWidth(s string) int {
	return font.MeasureString(basicfont.Face7x13, s).Round()
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

func msLabel(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%g s", v/1000)
	default:
		return fmt.Sprintf("%g ms", v)
	}
}

// Plot draws p50 latency (with a p95 whisker) against source size, both
// axes logarithmic, as a PNG.
func (r *Results) Plot() ([]byte, error) {
	const W, H = 1000, 620
	const left, right, top, bottom = 80, 260, 56, 70
	img := canvas{image.NewRGBA(image.Rect(0, 0, W, H))}
	draw.Draw(img.RGBA, img.Bounds(), image.White, image.Point{}, draw.Src)
	black := color.RGBA{0x20, 0x20, 0x20, 0xff}
	grid := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}

	img.text(left, 24, "snapvol: clone + mount latency against source size (p50, whisker to p95)", black)
	img.text(left, 42, "log-log; one run of make bench on "+r.Host, color.RGBA{0x66, 0x66, 0x66, 0xff})
	if len(r.Sizes) == 0 {
		return encode(img.RGBA)
	}

	lo, hi := math.Inf(1), math.Inf(-1)
	minB, maxB := math.Inf(1), math.Inf(-1)
	for _, s := range r.Sizes {
		minB, maxB = math.Min(minB, float64(s.Bytes)), math.Max(maxB, float64(s.Bytes))
		for _, se := range plotSeries {
			d := se.get(s)
			if d.N > 0 && d.P50 > 0 {
				lo, hi = math.Min(lo, d.P50), math.Max(hi, math.Max(d.P95, d.P50))
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	yLo, yHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yHi == yLo {
		yHi++
	}
	xLo, xHi := math.Log2(minB)-1, math.Log2(maxB)+1
	pw, ph := W-left-right, H-top-bottom
	px := func(bytes float64) int { return left + int(float64(pw)*(math.Log2(bytes)-xLo)/(xHi-xLo)) }
	py := func(msv float64) int { return top + ph - int(float64(ph)*(math.Log10(msv)-yLo)/(yHi-yLo)) }

	// Grid and axes.
	for e := yLo; e <= yHi; e++ {
		v := math.Pow(10, e)
		y := py(v)
		img.line(left, y, left+pw, y, 0, grid)
		l := msLabel(v)
		img.text(left-8-textWidth(l), y+4, l, black)
	}
	for _, s := range r.Sizes {
		x := px(float64(s.Bytes))
		img.dashed(x, top, x, top+ph, grid)
		img.text(x-textWidth(s.Label)/2, top+ph+18, s.Label, black)
	}
	img.line(left, top, left, top+ph, 0, black)
	img.line(left, top+ph, left+pw, top+ph, 0, black)
	xl := "source size (incompressible data, many files)"
	img.text(left+pw/2-textWidth(xl)/2, top+ph+44, xl, black)
	img.text(8, top-10, "latency", black)

	// Series.
	for i, se := range plotSeries {
		var prev image.Point
		havePrev := false
		for _, s := range r.Sizes {
			d := se.get(s)
			if d.N == 0 || d.P50 <= 0 {
				havePrev = false
				continue
			}
			p := image.Pt(px(float64(s.Bytes))+(i-2)*3, py(d.P50))
			if havePrev {
				img.line(prev.X, prev.Y, p.X, p.Y, 1, se.col)
			}
			img.line(p.X, p.Y, p.X, py(math.Max(d.P95, d.P50)), 0, se.col)
			img.line(p.X-4, py(math.Max(d.P95, d.P50)), p.X+4, py(math.Max(d.P95, d.P50)), 0, se.col)
			img.dot(p.X, p.Y, 4, se.col)
			prev, havePrev = p, true
		}
		// Legend.
		ly := top + 20 + i*24
		img.line(left+pw+24, ly-4, left+pw+48, ly-4, 1, se.col)
		img.dot(left+pw+36, ly-4, 4, se.col)
		img.text(left+pw+56, ly, se.name, black)
	}
	if small, big := r.ends(); small != nil && small != big {
		y := top + 20 + len(plotSeries)*24 + 16
		for _, l := range []string{
			fmt.Sprintf("%s / %s, p50:", big.Label, small.Label),
			fmt.Sprintf("  @latest   %.2fx", ratio(big.Latest.P50, small.Latest.P50)),
			fmt.Sprintf("  @now      %.2fx", ratio(big.Now.P50, small.Now.P50)),
			fmt.Sprintf("  cp -a     %.0fx", ratio(big.Cp.P50, small.Cp.P50)),
			fmt.Sprintf("cp -a / @latest at %s:", big.Label),
			fmt.Sprintf("  %.0fx", ratio(big.Cp.P50, big.Latest.P50)),
		} {
			img.text(left+pw+24, y, l, black)
			y += 18
		}
	}
	return encode(img.RGBA)
}

func encode(img image.Image) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
