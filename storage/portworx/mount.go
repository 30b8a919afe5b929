package portworx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/libopenstorage/openstorage/api"
	"golang.org/x/sys/unix"

	"github.com/snapvol/snapvol/mountpoint"
	"github.com/snapvol/snapvol/storage"
)

// The mount-path question. The OpenStorage server (Portworx) attaches a
// volume's block device and mounts it itself, at a host path it is given.
// Real Portworx runs in a container of its own and mounts in its own
// mount namespace: a host path is only sure to be seen by Portworx, and
// its mount only sure to be seen on the host, under the directory its own
// Docker plugin mounts into, /var/lib/osd/mounts, which Portworx shares
// with the host (rshared). DATA_ROOT, or Docker's propagated-mount
// directory of a managed plugin, is not such a directory.
//
// So the server is told to mount a volume at a server path,
// PX_MOUNT_DIR/snapvol-<instance>/<key> (MountDir), the key being the
// target's path below DATA_ROOT and the instance keeping two snapvols on
// one host apart; snapvol then bind-mounts the server path, as it sees
// it (MountDirLocal), onto the target under DATA_ROOT, the path it hands
// Docker. That bind is snapvol's own mount, so it is made nosuid,nodev
// for clones whoever made the mount under it.
//
//   - snapvol on the host (legacy socket): MountDirLocal is MountDir.
//   - snapvol as a managed plugin: the pxmounts mount of
//     config.portworx.json binds the host's PX_MOUNT_DIR at
//     ManagedMountDir inside the plugin, rshared, so the server's mount
//     propagates in; the bind onto the target, under the propagated
//     mount, propagates back out to the host, where Docker binds it into
//     the container.
//
// Every Mount checks that the server's mount did appear at the server
// path as snapvol sees it, so a directory Portworx does not share with
// snapvol fails loudly, naming PX_MOUNT_DIR, instead of giving a
// container an empty directory.

// optSecretName is openstorage's pkg/options OptionsSecret (not in
// v1.0.0's packages snapvol builds with).
const optSecretName = "SECRET_NAME"

// DefaultMountDir is PX_MOUNT_DIR's default: where Portworx's own Docker
// plugin mounts volumes, a directory Portworx always sees.
const DefaultMountDir = "/var/lib/osd/mounts"

// ManagedMountDir is where the managed plugin sees PX_MOUNT_DIR: the
// destination of config.portworx.json's pxmounts mount.
const ManagedMountDir = "/var/lib/osd/mounts"

// defaultMountDir is Config.MountDir when it is empty (tests move it).
var defaultMountDir = DefaultMountDir

// mountsHint says what to configure when the server's mounts do not
// reach snapvol.
func (b *Backend) mountsHint() string {
	return fmt.Sprintf("PX_MOUNT_DIR (now %s) must be a host directory Portworx mounts into (its own Docker plugin's /var/lib/osd/mounts, the default) "+
		"and that directory must be shared with snapvol with shared mount propagation; for the managed plugin that is its pxmounts mount: "+
		"docker plugin set snapvol pxmounts.source=DIR PX_MOUNT_DIR=DIR (with the plugin disabled)", b.mountDir)
}

// serverPath is where the server is told to mount the volume for target
// (host) and where snapvol sees that mount (local), before binding it
// onto target. (Not "staging": that word is the local pool's staging/,
// where a clone is made before it is renamed into clones/.)
type serverPath struct {
	rel, host, local string
}

// serverPathFor maps a target under DATA_ROOT to its server path.
func (b *Backend) serverPathFor(target string) (serverPath, error) {
	rel, err := filepath.Rel(filepath.Clean(b.cfg.DataRoot), filepath.Clean(target))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return serverPath{}, fmt.Errorf("mount target %s is not below DATA_ROOT %s", target, b.cfg.DataRoot)
	}
	return b.serverPathOf(rel), nil
}

// instanceDir is this instance's directory in PX_MOUNT_DIR.
func (b *Backend) instanceDir() string { return "snapvol-" + b.cfg.Instance }

