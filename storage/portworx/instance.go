package portworx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/snapvol/snapvol/storage"
)

var instanceRe = regexp.MustCompile(`^[0-9a-f]{16,64}$`)

// InstanceID returns the ID of the snapvol instance whose state lives in
// stateDir, creating it on first use. It lives beside the bbolt database
// because it stands for it: the clones labelled with it are the ones that
// database's records own, whichever host or hostname it runs under.
func InstanceID(stateDir string) (string, error) {
	p := filepath.Join(stateDir, "portworx.instance")
	data, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(data))
		if !instanceRe.MatchString(id) {
			return "", fmt.Errorf("%s holds %q, not an instance ID; remove it only if no clone of this snapvol exists", p, id)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", err
	}
	id := storage.RandomHex(8)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	return id, nil
}
