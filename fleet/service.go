package fleet

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/internal/tick"
)

// Run pulls every tag already pulled of each replica source every
// PULL_EVERY, until ctx ends; with PULL_EVERY 0 it does nothing (pulls
// then happen on first use and on snapvol pull only). Pushes and pulls
// in flight end with ctx (bounded), so the plugin's shutdown is not held
// by a registry that hangs.
func (f *Fleet) Run(ctx context.Context) {
	f.mu.Lock()
	f.stop = ctx
	f.mu.Unlock()
	if f.cfg.PullEvery <= 0 || len(f.cfg.Replicas) == 0 {
		return
	}
	tick.Every(ctx, f.cfg.PullEvery, func() {
		for source := range f.cfg.Replicas {
			tags := []string{}
			for tag := range f.visibleOf(ctx, source) {
				tags = append(tags, tag)
			}
			sort.Strings(tags)
			for _, tag := range tags {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
				if _, err := f.Pull(pctx, source, tag); err != nil {
					f.cfg.Log.WithError(err).WithFields(logrus.Fields{"source": source, "tag": tag}).Warn("pulling a replica source; clones come from the newest local copy")
				}
				cancel()
			}
		}
	})
}

// Replicas is what snapvol pull and the admin API show of the replica
// sources: each tag's version here, its age, and whether the registry
// answered the last pull.
func (f *Fleet) Replicas() []admin.Replica {
	out := []admin.Replica{}
	now := time.Now()
	srcs := make([]string, 0, len(f.cfg.Replicas))
	for s := range f.cfg.Replicas {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	for _, source := range srcs {
		rp := admin.Replica{Source: source, Repository: f.cfg.Replicas[source].String(), Tags: []admin.ReplicaTag{}}
		f.mu.Lock()
		if t, ok := f.checked[source]; ok {
			tt := t.UTC()
			rp.Checked = &tt
		}
		if err := f.failed[source]; err != nil {
			rp.Error = err.Error()
		}
		f.mu.Unlock()
		vis := f.visibleOf(context.Background(), source)
		for tag, uuid := range vis {
			reg, ok := f.cfg.Driver.PulledVersion(source, tag)
			if !ok {
				continue
			}
			rp.Tags = append(rp.Tags, admin.ReplicaTag{Tag: tag, UUID: uuid, Snapshot: reg.Object, Time: reg.Time.UTC(), AgeSeconds: int64(now.Sub(reg.Time).Seconds())})
		}
		sort.Slice(rp.Tags, func(i, j int) bool { return rp.Tags[i].Tag < rp.Tags[j].Tag })
		out = append(out, rp)
	}
	return out
}

// opBudget bounds one push or pull over the admin socket: streams of a
// large source take minutes.
const opBudget = time.Hour

// ServePush is POST /v1/fleet/push on the admin socket (snapvol push
// SNAPSHOT REPOSITORY); the plugin serves it with route.Handle, whose
// wire gives each error its status from the one error table
// (metrics/classes.go: ErrPublish 403, ErrRegistry 502).
func (f *Fleet) ServePush(ctx context.Context, req admin.PushRequest) (admin.PushResult, error) {
	source, ref, ok := cutRef(req.Snapshot)
	if !ok {
		return admin.PushResult{}, fmt.Errorf("%w: %q: want SOURCE@REF", names.ErrInvalid, req.Snapshot)
	}
	ctx, cancel := context.WithTimeout(ctx, opBudget)
	defer cancel()
	res, err := f.Push(ctx, source, ref, req.Repository)
	return admin.PushResult(res), err
}

// ServePull is POST /v1/fleet/pull on the admin socket (snapvol pull
// SOURCE[@TAG]; @latest or no tag: every tag).
func (f *Fleet) ServePull(ctx context.Context, req admin.PullRequest) (admin.PullResult, error) {
	source, tag, _ := cutRef(req.Source)
	if tag == names.RefLatest {
		tag = ""
	}
	ctx, cancel := context.WithTimeout(ctx, opBudget)
	defer cancel()
	res, err := f.Pull(ctx, source, tag)
	out := admin.PullResult{Source: res.Source, Tags: []admin.PulledTag{}}
	for _, t := range res.Tags {
		out.Tags = append(out.Tags, admin.PulledTag(t))
	}
	return out, err
}

func cutRef(s string) (string, string, bool) {
	src, ref, ok := cutAt(s)
	return src, ref, ok && src != "" && ref != ""
}

func cutAt(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '@' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Checked is when the registry last answered a pull of source, and the
// last pull's error (nil once one worked).
func (f *Fleet) Checked(source string) (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checked[source], f.failed[source]
}
