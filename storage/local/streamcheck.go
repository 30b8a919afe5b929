package local

// A CI host applies btrfs send streams that come from a registry, that is
// from whoever can push to it: btrfs receive trusts its stream (it joins
// every path to the destination as given, and opens a clone's source from
// the pool's root by the UUID and path the stream names, so ".." there
// reaches any subvolume of the pool even under --chroot). streamCheck
// reads the stream ahead of btrfs receive and hands it only commands it
// has read whole and found to stay in the chain: one subvolume, the one
// the layer names, made fresh (a full layer) or as a snapshot of a
// version this source received (an incremental one); paths relative,
// without "." or ".."; clones only from that subvolume or that parent,
// through no symlink of the parent.
// What it refuses never reaches btrfs receive.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/snapvol/snapvol/storage"
)

// Send stream protocol 1 (linux fs/btrfs/send.h): the commands and
// attributes the check reads.
const (
	sendCmdSubvol       = 1
	sendCmdSnapshot     = 2
	sendCmdMkfile       = 3
	sendCmdLink         = 10
	sendCmdSetXattr     = 13
	sendCmdClone        = 16
	sendCmdEnd          = 21
	sendCmdMax          = 22 // BTRFS_SEND_C_UPDATE_EXTENT, the last of protocol 1
	sendAttrUUID        = 1
	sendAttrPath        = 15
	sendAttrPathTo      = 16
	sendAttrPathLink    = 17
	sendAttrCloneUUID   = 20
	sendAttrClonePath   = 22
	sendAttrMax         = 24 // BTRFS_SEND_A_CLONE_LEN
	sendCmdHeaderSize   = 10 // le32 length, le16 command, le32 crc
	sendMaxCommandBytes = 1 << 20
)

var errStream = errors.New("refused send stream")

// streamCheck passes stream r on command by command as it checks it.
type streamCheck struct {
	r         io.Reader
	uuid      [16]byte // what the layer says it makes
	replicas  string   // replicas/SOURCE: the versions this source received
	parent    [16]byte // what an incremental stream applies to
	parentDir string   // its received subvolume ("" for a full stream)
	started   bool     // the header was read
	subvol    bool     // the subvol or snapshot command was read
	ended     bool     // the end command was passed on
	pending   []byte   // checked bytes not yet read by btrfs receive
	budget    int64    // bytes it may pass on (< 0: no limit)
	passed    int64
	free      int64 // the pool's free space at the start, and what it keeps
	keep      int64
	err       error // why the stream was refused
}

func newStreamCheck(r io.Reader, uuid, replicas string) (*streamCheck, error) {
	u, err := parseUUID(uuid)
	return &streamCheck{r: r, uuid: u, replicas: replicas, budget: -1}, err
}

// newStreamCheck is the check of a stream received into the pool: it may
// pass on no more than the pool's free space above POOL_RESERVE (what
// receive writes is at most the stream's bytes: data comes only as
// literal writes, a clone shares extents), so a registry's endless or
// huge layer stops there instead of taking the space regular volumes
// keep.
func (b *Backend) newStreamCheck(r io.Reader, uuid, replicas string) (*streamCheck, error) {
	c, err := newStreamCheck(r, uuid, replicas)
	if err != nil {
		return nil, err
	}
	size, _, free, err := statPool(b.root)
	if err != nil {
		return nil, err
	}
	c.keep = b.cfg.Reserve.Of(size)
	if c.keep == 0 {
		c.keep = min(size/64, 64<<20) // room for btrfs's own metadata
	}
	c.free, c.budget = free, max(free-c.keep, 0)
	return c, nil
}

func uuidOf(u []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if checkUUID(s) != nil || len(h) != 32 {
		return u, fmt.Errorf("%q is not a btrfs UUID", s)
	}
	for i := range u {
		if _, err := fmt.Sscanf(h[2*i:2*i+2], "%02x", &u[i]); err != nil {
			return u, fmt.Errorf("%q is not a btrfs UUID", s)
		}
	}
	return u, nil
}

// Err is why the stream was refused (nil if it was not): btrfs receive
// may end well on a stream cut short before a refused command, so the
// caller asks.
func (c *streamCheck) Err() error { return c.err }

