package names

import "testing"

// Docker asks every plugin about every name it does not know, so parsing
// (and rejecting) a name is on the hot path of Get.
func BenchmarkParse(b *testing.B) {
	for _, c := range []struct{ label, name string }{
		{"plain", "app-production"},
		{"clone", "snap:app-production@latest+job-4711"},
		{"rejected", "../../etc@latest"},
	} {
		b.Run(c.label, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_, _ = Parse(c.name)
			}
		})
	}
}

func BenchmarkWithOptionsOptions(b *testing.B) {
	n, err := Parse("ci-4711")
	if err != nil {
		b.Fatal(err)
	}
	opts := map[string]string{"from": "app-production", "ref": "latest", "ttl": "2h"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := WithOptions(n, opts, nil); err != nil {
			b.Fatal(err)
		}
	}
}
