package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/snapvol/snapvol/admin"
	"github.com/snapvol/snapvol/driver/names"
	"github.com/snapvol/snapvol/internal/tick"
)

// Run pulls every tag already pulled of each replica source every
// PULL_EVERY, until ctx ends; with PULL_EVERY 0 it does nothing (pulls
// then happen on first use and on snapvol pull only).
func (f *Fleet) Run(ctx context.Context) {
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

// Handlers are the fleet's routes on the admin socket.
func (f *Fleet) Handlers() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /v1/fleet/push":    http.HandlerFunc(f.servePush),
		"POST /v1/fleet/pull":    http.HandlerFunc(f.servePull),
		"GET /v1/fleet/replicas": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { reply(w, f.Replicas(), nil) }),
	}
}

// opBudget bounds one push or pull over the admin socket: streams of a
// large source take minutes.
const opBudget = time.Hour

func (f *Fleet) servePush(w http.ResponseWriter, r *http.Request) {
	var req admin.PushRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(w, nil, fmt.Errorf("%w: %v", names.ErrInvalid, err))
		return
	}
	source, ref, ok := cutRef(req.Snapshot)
	if !ok {
		reply(w, nil, fmt.Errorf("%w: %q: want SOURCE@REF", names.ErrInvalid, req.Snapshot))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opBudget)
	defer cancel()
	res, err := f.Push(ctx, source, ref, req.Repository)
	reply(w, admin.PushResult(res), err)
}

func (f *Fleet) servePull(w http.ResponseWriter, r *http.Request) {
	var req admin.PullRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(w, nil, fmt.Errorf("%w: %v", names.ErrInvalid, err))
		return
	}
	source, tag, _ := cutRef(req.Source)
	if tag == names.RefLatest {
		tag = ""
	}
	ctx, cancel := context.WithTimeout(r.Context(), opBudget)
	defer cancel()
	res, err := f.Pull(ctx, source, tag)
	out := admin.PullResult{Source: res.Source, Tags: []admin.PulledTag{}}
	for _, t := range res.Tags {
		out.Tags = append(out.Tags, admin.PulledTag(t))
	}
	reply(w, out, err)
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

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, names.ErrInvalid):
			code = http.StatusBadRequest
		case errors.Is(err, ErrPublish):
			code = http.StatusForbidden
		case errors.Is(err, ErrRegistry):
			code = http.StatusBadGateway
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(admin.Error{Error: err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// Checked is when the registry last answered a pull of source, and the
// last pull's error (nil once one worked).
func (f *Fleet) Checked(source string) (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checked[source], f.failed[source]
}