func (b *Backend) serverPathOf(rel string) serverPath {
	return serverPath{
		rel:   rel,
		host:  filepath.Join(b.mountDir, b.instanceDir(), rel),
		local: filepath.Join(b.mountDirLocal, b.instanceDir(), rel),
	}
}

// serverPathAt is the server path whose host path is p, if p is one of
// this instance's.
func (b *Backend) serverPathAt(p string) (serverPath, bool) {
	rel, err := filepath.Rel(filepath.Join(b.mountDir, b.instanceDir()), filepath.Clean(p))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return serverPath{}, false
	}
	return b.serverPathOf(rel), true
}

var propagatedMountRe = regexp.MustCompile(`/plugins/[0-9a-f]{64}/propagated-mount$`)

// legacy reports whether p is where an earlier snapvol had the server
// mount the volume for the target rel: at the target itself (on the
// host), or at the host path of the managed plugin's propagated mount.
func (b *Backend) legacy(p, rel string) bool {
	p = filepath.Clean(p)
	if p == filepath.Join(filepath.Clean(b.cfg.DataRoot), rel) {
		return true
	}
	dir, ok := strings.CutSuffix(p, "/"+rel)
	return ok && propagatedMountRe.MatchString(dir)
}

// Mount has the server attach the volume to this host and mount it at its
// server path, checks snapvol sees that mount, and binds it onto target.
// That runs as work that may outlive ctx (work.go): a large volume's
// attach can take longer than Docker waits.
func (b *Backend) Mount(ctx context.Context, id, target string) error {
	return b.work(ctx, "mount\x00"+id+"\x00"+target, id, fmt.Sprintf("mounting %s at %s", id, target), func(ctx context.Context) error {
		return b.mount(ctx, id, target)
	})
}

func (b *Backend) mount(ctx context.Context, id, target string) error {
	sp, err := b.serverPathFor(target)
	if err != nil {
		return err
	}
	if mountpoint.IsMountPoint(target) {
		return nil
	}
	// Looked up first: a volume that is gone leaves no mount point.
	v, err := b.rest.inspect(ctx, id)
	if err != nil {
		return fmt.Errorf("mount %s: %w", id, err)
	}
	name := volumeName(v)
	serverHas, err := b.settleServerMount(ctx, v, sp, name, id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("creating mount point %s for %q: %w", target, name, err)
	}
	wasAttached, err := b.attachForMount(ctx, v, name, id, target)
	if err != nil {
		return err
	}
	undo := func(cause error) error {
		if err := b.release(ctx, v, sp.host, !wasAttached); err != nil {
			cause = fmt.Errorf("%w (undoing it also failed: %v)", cause, err)
		}
		_ = b.removeServerPath(sp)
		_ = mountpoint.RemoveMountPoint(target)
		return cause
	}
	if !serverHas {
		if err := b.serverMount(ctx, sp, name, id); err != nil {
			return undo(err)
		}
	}
	if err := b.bindServerMount(v, sp, name, id, target); err != nil {
		return undo(err)
	}
	return nil
}

// settleServerMount makes the server's record of v's mount at sp agree
// with what is mounted there, and says whether the server has it mounted.
func (b *Backend) settleServerMount(ctx context.Context, v *api.Volume, sp serverPath, name, id string) (serverHas bool, err error) {
	for _, p := range v.AttachPath {
		if filepath.Clean(p) == sp.host {
			serverHas = true
		}
	}
	switch {
	case serverHas && !mountpoint.IsMountPoint(sp.local):
		// The server still counts a mount that is gone (a reboot, or a
		// lazy unmount behind its back): clear it so it mounts again.
		if err := b.release(ctx, v, sp.host, false); err != nil {
			return false, err
		}
		serverHas = false
	case !serverHas && mountpoint.IsMountPoint(sp.local):
		// A mount the server forgot: ours (below snapvol-<instance>), and
		// in the way of the new one.
		if err := mountpoint.Unbind(sp.local); err != nil {
			return false, fmt.Errorf("%q (%s): a mount the OpenStorage server does not know is in the way at %s: %w", name, id, sp.local, err)
		}
	}
	return serverHas, nil
}

