// Package driver is snapvol's Docker VolumeDriver: it maps Docker volume
// names to records in the store and to objects in a storage.Backend,
// counts mounts, and repairs what a crash interrupted. It knows nothing of
// btrfs or HTTP.
//
// Glossary (the words the code and docs/ use, one meaning each; docs/design.md has it too):
//
//   - volume: a Docker volume, i.e. one Record in the store.
//   - plain volume: a volume whose name has no @ (app-production); its
//     storage is a regular backend volume. Production lives in one.
//   - clone volume: a volume that names a source and a ref
//     (app-production@latest, or a plain name with -o from=); its storage
//     is made at the first Mount and destroyed at Remove or when idle.
//   - operator volume: a clone volume the operator made (snapvol volume
//     create, Operator.Create; snapvol volume rm is Operator.Remove, for
//     any volume); Record.Access says what Docker users may do with it.
//   - backend volume: the storage object of a plain volume (a btrfs
//     subvolume, a Portworx volume); Backend.CreateVolume and
//     Backend.RemoveVolume make and destroy one, never a record.
//   - source: the plain volume a clone volume copies.
//   - ref: which snapshot of the source: latest, now, or a snapshot name.
//   - snapshot: a read-only point-in-time copy of a source in the backend.
//   - taken: why the plugin took a snapshot: plugin (for @latest or @now),
//     named (snapvol snapshot create) or scheduled (storage.Taken*); the
//     snapvol.taken label and a registered snapshot's Kind use these words.
//   - clone: the writable backend object made from a snapshot for a clone
//     volume (one per volume, or one per container mount with +each).
//   - attachment: one backend object Docker mounts, with its mount target
//     and mount count: a plain volume's object, or one clone. Every Mount
//     and Unmount works on exactly one attachment, chosen by its key ("" or,
//     for +each, the Docker mount ID).
//   - intent: what a record says the plugin is about to do to the backend,
//     written before and cleared after; reconcile finishes or undoes it.
//   - pending: said of an intent only: a volume whose intent is not yet
//     cleared shows as pending in docker volume inspect and snapvol ls.
//   - in progress: a backend call the storage carries on with past the
//     request (storage.ErrInProgress); a mount left so is recorded in
//     Attachment.InProgressSince, and the retry picks it up.
//   - request: one Docker VolumeDriver call or operator command, from
//     where it enters (request.go: a Driver handler, or As(Caller)'s for
//     the socket's peer; an Operator method) to its answer. Made once
//     there, it carries the budget (its context's deadline), the caller,
//     the logger with its req id, and the step it is at; the code below
//     reads them from its context.
//   - operator API: Operator, what the admin socket asks for (snapvol
//     ls, df, volume, snapshot, schedule), apart from the VolumeDriver
//     API the Driver serves Docker; its wire types are package admin's.
//   - claim: answering Docker's Get for a grammar name not yet recorded.
//   - reconcile: the repair at start (and retried every sweep).
//   - sweep: destroying plugin objects no record owns, and collecting
//     snapshots nothing needs.
//   - reap: destroying clones idle longer than their ttl.
//   - staging: the local pool's staging/ directory, where a clone is made
//     before it is renamed into clones/ (what a crash left there goes at
//     the next start); nothing else.
//   - server path: where the Portworx server is told to mount a volume
//     (PX_MOUNT_DIR/snapvol-INSTANCE/KEY); snapvol binds it onto the mount
//     target under DATA_ROOT.
//   - collect: deleting the plugin's snapshots nothing needs (refs.go's
//     needed): none a clone was made from, a name is registered for or a
//     volume's ref names, and not the one @latest would reuse.
//
// Lock order. Every path takes the locks it needs in this order, never
// backwards, and holds at most one of each kind:
//
//  1. a volume's lock (Driver.locks, by name): one at a time;
//  2. refs.gc: for reading from choosing a snapshot until the clone made of
//     it (or the name registered for it) is recorded, for writing while
//     snapshots are collected;
//  3. refs.sources, by source: @latest choosing or taking its snapshot;
//  4. the backend's own locks;
//  5. the store (bbolt and its index).
//
// So a Mount (volume, then gc to make the clone), snapvol snapshot create
// --from X (X's lock, then gc) and a collection queued on gc (snapshot rm,
// the sweep, a Remove's or +each Unmount's collection, run after the
// volume's lock is let go) cannot wait on each other in a circle. Only
// refs's methods (cloning, collecting, resolve) touch gc and sources, and
// only lockVolume takes a volume's lock. Every wait ends with the budget
// of the request (or background pass) it serves, with an error wrapping
// ErrLockTimeout that names the volume; a lock wait never outlives its
// request. The order is checked at run time: the context carries the
// highest level held (locks.go) and a lock taken out of order is refused
// with ErrLockOrder. The other mutexes (pool, claim cache, progress, the
// @now slots) are leaves: nothing is taken while they are held. A @now
// request waits for the next snapshot of its source (now.go, the group
// commit) holding refs.gc for reading, as long as its budget allows; that
// snapshot is taken on a goroutine holding no driver lock.
//
// Files: handlers.go holds the eight VolumeDriver handlers; attach.go the
// one Mount and one Unmount path over attachments; operator.go what Docker
// may do with an operator's volume; now.go @now's group commit; intent.go the intent
// protocol and its failpoints; locks.go the lock order's check; refs.go
// the @latest reuse and snapshot retention rules; status.go what Get
// shows; reconcile.go the repair; run.go the reaper and the background
// loop.
package driver
