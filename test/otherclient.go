package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A second client of the plugin's socket, as another process: the test
// binary run again with SNAPVOL_TEST_CLIENT set sends one request and
// prints the plugin's error (or nothing). With "hold", it then stays alive
// until killed, like a container using the mount.
const clientEnv = "SNAPVOL_TEST_CLIENT"

type clientSpec struct {
	Socket, Method, Name, ID string
	Hold                     bool
}

func runClient(spec string) int {
	var s clientSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Println("bad spec:", err)
		return 2
	}
	p := &Plugin{Socket: s.Socket}
	p.client = unixClient(s.Socket)
	var err error
	switch s.Method {
	case "mount":
		_, err = p.Mount(s.Name, s.ID)
	case "remove":
		err = p.Remove(s.Name)
	}
	if err != nil {
		fmt.Print(err.Error())
	}
	if s.Hold {
		fmt.Print("\nholding\n")
		os.Stdout.Sync()
		select {}
	}
	return 0
}

// OtherProcess sends one request from another process and returns the
// plugin's error, "" if it succeeded.
func (p *Plugin) OtherProcess(t testing.TB, method, name string) string {
	t.Helper()
	spec, _ := json.Marshal(clientSpec{Socket: p.Socket, Method: method, Name: name, ID: "other"})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), clientEnv+"="+string(spec))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the other client: %v\n%s", err, out)
	}
	return string(out)
}

// HoldMount mounts name from another process that stays alive, as a
// container would, until the returned func kills it.
func (p *Plugin) HoldMount(t testing.TB, name string) (kill func()) {
	t.Helper()
	spec, _ := json.Marshal(clientSpec{Socket: p.Socket, Method: "mount", Name: name, ID: "held", Hold: true})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), clientEnv+"="+string(spec))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := out.Read(buf)
	if got := string(buf[:n]); !strings.HasPrefix(got, "\nholding") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the holding client's mount failed: %q", got)
	}
	done := false
	stop := func() {
		if !done {
			done = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}
