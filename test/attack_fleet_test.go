package test

// Attacks on runner fleets (DESIGN.md "Runner fleets", docs/fleets.md)
// from whoever can push to a registry a CI host pulls from (a push right
// on one repository, or the registry itself compromised): the artifacts
// and btrfs send streams below are written by hand, byte for byte, the
// way an attacker would, and pushed with oras-go straight to the loopback
// registry. The CI host is a host-mode snapvol: the registry is what the
// attacker controls, and the receive runs in the daemon whatever the mode.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/snapvol/snapvol/fleet"
)

// Send stream commands and attributes (linux fs/btrfs/send.h, protocol 1).
const (
	sendSubvol   = 1
	sendSnapshot = 2
	sendMkfile   = 3
	sendMkdir    = 4
	sendSymlink  = 8
	sendRename   = 9
	sendWrite    = 15
	sendClone    = 16
	sendEnd      = 21

	attrUUID          = 1
	attrCtransid      = 2
	attrIno           = 3
	attrPath          = 15
	attrPathTo        = 16
	attrPathLink      = 17
	attrFileOffset    = 18
	attrData          = 19
	attrCloneUUID     = 20
	attrCloneCtransid = 21
	attrClonePath     = 22
	attrCloneOffset   = 23
	attrCloneLen      = 24
)

// sendStream writes a btrfs send stream (version 1) by hand.
type sendStream struct{ b bytes.Buffer }

func newSendStream() *sendStream {
	s := &sendStream{}
	s.b.WriteString("btrfs-stream\x00")
	_ = binary.Write(&s.b, binary.LittleEndian, uint32(1))
	return s
}

type tlv struct {
	typ uint16
	val []byte
}

func tStr(typ uint16, v string) tlv { return tlv{typ, []byte(v)} }
func tU64(typ uint16, v uint64) tlv {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return tlv{typ, b}
}
func tUUID(typ uint16, u [16]byte) tlv { return tlv{typ, u[:]} }

// cmd appends one command; its crc32c is the kernel's (seed 0, no final
// inversion) over the header with the crc zeroed and the attributes.
func (s *sendStream) cmd(c uint16, attrs ...tlv) *sendStream {
	var body bytes.Buffer
	for _, a := range attrs {
		_ = binary.Write(&body, binary.LittleEndian, a.typ)
		_ = binary.Write(&body, binary.LittleEndian, uint16(len(a.val)))
		body.Write(a.val)
	}
	hdr := make([]byte, 10)
	binary.LittleEndian.PutUint32(hdr[0:], uint32(body.Len()))
	binary.LittleEndian.PutUint16(hdr[4:], c)
	crc := ^crc32.Update(^uint32(0), crc32.MakeTable(crc32.Castagnoli), append(append([]byte{}, hdr...), body.Bytes()...))
	binary.LittleEndian.PutUint32(hdr[6:], crc)
	s.b.Write(hdr)
	s.b.Write(body.Bytes())
	return s
}

func (s *sendStream) subvol(path string, u [16]byte, ctransid uint64) *sendStream {
	return s.cmd(sendSubvol, tStr(attrPath, path), tUUID(attrUUID, u), tU64(attrCtransid, ctransid))
}

func (s *sendStream) snapshot(path string, u [16]byte, ctransid uint64, parent [16]byte, parentCtransid uint64) *sendStream {
	return s.cmd(sendSnapshot, tStr(attrPath, path), tUUID(attrUUID, u), tU64(attrCtransid, ctransid),
		tUUID(attrCloneUUID, parent), tU64(attrCloneCtransid, parentCtransid))
}

func (s *sendStream) mkfile(path string, ino uint64) *sendStream {
	return s.cmd(sendMkfile, tStr(attrPath, path), tU64(attrIno, ino))
}

func (s *sendStream) mkdir(path string, ino uint64) *sendStream {
	return s.cmd(sendMkdir, tStr(attrPath, path), tU64(attrIno, ino))
}

func (s *sendStream) symlink(path, target string, ino uint64) *sendStream {
	return s.cmd(sendSymlink, tStr(attrPath, path), tU64(attrIno, ino), tStr(attrPathLink, target))
}

func (s *sendStream) rename(from, to string) *sendStream {
	return s.cmd(sendRename, tStr(attrPath, from), tStr(attrPathTo, to))
}