// attachForMount attaches v unless it is attached already, and says
// whether it was (a driver with nothing to attach counts as attached: its
// undo has nothing to detach). On failure the mount point target goes.
func (b *Backend) attachForMount(ctx context.Context, v *api.Volume, name, id, target string) (wasAttached bool, err error) {
	if attached(v) {
		return true, nil
	}
	req := &api.VolumeSetRequest{Action: &api.VolumeStateAction{Attach: api.VolumeActionParam_VOLUME_ACTION_PARAM_ON}}
	if key := ownLabels(v)[storage.LabelSecretKey]; key != "" {
		// The name of the volume's secret goes as SECRET_NAME
		// (pkg/options OptionsSecret), as OpenStorage's own clients
		// pass it: its Docker plugin (api/server/docker.go
		// attachOptionsFromSpec) and CSI driver (csi/node.go) send
		// the spec's secret_key there. SECRET_KEY is another thing,
		// the key inside a Kubernetes secret named SECRET_NAME.
		// api/server/volume.go volumeSet hands the options to the
		// attach, which reads them with pkg/options
		// NewVolumeAttachOptions.
		req.Options = map[string]string{optSecretName: key}
	}
	_, err = b.rest.set(ctx, fmt.Sprintf("attaching %q (%s)", name, id), id, req)
	if err != nil && v.GetSpec().GetEncrypted() && req.Options == nil {
		err = fmt.Errorf("%w (the volume is encrypted: with a per-volume secret, give its name as -o secret_key=NAME when creating the volume; a cluster-wide secret needs nothing)", err)
	}
	switch {
	case notSupported(err):
		// Filesystem drivers (btrfs, vfs, nfs) have no device to attach.
		return true, nil
	case err != nil:
		_ = mountpoint.RemoveMountPoint(target)
		return false, err
	}
	return false, nil
}

// serverMount asks the server to mount the volume at sp's host path.
func (b *Backend) serverMount(ctx context.Context, sp serverPath, name, id string) error {
	// Made from this side, the directory is there for the server when
	// both see the same one; when they do not, bindServerMount says so.
	if err := os.MkdirAll(sp.local, 0o755); err != nil {
		return fmt.Errorf("creating the server path %s for %q: %w (PX_MOUNT_DIR=%s)", sp.local, name, err, b.mountDir)
	}
	if _, err := b.rest.set(ctx, fmt.Sprintf("mounting %q (%s) at %s", name, id, sp.host), id, &api.VolumeSetRequest{
		Action: &api.VolumeStateAction{Mount: api.VolumeActionParam_VOLUME_ACTION_PARAM_ON, MountPath: sp.host},
	}); err != nil {
		return fmt.Errorf("%w (%s)", err, b.mountsHint())
	}
	return nil
}

// bindServerMount checks the server's mount shows at sp's local path and
// binds it at target, nosuid,nodev for a clone.
func (b *Backend) bindServerMount(v *api.Volume, sp serverPath, name, id, target string) error {
	if !mountpoint.IsMountPoint(sp.local) {
		return fmt.Errorf("Portworx (the OpenStorage server) reported %q (%s) mounted at host path %s, but snapvol does not see it at %s: %s",
			name, id, sp.host, sp.local, b.mountsHint())
	}
	// The OpenStorage v1 mount action takes no options: a clone's mount
	// is made nosuid,nodev here. The server's mount as snapvol sees it gets
	// the flags first, so the bind inherits them when it is made: a remount
	// of the bind alone would not reach the copies of it that propagate
	// out of a managed plugin to the directory Docker binds.
	var flags uintptr
	if isKind(v, storage.KindClone) {
		flags = unix.MS_NOSUID | unix.MS_NODEV
		if err := mountpoint.SetFlags(sp.local, flags); err != nil {
			return fmt.Errorf("clone %q (%s) at %s: %w", name, id, sp.local, err)
		}
	}
	if err := mountpoint.BindMountFlags(sp.local, target, flags); err != nil {
		return fmt.Errorf("%q (%s): binding %s at %s: %w", name, id, sp.local, target, err)
	}
	return nil
}