func (c *streamCheck) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if c.ended {
			return 0, io.EOF
		}
		if err := c.next(); err != nil {
			if !errors.Is(err, errStream) {
				err = fmt.Errorf("%w: %w", errStream, err)
			}
			c.err = err
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// next reads the header or one command, checks it and queues it.
func (c *streamCheck) next() error {
	if !c.started {
		hdr := make([]byte, 17)
		if _, err := io.ReadFull(c.r, hdr); err != nil {
			return fmt.Errorf("reading the stream header: %w", err)
		}
		if string(hdr[:13]) != "btrfs-stream\x00" || binary.LittleEndian.Uint32(hdr[13:]) != 1 {
			return errors.New("not a btrfs send stream of protocol 1")
		}
		c.started, c.pending = true, hdr
		return nil
	}
	hdr := make([]byte, sendCmdHeaderSize)
	if _, err := io.ReadFull(c.r, hdr); err != nil {
		return fmt.Errorf("the stream ends before its end command: %w", err)
	}
	n := binary.LittleEndian.Uint32(hdr[0:])
	cmd := binary.LittleEndian.Uint16(hdr[4:])
	if n > sendMaxCommandBytes {
		return fmt.Errorf("a command of %d bytes", n)
	}
	cost := int64(sendCmdHeaderSize) + int64(n)
	if cmd >= sendCmdMkfile && cmd <= sendCmdLink || cmd == sendCmdSetXattr {
		// A name or inode made costs btrfs metadata (items, twice with
		// DUP) well beyond its few bytes in the stream.
		cost = max(cost, 2<<10)
	}
	if c.passed += cost; c.budget >= 0 && c.passed > c.budget {
		return fmt.Errorf("%w: the stream is larger than the pool can take (%s free, %s kept: POOL_RESERVE)", storage.ErrNoSpace, mib(c.free), mib(c.keep))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return fmt.Errorf("the stream ends inside a command: %w", err)
	}
	attrs, err := sendAttrs(body)
	if err != nil {
		return fmt.Errorf("command %d: %w", cmd, err)
	}
	if err := c.check(cmd, attrs); err != nil {
		return fmt.Errorf("command %d: %w", cmd, err)
	}
	c.pending = append(hdr, body...)
	c.ended = cmd == sendCmdEnd
	return nil
}

func sendAttrs(body []byte) (map[uint16][]byte, error) {
	attrs := map[uint16][]byte{}
	for len(body) > 0 {
		if len(body) < 4 {
			return nil, errors.New("a truncated attribute")
		}
		typ, n := binary.LittleEndian.Uint16(body), int(binary.LittleEndian.Uint16(body[2:]))
		if typ == 0 || typ > sendAttrMax || len(body) < 4+n {
			return nil, fmt.Errorf("attribute %d of %d bytes", typ, n)
		}
		if _, dup := attrs[typ]; dup {
			return nil, fmt.Errorf("attribute %d twice", typ)
		}
		attrs[typ], body = body[4:4+n], body[4+n:]
	}
	return attrs, nil
}

func (c *streamCheck) check(cmd uint16, attrs map[uint16][]byte) error {
	if cmd == 0 || cmd > sendCmdMax {
		return errors.New("not a command of protocol 1")
	}
	for _, a := range []uint16{sendAttrPath, sendAttrPathTo, sendAttrClonePath} {
		if v, ok := attrs[a]; ok {
			if err := streamPath(string(v)); err != nil {
				return err
			}
		}
	}
	if v, ok := attrs[sendAttrPathLink]; ok && cmd == sendCmdLink {
		if err := streamPath(string(v)); err != nil { // a hard link's target is a path; a symlink's is data
			return err
		}
	}
	switch cmd {
	case sendCmdSubvol, sendCmdSnapshot:
		if c.subvol {
			return errors.New("a second subvolume in one layer")
		}
		c.subvol = true
		if p := string(attrs[sendAttrPath]); p == "" || strings.Contains(p, "/") {
			return fmt.Errorf("subvolume path %q: one name, made in the receive's own directory", p)
		}
		if !bytes.Equal(attrs[sendAttrUUID], c.uuid[:]) {
			return fmt.Errorf("the stream makes snapshot %x, not the one its layer names", attrs[sendAttrUUID])
		}
		if cmd == sendCmdSnapshot {
			from := attrs[sendAttrCloneUUID]
			if len(from) == 16 {
				copy(c.parent[:], from)
				c.parentDir = replicaSubvol(filepath.Join(c.replicas, uuidOf(from)))
			}
			if c.parentDir == "" {
				return fmt.Errorf("the stream applies to snapshot %x, which this source has not received", from)
			}
			return c.parentIsOurs()
		}
		return nil
	}
	if !c.subvol {
		return errors.New("a command before the stream's subvolume")
	}
	if cmd == sendCmdClone {
		from := attrs[sendAttrCloneUUID]
		switch {
		case bytes.Equal(from, c.uuid[:]):
			// The subvolume being received: under --chroot.
		case c.parentDir != "" && bytes.Equal(from, c.parent[:]):
			// Opened from the pool's root: no symlink may lead out.
			return plainFileUnder(c.parentDir, string(attrs[sendAttrClonePath]))
		default:
			return fmt.Errorf("a clone from snapshot %x, neither this layer's nor its parent", from)
		}
	}
	return nil
}

// streamPath refuses a path a stream names that is absolute or has "." or
// ".." (btrfs send writes neither).
func streamPath(p string) error {
	if p == "" {
		return nil // the subvolume's root
	}
	if strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("path %q is not relative", p)
	}
	for _, e := range strings.Split(p, "/") {
		if e == "" || e == "." || e == ".." {
			return fmt.Errorf("path %q leaves or names its directory oddly (%q)", p, e)
		}
	}
	return nil
}