func (s *sendStream) write(path string, off uint64, data []byte) *sendStream {
	return s.cmd(sendWrite, tStr(attrPath, path), tU64(attrFileOffset, off), tlv{attrData, data})
}

func (s *sendStream) clone(path string, off, n uint64, from [16]byte, fromCtransid uint64, fromPath string, fromOff uint64) *sendStream {
	return s.cmd(sendClone, tStr(attrPath, path), tU64(attrFileOffset, off), tU64(attrCloneLen, n),
		tUUID(attrCloneUUID, from), tU64(attrCloneCtransid, fromCtransid), tStr(attrClonePath, fromPath), tU64(attrCloneOffset, fromOff))
}

func (s *sendStream) end() []byte {
	s.cmd(sendEnd)
	return s.b.Bytes()
}

func newUUID(t *testing.T) [16]byte {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		t.Fatal(err)
	}
	return u
}

func uuidText(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// hostileLayer is one layer as the attacker publishes it: the stream and
// the annotations it claims (parent "" for a full stream).
type hostileLayer struct {
	stream       []byte
	uuid, parent string
	mediaType    string // "" = snapvol's
	size         int64  // 0 = the stream's length
	digest       digest.Digest
}

// publishHostile pushes layers as tag of repo (REGISTRY/PATH) the way an
// account with push rights can: blobs, a manifest, the tag.
func publishHostile(t *testing.T, repo, tag string, layers []hostileLayer) {
	t.Helper()
	ctx := context.Background()
	r, err := remote.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	var descs []ocispec.Descriptor
	for _, l := range layers {
		mt := l.mediaType
		if mt == "" {
			mt = fleet.LayerType
		}
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(l.stream), Size: int64(len(l.stream)),
			Annotations: map[string]string{fleet.AnnotationUUID: l.uuid, fleet.AnnotationParent: l.parent,
				fleet.AnnotationTime: time.Now().UTC().Format(time.RFC3339Nano), fleet.AnnotationSource: "app-production", fleet.AnnotationRef: tag}}
		if err := r.Push(ctx, d, bytes.NewReader(l.stream)); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("pushing a hostile layer: %v", err)
		}
		if l.size != 0 {
			d.Size = l.size
		}
		if l.digest != "" {
			d.Digest = l.digest
		}
		descs = append(descs, d)
	}
	desc, err := oras.PackManifest(ctx, r, oras.PackManifestVersion1_1, fleet.ArtifactType, oras.PackManifestOptions{Layers: descs})
	if err != nil {
		t.Fatalf("pushing a hostile manifest: %v", err)
	}
	if err := r.Tag(ctx, desc, tag); err != nil {
		t.Fatal(err)
	}
}

// outsideDir is a directory of the test's own outside the CI host's pool:
// what a stream must never reach.
func outsideDir(t *testing.T) string {
	dir := t.TempDir()
	if dir == "" || !filepath.IsAbs(dir) {
		t.Fatalf("temp dir %q", dir)
	}
	return dir
}

func upward(n int) string { return strings.Repeat("../", n) }

// A stream's paths must stay inside the subvolume it makes: btrfs receive
// joins them to the destination as they come, "..", an absolute path or
// a symlink the stream made itself included; a CI host receiving with
// root rights would write wherever a registry holder likes (a cron file, a
// unit, /root/.ssh). Each stream here tries to write into a directory of
// the test outside the CI host's pool; the pull must fail or confine it,
// and nothing may appear there.
func TestAttackFleetStreamPathsStayInside(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/evil"
	ci := StartPlugin(t, map[string]string{"REPLICAS": "evil=" + repo, "PULL_EVERY": "0"})
	out := outsideDir(t)
	rel := strings.TrimPrefix(out, "/")
	cases := []struct {
		name   string
		stream func(u [16]byte) []byte
	}{
		{"dotdot", func(u [16]byte) []byte {
			return newSendStream().subvol("v", u, 7).mkfile(upward(40)+rel+"/dotdot", 257).write(upward(40)+rel+"/dotdot", 0, []byte("pwned")).end()
		}},
		{"absolute", func(u [16]byte) []byte {
			return newSendStream().subvol("v", u, 7).mkfile(out+"/absolute", 257).write(out+"/absolute", 0, []byte("pwned")).end()
		}},
		{"rename-out", func(u [16]byte) []byte {
			return newSendStream().subvol("v", u, 7).mkfile("f", 257).write("f", 0, []byte("pwned")).rename("f", upward(40)+rel+"/rename-out").end()
		}},
		{"symlink", func(u [16]byte) []byte {
			return newSendStream().subvol("v", u, 7).symlink("s", out, 257).mkfile("s/symlink", 258).write("s/symlink", 0, []byte("pwned")).end()
		}},
		{"subvol-path", func(u [16]byte) []byte {
			return newSendStream().subvol(upward(40)+rel+"/subvol-path", u, 7).end()
		}},
	}
	for _, c := range cases {
		u := newUUID(t)
		publishHostile(t, repo, c.name, []hostileLayer{{stream: c.stream(u), uuid: uuidText(u)}})
		res, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", "evil@"+c.name)
		t.Logf("%s: pull: %v %s", c.name, err, strings.TrimSpace(res))
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("a pulled stream wrote %s outside the CI host's pool", filepath.Join(out, e.Name()))
	}
}