// removeServerPath removes the server path (a directory) if nothing is
// mounted there and it is empty.
func (b *Backend) removeServerPath(sp serverPath) error {
	if err := mountpoint.RemoveMountPoint(sp.local); err != nil {
		return err
	}
	// Directories between snapvol-<instance> and the key, if the key has
	// several parts.
	top := filepath.Join(b.mountDirLocal, b.instanceDir())
	for d := filepath.Dir(sp.local); d != top && strings.HasPrefix(d, top+"/"); d = filepath.Dir(d) {
		if err := unix.Rmdir(d); err != nil {
			break
		}
	}
	return nil
}

// release unmounts v from host (if the server has it there) and, when
// detach is set, detaches it.
func (b *Backend) release(ctx context.Context, v *api.Volume, host string, detach bool) error {
	name := volumeName(v)
	if _, err := b.rest.set(ctx, fmt.Sprintf("unmounting %q (%s) from %s", name, v.Id, host), v.Id, &api.VolumeSetRequest{
		Action: &api.VolumeStateAction{Mount: api.VolumeActionParam_VOLUME_ACTION_PARAM_OFF, MountPath: host},
	}); err != nil && !notMounted(err) {
		return err
	}
	if !detach {
		return nil
	}
	return b.detach(ctx, v)
}

// notSupported recognises volume.ErrNotSupported, which drivers without
// block devices answer to attach and detach.
func notSupported(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Operation not supported")
}

// notMounted recognises a server's refusal to unmount what is not mounted.
func notMounted(err error) bool {
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "not mounted") || strings.Contains(m, "not attached") || strings.Contains(m, "is detached")
}

// Unmount unbinds target, has the server unmount the volume from its
// server path and detach it once nothing else holds it, then removes the
// server path and the mount point if they are empty. A mount an
// earlier snapvol had the server make at the target's host path is
// released too. Without an id (a stray mount) only this host's mount at
// target goes; the server's record of its mount, if any, is cleared when
// the object is deleted (detachAll) or mounted there again.
func (b *Backend) Unmount(ctx context.Context, id, target string) error {
	sp, err := b.serverPathFor(target)
	if err != nil {
		return err
	}
	if id == "" {
		return mountpoint.Unbind(target)
	}
	// A mount still being made is superseded.
	if err := b.stopWork(ctx, id); err != nil {
		return err
	}
	v, err := b.rest.inspect(ctx, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		// The volume is gone; only stale mount points can remain here.
		if err := mountpoint.Unbind(target); err != nil {
			return err
		}
		_ = b.removeServerPath(sp)
		return nil
	case err != nil:
		return err
	}
	name := volumeName(v)
	serverMounted, others := mountpoint.IsMountPoint(sp.local), 0
	var legacy []string
	for _, p := range v.AttachPath {
		switch p = filepath.Clean(p); {
		case p == sp.host:
			serverMounted = true
		case b.legacy(p, sp.rel):
			legacy = append(legacy, p)
		default:
			others++
		}
	}
	// An earlier version's mount at the target's host path: the server
	// unmounts it, and with it what the target shows of it.
	for _, p := range legacy {
		if err := b.release(ctx, v, p, false); err != nil {
			return err
		}
	}
	if err := mountpoint.Unbind(target); err != nil {
		return fmt.Errorf("%q (%s): %w", name, id, err)
	}
	if serverMounted {
		if err := b.release(ctx, v, sp.host, false); err != nil {
			return err
		}
	}
	if mountpoint.IsMountPoint(sp.local) {
		// The server does not know this mount (it lost track of it): the
		// server path is ours, so it goes here; a detach with it in
		// place would fail or pull the device from under it.
		if err := mountpoint.Unbind(sp.local); err != nil {
			return fmt.Errorf("%q (%s): the OpenStorage server left %s mounted and it could not be unmounted here: %w", name, id, sp.local, err)
		}
	}
	if others == 0 && attached(v) {
		if err := b.detach(ctx, v); err != nil {
			return err
		}
	}
	if err := b.removeServerPath(sp); err != nil {
		return fmt.Errorf("%q (%s): %w", name, id, err)
	}
	if err := mountpoint.RemoveMountPoint(target); err != nil {
		return fmt.Errorf("%q (%s): %w", name, id, err)
	}
	return nil
}

func (b *Backend) Mounted(target string) bool { return mountpoint.IsMountPoint(target) }
