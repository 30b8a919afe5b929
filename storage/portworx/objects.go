package portworx

// How an OpenStorage volume is read as a storage.Object: its kind, name,
// parent and labels, and which volumes are this plugin's.

import (
	"time"

	"github.com/libopenstorage/openstorage/api"

	"github.com/snapvol/snapvol/storage"
)

// ours reports whether this instance made the object labels belong to;
// objects of other instances sharing the cluster are never touched.
func (b *Backend) ours(labels map[string]string) bool {
	_, ok := storage.KindOf(labels)
	return ok && labels[storage.LabelInstance] == b.cfg.Instance
}

// ownLabels are v's labels if they are its own. OpenStorage objects
// inherit labels: a clone carries its snapshot's (the server copies the
// parent's; servers since 2024-09 merge the ones the request asked for
// over them, older ones drop those), and a snapshot Portworx or pxctl
// takes of a snapvol volume carries the volume's. Labels naming another object (storage.LabelName), and a
// volume's labels on an object that has a parent, describe the parent:
// the object is not what they say, and not snapvol's. Objects labelled
// before LabelName have none and are taken at their word.
func ownLabels(v *api.Volume) map[string]string {
	l := locatorLabels(v)
	if n := l[storage.LabelName]; n != "" && n != volumeName(v) {
		return nil
	}
	if k, ok := storage.KindOf(l); ok && k == storage.KindVolume && parentOf(v) != "" {
		return nil
	}
	return l
}

// mine says whether this instance made v.
func (b *Backend) mine(v *api.Volume) bool { return b.ours(ownLabels(v)) }

// kindOf classifies what any snapvol instance made, so one host never
// takes another's clone for a source or a snapshot.
func kindOf(v *api.Volume) (storage.Kind, bool) { return storage.KindOf(ownLabels(v)) }

func isKind(v *api.Volume, k storage.Kind) bool {
	got, ok := kindOf(v)
	return ok && got == k
}

func locatorLabels(v *api.Volume) map[string]string {
	if v.Locator == nil {
		return nil
	}
	return v.Locator.VolumeLabels
}

func volumeName(v *api.Volume) string {
	if v.Locator == nil {
		return ""
	}
	return v.Locator.Name
}

func parentOf(v *api.Volume) string {
	if v.Source == nil {
		return ""
	}
	return v.Source.Parent
}

func created(v *api.Volume) time.Time {
	if v.Ctime == nil {
		return time.Time{}
	}
	return time.Unix(v.Ctime.Seconds, int64(v.Ctime.Nanos)).UTC()
}

func copyLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

// object is v as a storage.Object. The volume ID is the Identity: the
// server never gives it to another volume.
func (b *Backend) object(v *api.Volume, kind storage.Kind) storage.Object {
	o := storage.Object{
		ID: v.Id, Identity: v.Id, Name: volumeName(v), Kind: kind,
		Created: created(v), Labels: objectLabels(ownLabels(v)),
	}
	switch kind {
	case storage.KindSnapshot:
		o.Parent = storage.SnapshotParent(o.Labels, parentOf(v))
	case storage.KindClone:
		o.Parent = parentOf(v)
	}
	return o
}

// objectLabels are the labels the driver sees: LabelName is the
// backend's own, and an empty value is a label blanked out (see
// finishClone).
func objectLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		if v != "" && k != storage.LabelName {
			out[k] = v
		}
	}
	return out
}

// identity is o's Identity, which is its ID here when the caller has only
// that.
func identity(o storage.Object) string {
	if o.Identity != "" {
		return o.Identity
	}
	return o.ID
}

// labels adds this instance's labels, and the name of the object they go
// on, to the driver's.
func (b *Backend) labels(l map[string]string, name string) map[string]string {
	out := copyLabels(l)
	out[storage.LabelInstance] = b.cfg.Instance
	out[storage.LabelName] = name
	if b.host != "" {
		out[storage.LabelHost] = b.host
	}
	return out
}