// pullOut runs snapvol pull on the CI host and returns its output and
// error, logging both.
func pullOut(t *testing.T, ci *Plugin, what string) (string, error) {
	t.Helper()
	out, err := cli(t, nil, "--state-dir", ci.StateDir, "pull", what)
	t.Logf("pull %s: %v %s", what, err, strings.TrimSpace(out))
	return out, err
}

// A clone command names its source subvolume by UUID and a path inside
// it, and btrfs receive opens that path from the pool's root whether or
// not it confines the rest of the stream (-C): "..", in the clone path,
// walks out of the attacker's own earlier version into any subvolume of
// the CI host's pool at a known path, here a CI job's plain volume
// (GitLab's cache volumes have predictable names), whose bytes then land
// in the attacker's replica and in every clone of it. No UUID of anyone
// else is needed: the source is the attacker's own previous layer.
func TestAttackFleetCloneStaysInTheChain(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/evil"
	ci := StartPlugin(t, map[string]string{"REPLICAS": "evil=" + repo, "PULL_EVERY": "0"})
	// Another job's data in the same pool.
	if err := ci.Create("ci-cache", nil); err != nil {
		t.Fatal(err)
	}
	mp := ci.MustMount("ci-cache", "other-job")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	secret := bytes.Repeat([]byte("other-job-secret"), 256) // 4 KiB: a whole block
	if err := os.WriteFile(filepath.Join(mp, "token"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ci.Unmount("ci-cache", "other-job"); err != nil {
		t.Fatal(err)
	}

	u0, u1 := newUUID(t), newUUID(t)
	full := newSendStream().subvol("v", u0, 7).mkfile("f", 257).write("f", 0, []byte("harmless")).end()
	// replicas/evil/U0/v is the clone source: four levels up is the
	// pool's root; the stream has no UUID but its own.
	steal := newSendStream().snapshot("v", u1, 8, u0, 7).mkfile("loot", 258).
		clone("loot", 0, uint64(len(secret)), u0, 7, "../../../../volumes/ci-cache/token", 0).end()
	publishHostile(t, repo, "dotdot", []hostileLayer{{stream: full, uuid: uuidText(u0)}, {stream: steal, uuid: uuidText(u1), parent: uuidText(u0)}})
	checkNoLoot(t, ci, "dotdot", secret)

	// The same through a symlink the attacker's earlier version holds:
	// no "..", in the stream, only in the link's target.
	u2, u3 := newUUID(t), newUUID(t)
	full = newSendStream().subvol("v", u2, 7).symlink("s", "../../../../volumes/ci-cache", 257).end()
	steal = newSendStream().snapshot("v", u3, 8, u2, 7).mkfile("loot", 258).
		clone("loot", 0, uint64(len(secret)), u2, 7, "s/token", 0).end()
	publishHostile(t, repo, "symlink", []hostileLayer{{stream: full, uuid: uuidText(u2)}, {stream: steal, uuid: uuidText(u3), parent: uuidText(u2)}})
	checkNoLoot(t, ci, "symlink", secret)

	// And through a symlink the stream itself makes, cloning from the
	// subvolume being received.
	u4 := newUUID(t)
	for depth := 3; depth <= 6; depth++ {
		steal = newSendStream().subvol("v", u4, 7).symlink("s", upward(depth)+"volumes/ci-cache", 257).mkfile("loot", 258).
			clone("loot", 0, uint64(len(secret)), u4, 7, "s/token", 0).end()
		tag := fmt.Sprintf("own-symlink-%d", depth)
		publishHostile(t, repo, tag, []hostileLayer{{stream: steal, uuid: uuidText(u4)}})
		checkNoLoot(t, ci, tag, secret)
	}
}

// checkNoLoot pulls evil@tag and fails if its file loot holds secret.
func checkNoLoot(t *testing.T, ci *Plugin, tag string, secret []byte) {
	t.Helper()
	if _, err := pullOut(t, ci, "evil@"+tag); err != nil {
		return // refused: held
	}
	name := "evil@" + tag + "+attacker"
	if err := ci.Create(name, nil); err != nil {
		t.Fatal(err)
	}
	got := ci.MustMount(name, "attacker")
	if got == "" {
		t.Fatal("empty mount point")
	}
	defer ci.Unmount(name, "attacker")
	if b, err := os.ReadFile(filepath.Join(got, "loot")); err == nil && bytes.Equal(b, secret) {
		t.Errorf("%s: a pulled stream cloned another job's volume (volumes/ci-cache/token) into the attacker's replica", tag)
	} else {
		t.Logf("%s: loot: %v %q", tag, err, b)
	}
}

// btrfs receive finds an incremental stream's parent (and what it clones
// from) by received UUID anywhere in the pool, taking the subvolume that
// got that UUID first. Whoever sets a replica's UUID on a subvolume of
// theirs before the CI host receives the replica chooses what the
// source's next incremental layer is applied to, and every CI job of
// that source then runs on their data: a registry holder who can push to
// one replica source's repository and read another's (pull rights are
// usually wide), or any CI job on the host, on its own volume, with
// BTRFS_IOC_SET_RECEIVED_SUBVOL (it only needs to own the volume's root
// directory, which a container's root does; done here from the test, as
// the container would through its mount). Such a layer must be refused.
func TestAttackFleetParentIsTheSourcesOwn(t *testing.T) {
	for _, by := range []string{"another-source", "ci-volume"} {
		t.Run(by, func(t *testing.T) {
			reg, _ := startFleetRegistry(t, "")
			ci := StartPlugin(t, map[string]string{"REPLICAS": "app-production=" + reg + "/data/app-production,evil=" + reg + "/data/evil", "PULL_EVERY": "0"})
			v0, v1 := newUUID(t), newUUID(t)
			genuine := newSendStream().subvol("v", v0, 7).mkfile("marker.txt", 257).write("marker.txt", 0, []byte("genuine")).end()
			publishHostile(t, reg+"/data/app-production", "masked", []hostileLayer{{stream: genuine, uuid: uuidText(v0)}})
			// The attacker reads v0's UUID and ctransid from the
			// victim's manifest and stream.
			switch by {
			case "another-source":
				poison := newSendStream().subvol("v", v0, 7).mkfile("marker.txt", 257).write("marker.txt", 0, []byte("poison!")).end()
				publishHostile(t, reg+"/data/evil", "x", []hostileLayer{{stream: poison, uuid: uuidText(v0)}})
				pullOut(t, ci, "evil@x")
			case "ci-volume":
				if err := ci.Create("job-volume", nil); err != nil {
					t.Fatal(err)
				}
				mp := ci.MustMount("job-volume", "job")
				if mp == "" {
					t.Fatal("empty mount point")
				}
				defer ci.Unmount("job-volume", "job")
				if err := os.WriteFile(filepath.Join(mp, "marker.txt"), []byte("poison!"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := setReceivedUUID(mp, v0, 7); err != nil {
					t.Fatalf("BTRFS_IOC_SET_RECEIVED_SUBVOL on a job's own volume: %v", err)
				}
			}
			if _, err := pullOut(t, ci, "app-production@masked"); err != nil {
				return // refused: the operator sees two subvolumes claiming one snapshot
			}
			inc := newSendStream().snapshot("v", v1, 8, v0, 7).mkfile("v1.txt", 258).end()
			publishHostile(t, reg+"/data/app-production", "masked", []hostileLayer{{stream: genuine, uuid: uuidText(v0)}, {stream: inc, uuid: uuidText(v1), parent: uuidText(v0)}})
			if _, err := pullOut(t, ci, "app-production@masked"); err != nil {
				return
			}
			mp := ci.MustMount("app-production@masked+job", "job2")
			if mp == "" {
				t.Fatal("empty mount point")
			}
			defer ci.Unmount("app-production@masked+job", "job2")
			if got := readMarker(t, mp); got != "genuine" {
				t.Errorf("app-production@masked on the CI host holds %q: its incremental layer was applied to the attacker's subvolume", got)
			}
		})
	}
}

// setReceivedUUID is BTRFS_IOC_SET_RECEIVED_SUBVOL on the subvolume whose
// root is dir: what btrfs receive does when it finishes a subvolume, and
// what the owner of any writable subvolume's root may do.
func setReceivedUUID(dir string, u [16]byte, stransid uint64) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct btrfs_ioctl_received_subvol_args: uuid, stransid, rtransid,
	// stime, rtime (u64 sec, u32 nsec, padded to 16), flags, reserved[16].
	var args [200]byte
	copy(args[:16], u[:])
	binary.LittleEndian.PutUint64(args[16:], stransid)
	const iocSetReceivedSubvol = 0xc0c89425 // _IOWR(0x94, 37, 200 bytes)
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), iocSetReceivedSubvol, uintptr(unsafe.Pointer(&args[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// A chain is at most fleet.MaxChain layers (a push rebases on a full
// stream before), so a pull need never apply more: a manifest of hundreds
// of layers is a registry holder making every CI host run hundreds of
// receives and keep hundreds of subvolumes. The pull must refuse it
// before applying any.
func TestAttackFleetChainLength(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/evil"
	ci := StartPlugin(t, map[string]string{"REPLICAS": "evil=" + repo, "PULL_EVERY": "0"})
	n := 4 * fleet.MaxChain
	var layers []hostileLayer
	prev := [16]byte{}
	for i := 0; i < n; i++ {
		u := newUUID(t)
		s := newSendStream()
		if i == 0 {
			s.subvol("v", u, uint64(7+i))
		} else {
			s.snapshot("v", u, uint64(7+i), prev, uint64(6+i))
		}
		l := hostileLayer{stream: s.mkfile(fmt.Sprintf("f%d", i), uint64(257+i)).end(), uuid: uuidText(u)}
		if i > 0 {
			l.parent = uuidText(prev)
		}
		layers = append(layers, l)
		prev = u
	}
	publishHostile(t, repo, "long", layers)
	start := time.Now()
	out, err := pullOut(t, ci, "evil@long")
	t.Logf("a %d-layer pull took %v", n, time.Since(start).Round(time.Millisecond))
	if err == nil || !strings.Contains(out, "layers") {
		t.Errorf("a manifest of %d layers (a push makes at most %d) was pulled: %v\n%s", n, fleet.MaxChain, err, out)
	}
}

// What the manifest says must be what is applied: a layer of another
// media type, a layer whose bytes do not match its digest, a chain whose
// parents do not follow, and a stream that makes another snapshot than
// its layer names are each refused, and nothing of them becomes visible.
func TestAttackFleetManifestLies(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/evil"
	ci := StartPlugin(t, map[string]string{"REPLICAS": "evil=" + repo, "PULL_EVERY": "0"})
	u0, u1, other := newUUID(t), newUUID(t), newUUID(t)
	full := newSendStream().subvol("v", u0, 7).mkfile("f", 257).write("f", 0, []byte("v0")).end()
	inc := newSendStream().snapshot("v", u1, 8, u0, 7).write("f", 0, []byte("v1")).end()
	cases := map[string][]hostileLayer{
		"mediatype":  {{stream: full, uuid: uuidText(u0), mediaType: "application/vnd.oci.image.layer.v1.tar"}},
		"loop":       {{stream: full, uuid: uuidText(u0)}, {stream: inc, uuid: uuidText(u1), parent: uuidText(u1)}},
		"fullparent": {{stream: full, uuid: uuidText(u0), parent: uuidText(other)}},
		"uuidlies":   {{stream: full, uuid: uuidText(other)}},
	}
	for tag, layers := range cases {
		publishHostile(t, repo, tag, layers)
		if out, err := pullOut(t, ci, "evil@"+tag); err == nil {
			t.Errorf("a manifest whose %s lies was pulled:\n%s", tag, out)
		}
		if err := ci.Create("evil@"+tag+"+job", nil); err == nil {
			t.Errorf("evil@%s: a clone of a refused pull was made", tag)
		}
	}
}

// poolSnapshots lists the snapshot subvolumes of source in p's pool.
func poolSnapshots(t *testing.T, p *Plugin, source string) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(p.Pool(), "snapshots", source))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		out[e.Name()] = true
	}
	return out
}

// A push reads the tag's manifest back from the registry and sends an
// incremental stream against the local snapshot its last layer names.
// A registry holder who learnt the UUID of a snapshot PUBLISH keeps in
// (an unmasked one: here read from the pool, as a leak would give it)
// rewrites the tag to name it, and the operator's next push sends the
// difference between raw and masked: what masking removed, by name.
// The parent of an incremental push must be the snapshot this host
// pushed to that tag (SOURCE@pushed.TAG), nothing the registry chooses.
func TestAttackFleetPushParentIsWhatWasPushed(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/app-production"
	prod := StartPlugin(t, map[string]string{"PUBLISH": "app-production@masked*"})
	SeedProduction(t, prod)
	const pii = "pii-alice-smith-ssn.csv"
	mp := prod.MustMount("app-production", "raw")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	if err := os.WriteFile(filepath.Join(mp, pii), []byte("alice,078-05-1120\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prod.Unmount("app-production", "raw"); err != nil {
		t.Fatal(err)
	}
	before := poolSnapshots(t, prod, "app-production")
	adminCLI(t, prod, "snapshot", "create", "app-production", "raw")
	rawUUID := ""
	for name := range poolSnapshots(t, prod, "app-production") {
		if !before[name] {
			out, err := exec.Command("btrfs", "subvolume", "show", filepath.Join(prod.Pool(), "snapshots", "app-production", name)).CombinedOutput()
			if m := regexp.MustCompile(`(?m)^\s*UUID:\s*([0-9a-f-]{36})`).FindSubmatch(out); err == nil && m != nil {
				rawUUID = string(m[1])
			}
		}
	}
	if rawUUID == "" {
		t.Fatal("no UUID for the raw snapshot")
	}
	// Masking removes the file; the masked snapshot is pushed.
	mp = prod.MustMount("app-production", "mask")
	if mp == "" {
		t.Fatal("empty mount point")
	}
	if err := os.Remove(filepath.Join(mp, pii)); err != nil {
		t.Fatal(err)
	}
	if err := prod.Unmount("app-production", "mask"); err != nil {
		t.Fatal(err)
	}
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked")
	if _, out, err := push(t, prod, nil, "app-production@masked", repo); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	// The registry holder names the raw snapshot as the tag's newest.
	publishHostile(t, repo, "masked", []hostileLayer{{stream: newSendStream().subvol("v", newUUID(t), 7).end(), uuid: rawUUID}})
	writeMarker(t, prod, "app-production", "v2")
	adminCLI(t, prod, "snapshot", "create", "app-production", "masked", "--replace")
	res, out, err := push(t, prod, nil, "app-production@masked", repo)
	if err != nil {
		t.Fatalf("second push: %v\n%s", err, out)
	}
	r, err := remote.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	for _, d := range res.Uploaded {
		rc, err := r.Blobs().Fetch(context.Background(), ocispec.Descriptor{Digest: digest.Digest(d), Size: res.Bytes})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(pii)) {
			t.Errorf("the push sent a stream against the raw snapshot the registry named: %q, removed by masking, left the host (%+v)", pii, res)
		}
	}
}

// An operator who writes a registry's credentials into REPLICAS or a push's
// repository (USER:PASSWORD@registry/repo, as a URL would take them) must
// be refused without the password being repeated: the repository is
// logged at start and named in every pull error, and a replica clone's
// Status (registry_error) shows the last one to any Docker user who
// inspects the volume.
func TestAttackFleetCredentialsInTheRepository(t *testing.T) {
	for _, s := range []string{"ci:s3cret@registry.example.com/data/app-production", "ci:s3cret@127.0.0.1:5000/data/app-production:masked"} {
		if _, _, err := fleet.ParseRepo(s); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseRepo(%q): %v; want a refusal that does not repeat the password", s, err)
		}
	}
	if _, err := fleet.ParseReplicas("app-production=ci:s3cret@registry.example.com/data/app-production"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("REPLICAS with credentials: %v; want a refusal that does not repeat the password", err)
	}
}

// A pull of every tag (snapvol pull SOURCE, and the first use of
// SOURCE@latest, within a Docker request's budget) received each tag the
// registry lists: a registry holder pushing thousands of tags made every
// CI host receive and keep thousands of versions. More than fleet.MaxTags
// is refused before any is received; a pull by tag still works.
func TestAttackFleetTagFlood(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/evil"
	ci := StartPlugin(t, map[string]string{"REPLICAS": "evil=" + repo, "PULL_EVERY": "0"})
	n := fleet.MaxTags + 1
	for i := 0; i < n; i++ {
		u := newUUID(t)
		publishHostile(t, repo, fmt.Sprintf("t%03d", i), []hostileLayer{{stream: newSendStream().subvol("v", u, 7).end(), uuid: uuidText(u)}})
	}
	start := time.Now()
	out, err := pullOut(t, ci, "evil")
	t.Logf("a pull of %d tags took %v", n, time.Since(start).Round(time.Millisecond))
	if err == nil || !strings.Contains(out, "tags") {
		t.Errorf("a repository of %d tags was pulled whole: %v", n, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(ci.Pool(), "replicas", "evil")); len(ents) != 0 {
		t.Errorf("%d versions received", len(ents))
	}
	if _, err := pullOut(t, ci, "evil@t000"); err != nil {
		t.Errorf("a pull by tag: %v", err)
	}
}

// A layer is as large as its registry says, and btrfs receive writes all
// of it into the pool, under no clone's quota: one registry holder took
// the space POOL_RESERVE keeps for the CI host's regular volumes (its
// jobs' caches, the other replica sources' next versions). A stream that
// would take the pool below the reserve is stopped there.
func TestAttackFleetLayerFillsThePool(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/evil"
	ci := StartPlugin(t, map[string]string{"REPLICAS": "evil=" + repo, "PULL_EVERY": "0", "POOL_RESERVE": "85%"})
	statfs := func() (size, free int64) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(ci.Pool(), &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize
	}
	size, free := statfs()
	reserve := size * 85 / 100
	over := free - reserve + 48<<20
	if over <= 48<<20 || over > 400<<20 {
		t.Fatalf("pool of %d bytes with %d free: the stream would be %d bytes", size, free, over)
	}
	u := newUUID(t)
	s := newSendStream().subvol("v", u, 7).mkfile("fill", 257)
	chunk := make([]byte, 48<<10)
	seed := uint64(1)
	for off := int64(0); off < over; off += int64(len(chunk)) {
		for i := 0; i < len(chunk); i += 8 { // incompressible
			seed = seed*6364136223846793005 + 1442695040888963407
			binary.LittleEndian.PutUint64(chunk[i:], seed)
		}
		s.write("fill", uint64(off), chunk)
	}
	publishHostile(t, repo, "fill", []hostileLayer{{stream: s.end(), uuid: uuidText(u)}})
	out, err := pullOut(t, ci, "evil@fill")
	_, after := statfs()
	t.Logf("pool %d MiB, reserve %d MiB, free %d MiB before, %d MiB after a %d MiB layer", size>>20, reserve>>20, free>>20, after>>20, over>>20)
	if err == nil || after < reserve-(16<<20) {
		t.Errorf("a %d MiB layer took the pool to %d MiB free, below POOL_RESERVE's %d MiB: %v\n%s", over>>20, after>>20, reserve>>20, err, out)
	}
}

// Annotations are the registry's words, and a pull's errors repeat them
// to the operator's terminal and the log: a layer UUID of escape
// sequences (here one that retitles the terminal and one that clears
// the screen) must be refused as not a UUID before it is printed raw.
func TestAttackFleetAnnotationsAreNotPrinted(t *testing.T) {
	reg, _ := startFleetRegistry(t, "")
	repo := reg + "/data/evil"
	ci := StartPlugin(t, map[string]string{"REPLICAS": "evil=" + repo, "PULL_EVERY": "0"})
	u := newUUID(t)
	evil := "\x1b]0;owned\x07\x1b[2J\x1b[H"
	publishHostile(t, repo, "esc", []hostileLayer{{stream: newSendStream().subvol("v", u, 7).end(), uuid: evil}})
	out, err := pullOut(t, ci, "evil@esc")
	if err == nil || strings.ContainsRune(out, 0x1b) || strings.ContainsRune(ci.Log(), 0x1b) {
		t.Errorf("a layer UUID of escape sequences: %v; printed raw: %v in the pull's output, %v in the log", err, strings.ContainsRune(out, 0x1b), strings.ContainsRune(ci.Log(), 0x1b))
	}
}
