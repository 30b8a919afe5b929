package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/storage"
)

// Attack: a container makes a subvolume inside its clone (no capability
// needed) and writes into it, past CLONE_SIZE. The clone's group holds
// every subvolume below the clone, at any depth, so the write stops at
// the clone's limit; the bytes show as the clone's; and the clone, at its
// limit, is still deleted.
func TestNestedSubvolumesHeldToCloneLimit(t *testing.T) {
	root := testPoolSize(t, 768<<20)
	b, err := Open(Config{Pool: root, CloneSize: 32 << 20, Reserve: Reserve{Percent: 10}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	_, _, clone := cloneOf(t, b, "prod")
	mnt := mountAt(t, b, clone.ID)
	deep := mnt
	for _, n := range []string{"nested", "deeper"} {
		deep = filepath.Join(deep, n)
		if err := subvolCreate(deep); err != nil {
			t.Fatal(err)
		}
	}
	n, err := fill(t, deep, "fill", 300<<20)
	if !isQuotaErr(err) || n > 32<<20 {
		t.Fatalf("a subvolume nested two deep in a clone limited to 32M took %dM: %v; want EDQUOT by 32M", n>>20, err)
	}
	t.Logf("nested subvolume: wrote %dM, then %v", n>>20, err)
	u, err := b.ObjectUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := u[clone.ID]; got.Limit != 32<<20 || got.Bytes < n/2 {
		t.Errorf("ObjectUsage of the clone = %+v; want its nested subvolume's %dM and limit 32M", got, n>>20)
	}
	if err := b.Unmount(ctx, clone.ID, mnt); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, clone.ID); err != nil {
		t.Fatalf("deleting a clone at its limit with nested subvolumes: %v", err)
	}
	if isSubvolume(filepath.Join(root, clone.ID)) {
		t.Fatal("the clone is still there")
	}
}

// A clone whose nested subvolume filled the clones' share of the pool
// (the reserve group at its limit) is deleted all the same: Delete lifts
// the clone's own limits first, no other group's.
func TestCloneFillingTheReserveIsRemovable(t *testing.T) {
	root := testPoolSize(t, 512<<20)
	b, err := Open(Config{Pool: root, Reserve: Reserve{Percent: 40}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	_, snap, clone := cloneOf(t, b, "prod")
	other, err := b.Clone(ctx, snap, storage.CloneLabels("other", "prod"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountAt(t, b, clone.ID)
	nested := filepath.Join(mnt, "nested")
	if err := subvolCreate(nested); err != nil {
		t.Fatal(err)
	}
	n, err := fill(t, nested, "fill", 512<<20)
	if !isQuotaErr(err) {
		t.Fatalf("a nested subvolume wrote %dM: %v; want EDQUOT at the reserve", n>>20, err)
	}
	if err := b.Unmount(ctx, clone.ID, mnt); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, clone.ID); err != nil {
		t.Fatalf("deleting a clone that filled the clones' share: %v", err)
	}
	// The other clone is still held to the reserve.
	f, err := openDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	groups, err := qgroups(f)
	if err != nil {
		t.Fatal(err)
	}
	if groups[reserveGroupID].limit == 0 {
		t.Error("the reserve group's limit was lifted")
	}
	id, err := subvolID(filepath.Join(root, other.ID))
	if err != nil {
		t.Fatal(err)
	}
	parents, _, err := qgroupRelations(f)
	if err != nil {
		t.Fatal(err)
	}
	if own := ownGroup(parents[id]); own == 0 || !contains(parents[own], reserveGroupID) {
		t.Errorf("the other clone's groups: %v, its group's: %v", parents[id], parents[own])
	}
}

func contains(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// quotaClone opens a backend on a fresh 512M pool with 24M clones and a
// reserve of reservePercent, and makes a clone of a new volume "prod". It
// returns the backend, the pool's root directory (for the qgroup calls),
// the clone and the clone's own quota group; both close at the end of the
// test.
func quotaClone(t *testing.T, reservePercent float64) (*Backend, *os.File, storage.Object, uint64) {
	t.Helper()
	root := testPoolSize(t, 512<<20)
	b, err := Open(Config{Pool: root, CloneSize: 24 << 20, Reserve: Reserve{Percent: reservePercent}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	_, _, clone := cloneOf(t, b, "prod")
	f, err := openDir(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	id, err := subvolID(filepath.Join(root, clone.ID))
	if err != nil {
		t.Fatal(err)
	}
	parents, _, err := qgroupRelations(f)
	if err != nil {
		t.Fatal(err)
	}
	own := ownGroup(parents[id])
	if own == 0 {
		t.Fatalf("the clone is in no group of its own: %v", parents[id])
	}
	return b, f, clone, own
}

// Limits lifted by hand (btrfs qgroup limit none …) are read back from
// the kernel, logged naming the group, and set again: the reserve group's
// and a clone's.
func TestLimitsChangedByHandAreRestored(t *testing.T) {
	b, f, clone, own := quotaClone(t, 20)
	var logs bytes.Buffer
	l := logrus.New()
	l.SetOutput(&logs)
	b.SetLog(l)
	// By hand, as the operator freed a stuck clone.
	for _, g := range []uint64{own, reserveGroupID} {
		if err := qgroupSetLimit(f, g, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.quota.refresh(); err != nil {
		t.Fatal(err)
	}
	groups, err := qgroups(f)
	if err != nil {
		t.Fatal(err)
	}
	if groups[own].limit != 24<<20 {
		t.Errorf("clone group %s limit %d after the refresh; want 24M again", qgroupName(own), groups[own].limit)
	}
	if groups[reserveGroupID].limit == 0 {
		t.Errorf("reserve group limit still lifted after the refresh")
	}
	for _, g := range []uint64{own, reserveGroupID} {
		if !strings.Contains(logs.String(), "qgroup="+qgroupName(g)) {
			t.Errorf("no warning names %s:\n%s", qgroupName(g), logs.String())
		}
	}
	n, err := fill(t, mountAt(t, b, clone.ID), "fill", 128<<20)
	if !isQuotaErr(err) || n > 24<<20 {
		t.Fatalf("after the refresh the clone wrote %dM: %v", n>>20, err)
	}
}

// Clones made when all clones shared one level-1 group (before clone
// groups) get a group of their own at Open, with their nested
// subvolumes, their limit carried over; the shared group goes.
func TestOldSharedGroupMigrated(t *testing.T) {
	root := testPoolSize(t, 512<<20)
	old, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	_, _, clone := cloneOf(t, old, "prod")
	old.Close()
	f, err := openDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The layout of 65aeefa: quotas on, 1/snap with the clone in it, the
	// clone's limit on 0/ID, a nested subvolume inherited into 1/snap.
	if _, err := enableQuotas(f, false); err != nil {
		t.Fatal(err)
	}
	id, err := subvolID(filepath.Join(root, clone.ID))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{qgroupCreate(f, legacyGroupID), qgroupAssign(f, id, legacyGroupID), qgroupSetLimit(f, id, 16<<20), subvolCreate(filepath.Join(root, clone.ID, "nested"))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := Open(Config{Pool: root, CloneSize: 64 << 20, Reserve: Reserve{Percent: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n, err := fill(t, filepath.Join(root, clone.ID, "nested"), "fill", 128<<20)
	if !isQuotaErr(err) || n > 16<<20 {
		t.Fatalf("the nested subvolume of an old clone limited to 16M wrote %dM: %v", n>>20, err)
	}
	groups, err := qgroups(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := groups[legacyGroupID]; ok {
		t.Errorf("the old shared group %s is still there", qgroupName(legacyGroupID))
	}
}

// A deleted clone's group goes once the kernel has dropped the clone; the
// spare groups made ahead stay.
func TestDeletedCloneGroupsAreSwept(t *testing.T) {
	b, f, clone, own := quotaClone(t, 10)
	if err := b.Delete(context.Background(), clone.ID); err != nil {
		t.Fatal(err)
	}
	sweep := func() map[uint64]qgroupUsage {
		t.Helper()
		b.quota.mu.Lock()
		defer b.quota.mu.Unlock()
		delete(b.quota.born, own) // past its grace
		groups, err := qgroups(f)
		if err != nil {
			t.Fatal(err)
		}
		b.quota.sweep(f, groups)
		if groups, err = qgroups(f); err != nil {
			t.Fatal(err)
		}
		return groups
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_ = ioctl(f.Fd(), 0x9408, nil) // BTRFS_IOC_SYNC: commit, so the cleaner drops the clone
		groups := sweep()
		if _, ok := groups[own]; !ok {
			for _, s := range b.quota.spare {
				if _, ok := groups[s]; !ok {
					t.Errorf("spare group %s was swept", qgroupName(s))
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted clone's group %s is still there after 30s", qgroupName(own))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
