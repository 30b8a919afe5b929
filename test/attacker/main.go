// Command attacker is what the hostile CI containers of the attack suite
// (test/attack_test.go) run: static (CGO_ENABLED=0), so it runs in any
// image, and it needs no capability for anything it does. One subcommand
// per primitive an attack is made of; new attacks add theirs.
//
//	attacker subvol PATH             make a btrfs subvolume at PATH
//	attacker sendfd SOCKET DIR       hand a descriptor of directory DIR to whoever
//	                                 listens on the unix socket SOCKET (waiting
//	                                 for it), and exit once it has it
//	attacker swap SOCKET A B N       listen on SOCKET; for each of N descriptors
//	                                 handed over, swap A and B in that directory
//	                                 with renameat2(RENAME_EXCHANGE) as fast as it
//	                                 can until the swaps have failed for 200 ms
//	                                 on end (the directory is gone); print
//	                                 "swaps K" for each, then "total T"
//	attacker nest DIR N              make N subvolumes nested in each other below
//	                                 DIR (DIR/n/n/…, a plain directory between every
//	                                 tenth), a file at the bottom; check each level
//	                                 is a subvolume; print "nested N levels"
//	attacker fill PATH MIB SEED      write MIB MiB over PATH from its start without
//	                                 truncating it (as a database rewrites a table),
//	                                 bytes that differ with SEED, then fsync; print
//	                                 "wrote B bytes", or "wrote B bytes, then ERRNO
//	                                 (message)" and exit 1 when a write or the fsync
//	                                 fails
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "attacker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: attacker subvol|sendfd|swap|nest|fill ...")
	}
	switch cmd, a := args[0], args[1:]; {
	case cmd == "subvol" && len(a) == 1:
		return subvol(a[0])
	case cmd == "sendfd" && len(a) == 2:
		return sendFD(a[0], a[1])
	case cmd == "swap" && len(a) == 4:
		n, err := strconv.Atoi(a[3])
		if err != nil {
			return err
		}
		return swap(a[0], a[1], a[2], n)
	case cmd == "nest" && len(a) == 2:
		n, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		return nest(a[0], n)
	case cmd == "fill" && len(a) == 3:
		mib, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		seed, err := strconv.Atoi(a[2])
		if err != nil {
			return err
		}
		return fill(a[0], mib, seed)
	}
	return fmt.Errorf("unknown command or wrong arguments: %q", args)
}

// subvol makes a subvolume with BTRFS_IOC_SUBVOL_CREATE on its parent
// directory: like mkdir, it needs write access there and no capability.
func subvol(path string) error {
	parent, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	var args struct {
		fd   int64
		name [4088]byte
	}
	copy(args.name[:], filepath.Base(path))
	const iocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(parent), iocSubvolCreate, uintptr(unsafe.Pointer(&args))); errno != 0 {
		return fmt.Errorf("subvolume create %s: %w", path, errno)
	}
	return nil
}

// sendFD connects to sock, sends a descriptor of dir and waits for the
// receiver's one-byte answer: it has it, so this side may exit.
func sendFD(sock, dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var c *net.UnixConn
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	if _, _, err := c.WriteMsgUnix([]byte("x"), unix.UnixRights(fd), nil); err != nil {
		return err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return fmt.Errorf("waiting for the receiver: %w", err)
	}
	fmt.Println("sent")
	return nil
}

// recvFD takes one descriptor from a connection and answers one byte.
func recvFD(c *net.UnixConn) (int, error) {
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return -1, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("no descriptor received (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("no descriptor received (%v)", err)
	}
	if _, err := c.Write([]byte("k")); err != nil {
		unix.Close(fds[0])
		return -1, err
	}
	return fds[0], nil
}

func swap(sock, a, b string, n int) error {
	os.Remove(sock)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	defer l.Close()
	total := 0
	for i := 0; i < n; i++ {
		c, err := l.AcceptUnix()
		if err != nil {
			return err
		}
		fd, err := recvFD(c)
		c.Close()
		if err != nil {
			return err
		}
		k := 0
		var last error
		var failing time.Time
		for {
			err := unix.Renameat2(fd, a, fd, b, unix.RENAME_EXCHANGE)
			if err == nil {
				k++
				failing = time.Time{}
				continue
			}
			last = err
			if failing.IsZero() {
				failing = time.Now()
			} else if time.Since(failing) > 200*time.Millisecond {
				break
			}
		}
		unix.Close(fd)
		total += k
		fmt.Printf("swaps %d (then: %v)\n", k, last)
	}
	fmt.Printf("total %d\n", total)
	return nil
}

// nest makes n subvolume levels below dir, each inside the one before,
// with a plain directory between every tenth (so a deletion that walks
// only subvolume to subvolume misses some), and a file in the deepest.
// Each level is checked to be a subvolume root (inode 256), so the caller
// knows the nesting is real, not a tree of directories.
func nest(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p := dir
	var levels []string
	for i := 0; i < n; i++ {
		if i%10 == 5 {
			p = filepath.Join(p, "plain")
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
		}
		p = filepath.Join(p, "n")
		if err := subvol(p); err != nil {
			return fmt.Errorf("level %d: %w", i+1, err)
		}
		levels = append(levels, p)
	}
	if err := os.WriteFile(filepath.Join(p, "deepest"), []byte("deepest\n"), 0o644); err != nil {
		return err
	}
	for i, l := range levels {
		var st unix.Stat_t
		if err := unix.Lstat(l, &st); err != nil {
			return err
		}
		if st.Ino != 256 { // BTRFS_FIRST_FREE_OBJECTID: every subvolume's root
			return fmt.Errorf("level %d (%s) is inode %d, not a subvolume root", i+1, l, st.Ino)
		}
	}
	fmt.Printf("nested %d levels\n", len(levels))
	return nil
}

// fill writes mib MiB over path from offset 0 (created if missing, never
// truncated) and fsyncs it, saying how far it got and which errno
// stopped it.
func fill(path string, mib, seed int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + seed*13 + 1) // never all zero, different per seed
	}
	var n int64
	stop := func(err error) error {
		var errno unix.Errno
		name := "?"
		if errors.As(err, &errno) {
			name = unix.ErrnoName(errno)
		}
		_ = f.Sync() // what was taken is on disk, for whoever counts it
		fmt.Printf("wrote %d bytes, then %s (%v)\n", n, name, err)
		return fmt.Errorf("%s after %d bytes: %w", path, n, err)
	}
	for i := 0; i < mib; i++ {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			return stop(err)
		}
	}
	if err := f.Sync(); err != nil {
		return stop(err)
	}
	fmt.Printf("wrote %d bytes\n", n)
	return nil
}