// plainFileUnder checks rel names a regular file in dir through
// directories only (no symlink on the way).
func plainFileUnder(dir, rel string) error {
	if dir == "" || rel == "" {
		return errors.New("a clone from the parent without a path in it")
	}
	p := dir
	parts := strings.Split(rel, "/")
	for i, e := range parts {
		p = filepath.Join(p, e)
		st, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("clone source %q in the parent: %w", rel, err)
		}
		if last := i == len(parts)-1; last && !st.Mode().IsRegular() || !last && !st.IsDir() {
			return fmt.Errorf("clone source %q in the parent goes through %q, not a directory or regular file", rel, e)
		}
	}
	return nil
}

// uuidElsewhere is the other replica source that has received snapshot
// uuid already, "" if none: btrfs receive finds a parent or clone source
// by received UUID anywhere in the pool, so one UUID in two sources lets
// one source's registry choose what another's streams apply to.
func (b *Backend) uuidElsewhere(source, uuid string) string {
	ents, _ := os.ReadDir(filepath.Join(b.root, dirReplicas))
	for _, e := range ents {
		if e.Name() == source {
			continue
		}
		for _, n := range []string{uuid, uuid + ".part"} {
			if _, err := os.Lstat(filepath.Join(b.root, dirReplicas, e.Name(), n)); err == nil {
				return e.Name()
			}
		}
	}
	return ""
}

// The UUID tree (BTRFS_UUID_TREE_OBJECTID) maps a received UUID to the
// subvolumes carrying it (BTRFS_UUID_KEY_RECEIVED_SUBVOL), in the order
// they got it; btrfs receive takes the first.
const (
	uuidTreeID      = 9
	keyUUIDReceived = 252
)

// firstReceived is the subvolume btrfs receive finds for received UUID u.
func firstReceived(fd uintptr, u [16]byte) (uint64, bool, error) {
	k := [3]uint64{binary.LittleEndian.Uint64(u[:8]), keyUUIDReceived, binary.LittleEndian.Uint64(u[8:])}
	var id uint64
	found := false
	err := treeSearch(fd, uuidTreeID, k, k, func(it item) bool {
		if len(it.data) >= 8 {
			id, found = binary.LittleEndian.Uint64(it.data), true
		}
		return false
	})
	return id, found, err
}

// parentIsOurs checks that the subvolume btrfs receive will apply the
// stream to (and clone from), found by received UUID anywhere in the
// pool, is this source's copy of the parent: whoever set that UUID on a
// subvolume before (another source's registry, a CI container on its own
// clone, with BTRFS_IOC_SET_RECEIVED_SUBVOL) would choose the data.
func (c *streamCheck) parentIsOurs() error {
	f, err := openDir(c.parentDir)
	if err != nil {
		return err
	}
	defer f.Close()
	want, _, err := inoLookup(f, 0, btrfsFirstFreeID)
	if err != nil {
		return err
	}
	got, ok, err := firstReceived(f.Fd(), c.parent)
	if err != nil || (ok && got == want) {
		return err
	}
	// A version made visible (PublishReplica: a read-only snapshot in
	// snapshots/SOURCE, next to replicas/SOURCE) keeps the received UUID,
	// and comes first if the replica was received again after it.
	pulled := filepath.Join(filepath.Dir(filepath.Dir(c.replicas)), dirSnapshots, filepath.Base(c.replicas))
	ents, _ := os.ReadDir(pulled)
	for _, e := range ents {
		p := filepath.Join(pulled, e.Name())
		if !strings.HasPrefix(e.Name(), "pulled-") || !isSubvolume(p) {
			continue
		}
		if id, err := subvolID(p); err == nil && id == got {
			if u, ro, err := receivedUUID(p); err == nil && ro && u == uuidOf(c.parent[:]) {
				return nil
			}
		}
	}
	return fmt.Errorf("the stream applies to snapshot %s, and btrfs receive would take subvolume %d for it, not this source's copy (%d): another subvolume in the pool claims that received UUID", uuidOf(c.parent[:]), got, want)
}
