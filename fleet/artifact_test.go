package fleet

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseRepoAndPlainHTTP(t *testing.T) {
	for in, want := range map[string]struct {
		repo, tag string
		plain     bool
	}{
		"registry.example.com/data/app-production:masked": {"registry.example.com/data/app-production", "masked", false},
		"127.0.0.1:5000/data/app":                         {"127.0.0.1:5000/data/app", "", true},
		"localhost:5000/a":                                {"localhost:5000/a", "", true},
		"[::1]:5000/a:t":                                  {"[::1]:5000/a", "t", true},
		"10.0.0.1:5000/a":                                 {"10.0.0.1:5000/a", "", false},
	} {
		r, tag, err := ParseRepo(in)
		if err != nil || r.String() != want.repo || tag != want.tag || r.plainHTTP() != want.plain {
			t.Errorf("ParseRepo(%q) = %v %q plain=%v, %v; want %+v", in, r, tag, r.plainHTTP(), err, want)
		}
	}
	for _, bad := range []string{"app-production", "data/app", "registry.example.com/", "registry.example.com/Data", "r.example.com/a:b:c", "r.example.com/a//b"} {
		if _, _, err := ParseRepo(bad); err == nil {
			t.Errorf("ParseRepo(%q) accepted", bad)
		}
	}
}

func TestPublishDefaultsToNothing(t *testing.T) {
	p, err := ParsePublish("")
	if err != nil || p.Allows("app-production", "masked") {
		t.Fatalf("empty PUBLISH allows app-production@masked (%v)", err)
	}
	p, _ = ParsePublish("app-production@masked*")
	if !p.Allows("app-production", "masked-2") || p.Allows("app-production", "raw") {
		t.Fatal("PUBLISH=app-production@masked* allows the wrong refs")
	}
}

func TestCheckChain(t *testing.T) {
	// Annotations are btrfs UUIDs (a pull refuses anything else); "a",
	// "b", "c" name three of them.
	id := map[string]string{"": "", "a": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "b": "6fa459ea-ee8a-3ca4-894e-db77e160355e", "c": "886313e1-3b8a-5372-9b90-0c9aee199e5d"}
	l := func(uuid, parent string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: LayerType, Annotations: map[string]string{AnnotationUUID: id[uuid], AnnotationParent: id[parent]}}
	}
	if err := checkChain([]ocispec.Descriptor{l("a", ""), l("b", "a"), l("c", "b")}); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]ocispec.Descriptor{
		"empty":              nil,
		"starts incremental": {l("b", "a")},
		"broken link":        {l("a", ""), l("c", "b")},
		"no uuid":            {l("", "")},
		"foreign type":       {{MediaType: "application/vnd.oci.image.layer.v1.tar", Annotations: map[string]string{AnnotationUUID: id["a"]}}},
		"not a uuid":         {{MediaType: LayerType, Annotations: map[string]string{AnnotationUUID: "a\x1b[2J"}}},
	} {
		if err := checkChain(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
