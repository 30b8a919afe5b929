package portworx

// The -o options a volume and a clone take (OpenStorage spec keys) and how
// they become a VolumeSpec.

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/libopenstorage/openstorage/api"
	"github.com/libopenstorage/openstorage/api/spec"

	"github.com/snapvol/snapvol/storage"
)

// volumeKeys are the OpenStorage spec keys (api.Spec*) accepted with -o;
// api/spec parses their values. parent and name are not: the plugin
// decides what a volume is made from and what it is called.
var volumeKeys = map[string]bool{
	api.SpecNodes: true, api.SpecEphemeral: true, api.SpecShared: true, api.SpecSticky: true,
	api.SpecSecure: true, api.SpecCompressed: true, api.SpecSize: true, api.SpecScale: true,
	api.SpecFilesystem: true, api.SpecBlockSize: true, api.SpecHaLevel: true, api.SpecPriority: true,
	api.SpecPriorityAlias: true, api.SpecSnapshotInterval: true, api.SpecSnapshotSchedule: true,
	api.SpecAggregationLevel: true, api.SpecDedupe: true, api.SpecPassphrase: true, api.SpecGroup: true,
	api.SpecGroupEnforce: true, api.SpecZones: true, api.SpecRacks: true, api.SpecLabels: true,
	api.SpecIoProfile: true,
}

// cloneKeys are the spec keys that can change on an existing volume, and
// so apply to a clone, which inherits everything else from its snapshot.
// sticky is not among them: a sticky clone could never be deleted.
// secret_key is not a spec change: a clone of a volume encrypted with a
// per-volume secret is attached with that secret's name (Portworx needs
// it on every attach), which the clone keeps in storage.LabelSecretKey.
//
// Space on Portworx. size= on a clone sets its volume's spec size (a
// volume update right after the clone is made). What that does and does
// not enforce:
//   - A Portworx volume is a block device of its spec size with a
//     filesystem on it: a clone can never hold more than its size; a
//     container writing past it gets ENOSPC. That limit holds whatever
//     snapvol does.
//   - A clone starts as large as its snapshot, that is its source. size=
//     can grow it (an online resize); it cannot shrink it, and a size
//     below the snapshot's is refused before anything is made.
//   - CLONE_SIZE and POOL_RESERVE are local settings: nothing in the
//     OpenStorage v1 API limits what clones take together, and Portworx
//     storage pools are thin-provisioned, so clones that all write fill
//     the pool production is on. Portworx's own capacity management
//     (pool alerts, thin-provisioning limits) governs that, outside
//     snapvol.
//   - The v1 mount action carries a path only, no mount options: a clone
//     cannot be asked to be mounted nosuid,nodev. The server mounts it at
//     a server path under PX_MOUNT_DIR and snapvol binds that onto the
//     path Docker is given, nosuid,nodev, whether snapvol runs on the
//     host or as a managed plugin (see mount.go).
var cloneKeys = map[string]bool{
	api.SpecHaLevel: true, api.SpecPriority: true, api.SpecPriorityAlias: true,
	api.SpecIoProfile: true, api.SpecLabels: true, api.SpecSnapshotInterval: true,
	api.SpecSize: true, api.SpecPassphrase: true,
}

// OptionKey accepts the OpenStorage spec keys.
func (b *Backend) OptionKey(key string) bool { return volumeKeys[key] }

// CheckOptions parses opts with api/spec as CreateVolume (KindVolume) or
// Clone (KindClone) will, so a bad key or value fails docker volume create
// instead of every later Mount.
func (b *Backend) CheckOptions(kind storage.Kind, opts map[string]string) error {
	var err error
	if kind == storage.KindClone {
		_, err = cloneSpec(opts)
	} else {
		_, _, err = volumeSpec(opts)
	}
	return err
}

// volumeSpec parses the options of a new regular volume.
func volumeSpec(opts map[string]string) (*api.VolumeSpec, *api.VolumeLocator, error) {
	sp, loc, src, err := spec.NewSpecHandler().SpecFromOpts(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("options %v: %w", opts, err)
	}
	if err := checkUserLabels(loc.VolumeLabels); err != nil {
		return nil, nil, err
	}
	if src.Parent != "" {
		return nil, nil, errors.New("option parent is not allowed; clone with NAME@REF or -o from=")
	}
	if err := checkHaLevel(opts, sp); err != nil {
		return nil, nil, err
	}
	return sp, loc, nil
}

// checkHaLevel refuses a replica count Portworx does not have: it keeps
// 1 to 3 replicas, and an OpenStorage server may ignore any other value
// (the fake driver's Set does) rather than refuse it.
func checkHaLevel(opts map[string]string, sp *api.VolumeSpec) error {
	if _, ok := opts[api.SpecHaLevel]; ok && (sp.HaLevel < 1 || sp.HaLevel > 3) {
		return fmt.Errorf("option %s=%s: the HA level must be 1, 2 or 3", api.SpecHaLevel, opts[api.SpecHaLevel])
	}
	return nil
}

// cloneSpec parses the options of a clone: only keys that can change on
// an existing volume apply (nil spec when there are none).
func cloneSpec(opts map[string]string) (*api.VolumeSpec, error) {
	for k := range opts {
		if !cloneKeys[k] {
			return nil, fmt.Errorf("option %s= cannot be applied to a clone, which inherits it from the snapshot; clones take %s", k, strings.Join(sortedKeys(cloneKeys), ", "))
		}
	}
	if len(opts) == 0 {
		return nil, nil
	}
	sp, loc, _, err := spec.NewSpecHandler().UpdateSpecFromOpts(opts, &api.VolumeSpec{VolumeLabels: map[string]string{}}, &api.VolumeLocator{VolumeLabels: map[string]string{}}, nil)
	if err != nil {
		return nil, fmt.Errorf("clone options %v: %w", opts, err)
	}
	if err := checkUserLabels(loc.VolumeLabels); err != nil {
		return nil, err
	}
	if err := checkHaLevel(opts, sp); err != nil {
		return nil, err
	}
	return sp, nil
}

func checkUserLabels(l map[string]string) error {
	for k := range l {
		if k == storage.LabelOwner || strings.HasPrefix(k, storage.LabelOwner+".") {
			return fmt.Errorf("label %q is reserved for snapvol's own bookkeeping", k)
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
