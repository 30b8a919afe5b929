package store

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// upgrade brings a database to SchemaVersion inside Open's transaction: a
// new database is stamped, an older one is migrated step by step, and a
// newer one (a rollback to this build after an upgrade) is refused, naming
// both versions, before anything is read or written.
func upgrade(path string, meta, vols *bolt.Bucket) error {
	v := meta.Get(keySchema)
	if v == nil {
		return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	}
	have, err := strconv.Atoi(string(v))
	if err != nil || have < 1 {
		return fmt.Errorf("%w: %s has schema %q, which no snapvol wrote", ErrSchema, path, v)
	}
	if have > SchemaVersion {
		return fmt.Errorf("%w: %s has schema version %d, this snapvol reads up to version %d; run the newer snapvol that wrote it",
			ErrSchema, path, have, SchemaVersion)
	}
	for ; have < SchemaVersion; have++ {
		if err := migrations[have](vols); err != nil {
			return fmt.Errorf("migrating %s from schema %d to %d: %w", path, have, have+1, err)
		}
	}
	return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
}

// migrations[v] rewrites every record of schema v into schema v+1.
var migrations = map[int]func(vols *bolt.Bucket) error{
	1: migrate1to2,
}

// recordV1 is a record as schema 1 wrote it: a plain volume's object and
// mount count in the record, a clone volume's in Clone or EachClones.
type recordV1 struct {
	Name       string                 `json:"name"`
	Source     string                 `json:"source,omitempty"`
	Ref        string                 `json:"ref,omitempty"`
	Tag        string                 `json:"tag,omitempty"`
	Each       bool                   `json:"each,omitempty"`
	TTL        *time.Duration         `json:"ttl,omitempty"`
	Options    map[string]string      `json:"options,omitempty"`
	Created    time.Time              `json:"created"`
	Object     string                 `json:"object,omitempty"`
	Mounts     int                    `json:"mounts,omitempty"`
	Target     string                 `json:"target,omitempty"`
	Clone      *Attachment            `json:"clone,omitempty"`
	EachClones map[string]*Attachment `json:"each_clones,omitempty"`
	LastUsed   time.Time              `json:"last_used"`
	Intent     *struct {
		Op      string    `json:"op"`
		MountID string    `json:"mount_id,omitempty"`
		Since   time.Time `json:"since"`
	} `json:"pending,omitempty"`
}

// migrate1to2 moves every backend object into Attachments. A schema-1
// "materialize" intent is dropped: schema 2 writes none, and the clone it
// guarded, if made, is a labelled orphan the sweep destroys either way.
func migrate1to2(vols *bolt.Bucket) error {
	out := map[string][]byte{}
	err := vols.ForEach(func(k, v []byte) error {
		var o recordV1
		if err := json.Unmarshal(v, &o); err != nil {
			return fmt.Errorf("record %q: %w", k, err)
		}
		r := Record{
			Name: o.Name, Source: o.Source, Ref: o.Ref, Tag: o.Tag, Each: o.Each, TTL: o.TTL,
			Options: o.Options, Created: o.Created, LastUsed: o.LastUsed,
		}
		if o.Object != "" {
			r.SetAttachment("", &Attachment{Object: o.Object, Target: o.Target, Mounts: o.Mounts})
		}
		if o.Clone != nil {
			r.SetAttachment("", o.Clone)
		}
		for id, c := range o.EachClones {
			r.SetAttachment(id, c)
		}
		if p := o.Intent; p != nil && p.Op != "materialize" {
			r.Intent = &Intent{Op: Op(p.Op), Key: p.MountID, Since: p.Since}
		}
		data, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		out[string(k)] = data
		return nil
	})
	if err != nil {
		return err
	}
	for k, v := range out {
		if err := vols.Put([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}
