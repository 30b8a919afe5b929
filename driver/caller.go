package driver

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/snapvol/snapvol/driver/store"
)

// Who counted a mount. Docker calls Remove only for a volume none of its
// containers refers to, so a mount still counted then is one that Docker
// will never unmount (a container that exited while dockerd was down with
// --live-restore) — unless another process counted it: another dockerd on
// the same host (the binary run directly serves every daemon that looks in
// /run/docker/plugins), or a client of the socket that is not Docker, whose
// container or process still uses the data. So every mount is counted
// under its caller, the process on the other end of the socket, and one
// rule decides for plain and clone volumes alike: Remove is refused while
// a process other than the caller that is still running holds a mount;
// counts held by the caller itself or by processes that are gone are stale
// and go with the volume.

// Caller identifies the process that sent a request: its pid and start
// time (a pid is reused, the pair is not). CallerUnknown is a caller the
// plugin cannot see: a managed plugin runs in its own pid namespace, where
// dockerd, its one client, has no pid.
type Caller = string

// CallerUnknown is a caller without a pid in the plugin's namespace.
const CallerUnknown Caller = ""

// CallerOperator is an operator's command over the admin socket (snapvol
// volume rm, ...). It never mounts, so it never holds a count: unlike a
// Docker Remove, nothing it removes has counts of its own to drop as stale.
// Every counted mount whose holder is running or cannot be seen refuses
// its requests. (In a managed plugin dockerd's mounts are CallerUnknown's;
// were the operator CallerUnknown too, they would look like its own.)
const CallerOperator Caller = "operator"

// ProcessCaller is the Caller of process pid (0: not visible).
func ProcessCaller(pid int) Caller {
	if pid <= 0 {
		return CallerUnknown
	}
	return strconv.Itoa(pid) + ":" + startTime(pid)
}

// startTime is field 22 of /proc/PID/stat, "" if the process is gone.
func startTime(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// processAlive reports whether c is still running (the same process: pid
// and start time). An unknown caller cannot be told to be gone.
func processAlive(c Caller) bool {
	if c == CallerUnknown {
		return true
	}
	pid, start, ok := strings.Cut(c, ":")
	n, err := strconv.Atoi(pid)
	if !ok || err != nil {
		return true
	}
	return start != "" && startTime(n) == start
}

// hold counts one more mount of a by caller.
func hold(a *store.Attachment, c Caller) {
	if a.Holders == nil {
		a.Holders = map[string]int{}
	}
	a.Holders[c]++
}

// unhold counts one mount of a less: the caller's own if it holds one,
// else one whose holder is gone, else any (Docker restarted under a new pid
// unmounts what its previous self mounted).
func (d *Driver) unhold(a *store.Attachment, c Caller) {
	pick := ""
	found := false
	if a.Holders[c] > 0 {
		pick, found = c, true
	}
	for h, n := range a.Holders {
		if found {
			break
		}
		if n > 0 && !d.alive(h) {
			pick, found = h, true
		}
	}
	for h, n := range a.Holders {
		if found {
			break
		}
		if n > 0 {
			pick, found = h, true
		}
	}
	if !found {
		return // counted before holders were recorded
	}
	if a.Holders[pick]--; a.Holders[pick] <= 0 {
		delete(a.Holders, pick)
	}
	if len(a.Holders) == 0 {
		a.Holders = nil
	}
}

// liveHolder returns a running process other than c that holds a mount of
// r, if there is one. Mounts counted before holders were recorded count as
// CallerUnknown's.
func (d *Driver) liveHolder(r *store.Record, c Caller) (Caller, bool) {
	for _, a := range r.Attachments {
		held := 0
		for h, n := range a.Holders {
			held += n
			if n > 0 && h != c && d.alive(h) {
				return h, true
			}
		}
		if a.Mounts > held && c != CallerUnknown {
			return CallerUnknown, true
		}
	}
	return "", false
}

func (d *Driver) alive(c Caller) bool {
	if d.cfg.Alive != nil {
		return d.cfg.Alive(c)
	}
	return processAlive(c)
}

func describeCaller(c Caller) string {
	if c == CallerUnknown {
		// A managed plugin's one client: dockerd, for its containers.
		return "Docker (a container) or another process the plugin cannot see"
	}
	pid, _, _ := strings.Cut(c, ":")
	if comm, err := os.ReadFile("/proc/" + pid + "/comm"); err == nil && len(comm) > 1 {
		return "process " + pid + " (" + strings.TrimSpace(string(comm)) + ")"
	}
	return "process " + pid
}
