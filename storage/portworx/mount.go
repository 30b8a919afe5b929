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
// clone's block device and mounts it itself, in the host's mount
// namespace, at the path it is given. Docker then bind-mounts the path the
// plugin returned into the container. Both must be the same directory:
//
//   - snapvol on the host (legacy socket): DATA_ROOT is a host path, so
//     the server is told to mount at DATA_ROOT/<derived> and snapvol
//     returns that same path.
//   - snapvol as a managed plugin: DATA_ROOT (/mnt/snapvol) is the
//     plugin's propagatedMount. Docker binds the host directory
//     <docker root>/plugins/<plugin id>/propagated-mount there (rshared)
//     and maps every path the plugin returns under DATA_ROOT back to that
//     host directory (Plugin.ScopedPath in moby). So the server is told to
//     mount at <that host directory>/<derived>: Docker hands exactly that
//     mount to the container, and, the mount being shared, it shows up
//     inside the plugin at DATA_ROOT/<derived> too.
//
// The host directory is PX_MOUNT_ROOT, or found from the plugin's own
// mountinfo (DetectMountRoot). Every Mount checks that the server's mount
// did appear at the target, so a wrong mapping fails loudly instead of
// giving a container an empty directory.

var propagatedMountRe = regexp.MustCompile(`/plugins/[0-9a-f]{64}/propagated-mount$`)

// DetectMountRoot finds the host path of dataRoot. When dataRoot is a
// managed plugin's propagated mount, the mount's root in
// /proc/self/mountinfo is <docker root>/plugins/<id>/propagated-mount as a
// path inside its filesystem: the host path when Docker's root is on the
// host's root filesystem, and /plugins/<id>/propagated-mount when Docker's
// root is a filesystem of its own, which is then assumed to be mounted at
// /var/lib/docker. Otherwise snapvol runs on the host and dataRoot is the
// host path. how says which case applied.
func DetectMountRoot(dataRoot string) (path, how string) {
	dataRoot = filepath.Clean(dataRoot)
	root, ok := mountpoint.MountRoot(dataRoot)
	if ok && propagatedMountRe.MatchString(root) {
		if strings.HasPrefix(root, "/plugins/") {
			return "/var/lib/docker" + root, "managed plugin, Docker root assumed at /var/lib/docker (set PX_MOUNT_ROOT if it is elsewhere)"
		}
		return root, "managed plugin (from the propagated mount)"
	}
	return dataRoot, "DATA_ROOT (snapvol runs on the host)"
}

// hostPath maps a target under DATA_ROOT to the path the server mounts at.
func (b *Backend) hostPath(target string) (string, error) {
	rel, err := filepath.Rel(filepath.Clean(b.cfg.DataRoot), filepath.Clean(target))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("mount target %s is not below DATA_ROOT %s", target, b.cfg.DataRoot)
	}
	return filepath.Join(b.mountRoot, rel), nil
}

// Mount has the server attach the volume to this host and mount it at
// the host path of target, then checks the mount is visible at target.
func (b *Backend) Mount(ctx context.Context, id, target string) error {
	host, err := b.hostPath(target)
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
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("creating mount point %s for %q: %w", target, name, err)
	}
	for _, p := range v.AttachPath {
		if filepath.Clean(p) == host {
			// The server still counts a mount that is gone (a reboot, or a
			// lazy unmount behind its back): clear it so it mounts again.
			if err := b.release(ctx, v, host, false); err != nil {
				return err
			}
		}
	}
	wasAttached := attached(v)
	if !wasAttached {
		_, err := b.rest.set(ctx, fmt.Sprintf("attaching %q (%s)", name, id), id, &api.VolumeSetRequest{
			Action: &api.VolumeStateAction{Attach: api.VolumeActionParam_VOLUME_ACTION_PARAM_ON},
		})
		switch {
		case notSupported(err):
			// Filesystem drivers (btrfs, vfs, nfs) have no device to attach.
			wasAttached = true
		case err != nil:
			_ = mountpoint.RemoveMountPoint(target)
			return err
		}
	}
	undo := func(cause error) error {
		if err := b.release(ctx, v, host, !wasAttached); err != nil {
			cause = fmt.Errorf("%w (undoing it also failed: %v)", cause, err)
		}
		_ = mountpoint.RemoveMountPoint(target)
		return cause
	}
	if _, err := b.rest.set(ctx, fmt.Sprintf("mounting %q (%s) at %s", name, id, host), id, &api.VolumeSetRequest{
		Action: &api.VolumeStateAction{Mount: api.VolumeActionParam_VOLUME_ACTION_PARAM_ON, MountPath: host},
	}); err != nil {
		return undo(err)
	}
	if !mountpoint.IsMountPoint(target) {
		if host == target {
			return undo(fmt.Errorf("the OpenStorage server reports %q (%s) mounted at %s, but nothing is mounted there", name, id, host))
		}
		return undo(fmt.Errorf("the OpenStorage server mounted %q (%s) at host path %s, but it did not appear at %s inside the plugin: "+
			"PX_MOUNT_ROOT (now %s, from %s) must be the host path of DATA_ROOT %s; for a managed plugin that is "+
			"<docker root>/plugins/<plugin id>/propagated-mount", name, id, host, target, b.mountRoot, b.detected, b.cfg.DataRoot))
	}
	if host == target && isKind(v, storage.KindClone) {
		// The OpenStorage v1 mount action takes no options; on the host
		// the server's mount is the one Docker binds, so it is made
		// nosuid,nodev here (see cloneKeys for the managed plugin).
		if err := mountpoint.SetFlags(target, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
			return undo(fmt.Errorf("clone %q (%s) at %s: %w", name, id, target, err))
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

// Unmount has the server unmount the volume from target's host path and
// detach it once nothing else holds it, then removes the mount point if
// it is empty. Without an id (a stray mount) only this host's mount goes;
// the server's record of it, if any, is cleared when the object is
// deleted (detachAll) or mounted there again.
func (b *Backend) Unmount(ctx context.Context, id, target string) error {
	host, err := b.hostPath(target)
	if err != nil {
		return err
	}
	if id == "" {
		return mountpoint.Unbind(target)
	}
	v, err := b.rest.inspect(ctx, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		// The volume is gone; only a stale mount point can remain here.
		return mountpoint.Unbind(target)
	case err != nil:
		return err
	}
	mountedThere, others := mountpoint.IsMountPoint(target), 0
	for _, p := range v.AttachPath {
		if filepath.Clean(p) == host {
			mountedThere = true
		} else {
			others++
		}
	}
	if mountedThere {
		if err := b.release(ctx, v, host, false); err != nil {
			return err
		}
	}
	if mountpoint.IsMountPoint(target) {
		// The server does not know this mount (it lost track of it): the
		// mount point is ours, below DATA_ROOT, so it goes here; a detach
		// with it in place would fail or pull the device from under it.
		if err := mountpoint.Unbind(target); err != nil {
			return fmt.Errorf("%q (%s): the OpenStorage server left %s mounted and it could not be unmounted here: %w", volumeName(v), id, target, err)
		}
	}
	if others == 0 && attached(v) {
		if err := b.detach(ctx, v); err != nil {
			return err
		}
	}
	if err := mountpoint.RemoveMountPoint(target); err != nil {
		return fmt.Errorf("%q (%s): %w", volumeName(v), id, err)
	}
	return nil
}

func (b *Backend) Mounted(target string) bool { return mountpoint.IsMountPoint(target) }
