package local

// Send and receive for runner fleets (package fleet): a snapshot leaves
// the production host as a btrfs send stream, and a CI host applies such
// streams with btrfs receive. What a CI host received is kept in
// replicas/SOURCE/UUID/ (UUID is the sender's snapshot UUID), apart from
// the driver's snapshots: those subvolumes are the parents later
// incremental streams are applied to, and nothing the driver collects may
// take them away. A version becomes visible as an ordinary read-only
// snapshot of them (PublishReplica), which the driver registers.
//
// A receive goes into replicas/SOURCE/UUID.part/ (ReceiveReplica) and is
// renamed to replicas/SOURCE/UUID/ (CommitReplica) only once btrfs receive
// finished, the received subvolume says it is that snapshot (its received
// UUID) and the caller checked the stream's digest, so a killed pull
// leaves a .part directory the next start deletes, never a half-applied or
// unverified version that looks whole. Versions are deleted the same way
// in reverse: renamed to .part first (PruneReplicas), then deleted
// (DropReplicaParts).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/snapvol/snapvol/storage"
)

const dirReplicas = "replicas"

// btrfsProgram is the btrfs-progs command that sends and receives streams.
var btrfsProgram = "btrfs"

// SendSnapshot writes the btrfs send stream of snapshot id to w: a full
// stream, or with parentID (another read-only snapshot in the pool) an
// incremental one holding only what differs from it.
func (b *Backend) SendSnapshot(ctx context.Context, id, parentID string, w io.Writer) error {
	p, kind, err := b.path(id)
	if err != nil || kind != storage.KindSnapshot {
		return fmt.Errorf("send %q: not a snapshot", id)
	}
	args := []string{"send", "-q"}
	if parentID != "" {
		pp, pkind, err := b.path(parentID)
		if err != nil || pkind != storage.KindSnapshot {
			return fmt.Errorf("send %q: parent %q is not a snapshot", id, parentID)
		}
		args = append(args, "-p", pp)
	}
	args = append(args, p)
	cmd := exec.CommandContext(ctx, btrfsProgram, args...)
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("btrfs send of %s: %w: %s", id, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (b *Backend) replicaDir(source string) (string, error) {
	if err := checkName("source", source); err != nil {
		return "", err
	}
	return filepath.Join(b.root, dirReplicas, source), nil
}

func checkUUID(uuid string) error {
	if len(uuid) != 36 || strings.Trim(uuid, "0123456789abcdef-") != "" {
		return fmt.Errorf("%q is not a btrfs UUID", uuid)
	}
	return nil
}

// replicaSubvol is the one subvolume in the directory of a received
// version ("" if there is none).
func replicaSubvol(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		return ""
	}
	p := filepath.Join(dir, ents[0].Name())
	if !isSubvolume(p) {
		return ""
	}
	return p
}

// HasReplica reports whether the version whose sender UUID is uuid was
// received whole for source.
func (b *Backend) HasReplica(source, uuid string) bool {
	dir, err := b.replicaDir(source)
	if err != nil || checkUUID(uuid) != nil {
		return false
	}
	return replicaSubvol(filepath.Join(dir, uuid)) != ""
}

// ReceiveReplica applies stream r (btrfs send, whose snapshot is uuid on
// the sender) for source into replicas/SOURCE/UUID.part. An incremental
// stream needs its parent received (committed) before. It checks what it
// received is the snapshot uuid, read-only; anything else is deleted
// again. The version counts as received only once CommitReplica renamed
// it, after the caller verified the stream (its digest).
func (b *Backend) ReceiveReplica(ctx context.Context, source, uuid string, r io.Reader) error {
	dir, err := b.replicaDir(source)
	if err != nil {
		return err
	}
	if err := checkUUID(uuid); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return b.noted(err)
	}
	final := filepath.Join(dir, uuid)
	if replicaSubvol(final) != "" {
		_, err := io.Copy(io.Discard, r) // the caller verifies what it read
		return err
	}
	part := final + ".part"
	b.dropPart(part)
	if err := os.Mkdir(part, 0o700); err != nil {
		return b.noted(err)
	}
	// The stream is a registry's: checked ahead of btrfs receive
	// (streamcheck.go), which runs chrooted into the .part directory (-C)
	// so no path in it ("..", a symlink it made) reaches outside.
	if other := b.uuidElsewhere(source, uuid); other != "" {
		b.dropPart(part)
		return fmt.Errorf("receive for %q: snapshot %s was received for replica source %q already; two sources cannot share a snapshot (btrfs receive finds parents by UUID across the pool)", source, uuid, other)
	}
	check, err := b.newStreamCheck(r, uuid, dir)
	if err != nil {
		b.dropPart(part)
		return err
	}
	cmd := exec.CommandContext(ctx, btrfsProgram, "receive", "-e", "-C", part)
	cmd.Stdin = check
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || check.Err() != nil {
		b.dropPart(part)
		if cerr := check.Err(); cerr != nil {
			return fmt.Errorf("btrfs receive of %s for %q: %w", uuid, source, cerr)
		}
		return fmt.Errorf("btrfs receive of %s for %q: %w: %s", uuid, source, wrapErr(err), strings.TrimSpace(out.String()))
	}
	sub := replicaSubvol(part)
	if sub == "" {
		b.dropPart(part)
		return fmt.Errorf("btrfs receive of %s for %q made no subvolume", uuid, source)
	}
	got, ro, err := receivedUUID(sub)
	if err == nil && (got != uuid || !ro) {
		err = fmt.Errorf("the stream received is snapshot %q (read-only %v), not %s as its layer says", got, ro, uuid)
	}
	if err != nil {
		b.dropPart(part)
		return fmt.Errorf("receive for %q: %w", source, err)
	}
	return nil
}

