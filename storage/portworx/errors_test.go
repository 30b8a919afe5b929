package portworx

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/snapvol/snapvol/storage"
)

// What the server says, and what snapvol must make of it (texts from the
// OpenStorage REST handlers and SDK; see errors.go).
var classifyCases = []struct {
	code int
	msg  string
	want error // nil: none of the sentinels
}{
	{200, "rpc error: code = NotFound desc = Volume id 123 not found", storage.ErrNotFound},
	{400, "Failed to inspect volumeID: rpc error: code = NotFound desc = Volume id 123 not found\n", storage.ErrNotFound},
	{200, "rpc error: code = NotFound desc = Id 123 not found", storage.ErrNotFound},
	{400, "Volume 123 does not exist", storage.ErrNotFound},
	{200, "Volume does not exist.", storage.ErrNotFound},
	{404, "404 page not found\n", ErrEndpoint},
	{404, "Not Found", ErrEndpoint},
	{405, "", ErrEndpoint},
	{200, "rpc error: code = Internal desc = Failed to unmount volume 1: Key not found", nil},
	{200, "rpc error: code = Internal desc = Failed to mount volume 1: mount point /x not found", nil},
	{500, "rpc error: code = Unauthenticated desc = acme is not a trusted issuer", storage.ErrDenied},
	{500, "rpc error: code = PermissionDenied desc = Unable to authenticate token", storage.ErrDenied},
	{404, "rpc error: code = PermissionDenied desc = Access denied to volume 9", storage.ErrDenied},
	{401, "Access denied, token is invalid", storage.ErrDenied},
	{200, "rpc error: code = Internal desc = Failed to delete volume 1: Volume has snapshots associated", storage.ErrBusy},
	{200, "rpc error: code = Unavailable desc = Resource has not been initialized", storage.ErrUnavailable},
	{503, "upstream down", storage.ErrUnavailable},
	{500, "rpc error: code = DeadlineExceeded desc = context deadline exceeded", storage.ErrUnavailable},
	{500, "rpc error: code = Internal desc = Failed to enumerate volumes: boom", nil},
}

func TestClassify(t *testing.T) {
	r := &rest{endpoint: "http://127.0.0.1:9001"}
	sentinels := []error{storage.ErrNotFound, ErrEndpoint, storage.ErrDenied, storage.ErrBusy, storage.ErrUnavailable}
	for _, c := range classifyCases {
		err := r.classify("doing it", c.code, c.msg)
		for _, s := range sentinels {
			if got := errors.Is(err, s); got != (s == c.want) {
				t.Errorf("%d %q: errors.Is(%v) = %v; got %v", c.code, c.msg, s, got, err)
			}
		}
		if !strings.HasPrefix(err.Error(), "doing it: ") {
			t.Errorf("%q: error %q does not name the operation", c.msg, err)
		}
	}
}

// FuzzClassify: any answer is classified without a panic, and "not found"
// comes only from the messages that mean a missing volume, never from a
// router's 404 or a sentence that merely contains the words.
func FuzzClassify(f *testing.F) {
	for _, c := range classifyCases {
		f.Add(c.code, c.msg)
	}
	r := &rest{endpoint: "http://127.0.0.1:9001", token: "t"}
	f.Fuzz(func(t *testing.T, code int, msg string) {
		err := r.classify("x", code, msg)
		if err == nil {
			t.Fatal("nil error")
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return
		}
		desc := strings.TrimSpace(msg)
		if m := rpcErrorRe.FindStringSubmatch(desc); m != nil {
			desc = strings.TrimSpace(m[2])
		}
		if len(desc) > 512 || !missingVolumeRe.MatchString(desc) {
			t.Fatalf("%d %q read as not found", code, msg)
		}
		if code == http.StatusNotFound && !strings.Contains(msg, "rpc error") && !strings.HasPrefix(desc, "Volume") && !strings.HasPrefix(desc, "Id ") && !strings.HasPrefix(desc, "unable") && !strings.HasPrefix(desc, "No volumes") {
			t.Fatalf("a bare 404 %q read as not found", msg)
		}
	})
}