// CommitReplica makes the version ReceiveReplica left in UUID.part count
// as received (HasReplica), in one rename.
func (b *Backend) CommitReplica(source, uuid string) error {
	dir, err := b.replicaDir(source)
	if err != nil {
		return err
	}
	if err := checkUUID(uuid); err != nil {
		return err
	}
	final := filepath.Join(dir, uuid)
	part := final + ".part"
	if replicaSubvol(final) != "" {
		b.dropPart(part)
		return nil
	}
	if replicaSubvol(part) == "" {
		return fmt.Errorf("version %s of %q: nothing received to commit: %w", uuid, source, storage.ErrNotFound)
	}
	// A UUID directory that is not one whole version (its subvolume
	// deleted to free space, a file put beside it) is no received
	// version (HasReplica is false): it goes, or the rename would fail
	// at every pull for good.
	b.dropPart(final)
	if err := os.Rename(part, final); err != nil {
		b.dropPart(part)
		return b.noted(err)
	}
	return nil
}

// ReplicaVersions are the sender UUIDs of the versions received whole for
// source (what HasReplica is true of).
func (b *Backend) ReplicaVersions(source string) ([]string, error) {
	dir, err := b.replicaDir(source)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if checkUUID(e.Name()) == nil && replicaSubvol(filepath.Join(dir, e.Name())) != "" {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// dropPart deletes what an unfinished receive left.
func (b *Backend) dropPart(part string) {
	ents, _ := os.ReadDir(part)
	for _, e := range ents {
		if p := filepath.Join(part, e.Name()); isSubvolume(p) {
			_ = deleteSubvol(p)
		}
	}
	os.RemoveAll(part)
}

// DropReplicaParts deletes every unfinished receive of source.
func (b *Backend) DropReplicaParts(source string) {
	dir, err := b.replicaDir(source)
	if err != nil {
		return
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".part") {
			b.dropPart(filepath.Join(dir, e.Name()))
		}
	}
}

// receivedUUID is the sender's UUID of a received subvolume, and whether
// it is read-only (btrfs receive makes it so only once it finished).
func receivedUUID(path string) (string, bool, error) {
	f, err := openDir(path)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	var info subvolInfo
	if err := ioctl(f.Fd(), iocGetSubvolInfo, unsafe.Pointer(&info)); err != nil {
		return "", false, fmt.Errorf("reading %s: %w", path, err)
	}
	const rdonly = 1 // BTRFS_ROOT_SUBVOL_RDONLY
	return uuidString(info.receivedUUID), info.flags&rdonly != 0, nil
}

// PublishReplica makes the received version uuid of source visible as a
// read-only snapshot of src (the replica source's volume), carrying
// labels: what the driver registers as SOURCE@TAG.
func (b *Backend) PublishReplica(_ context.Context, src storage.Object, uuid string, labels map[string]string) (storage.Object, error) {
	dir, err := b.replicaDir(src.Name)
	if err != nil {
		return storage.Object{}, err
	}
	sub := replicaSubvol(filepath.Join(dir, uuid))
	if sub == "" {
		return storage.Object{}, fmt.Errorf("version %s of %q was not received: %w", uuid, src.Name, storage.ErrNotFound)
	}
	v, err := b.volumeOf(src)
	if err != nil {
		return storage.Object{}, err
	}
	name := "pulled-" + strings.ReplaceAll(uuid, "-", "")[:16] + "-" + storage.RandomHex(2)
	id := dirSnapshots + "/" + v.Name + "/" + name
	if err := os.MkdirAll(filepath.Join(b.root, dirSnapshots, v.Name), 0o700); err != nil {
		return storage.Object{}, b.noted(err)
	}
	return b.make(id, name, storage.KindSnapshot, storage.WithSourceID(labels, v.Identity), func(dst string) error {
		return snapCreate(sub, dst, true)
	})
}

// PruneReplicas moves the received versions of source not in keep out of
// the way (versions that are no tag's newest are no parent any stream
// needs): each is renamed to UUID.part, so it no longer counts as
// received, and DropReplicaParts deletes it. A crash in between leaves a
// .part the next start deletes, never a version that looks received.
func (b *Backend) PruneReplicas(source string, keep map[string]bool) error {
	dir, err := b.replicaDir(source)
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if keep[e.Name()] || strings.HasSuffix(e.Name(), ".part") || checkUUID(e.Name()) != nil {
			continue
		}
		vdir := filepath.Join(dir, e.Name())
		b.dropPart(vdir + ".part") // a retired one of the same version left over
		if err := os.Rename(vdir, vdir+".part"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
