package local

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
)

// rawStream writes a send stream of protocol version proto by hand; crc
// fields stay zero (btrfs receive checks them, the checker does not).
type rawStream struct{ bytes.Buffer }

func newRawStream(proto uint32) *rawStream {
	s := &rawStream{}
	s.WriteString("btrfs-stream\x00")
	_ = binary.Write(s, binary.LittleEndian, proto)
	return s
}

func (s *rawStream) cmd(c uint16, attrs ...[]byte) *rawStream {
	var body bytes.Buffer
	for i := 0; i+1 < len(attrs); i += 2 {
		_ = binary.Write(&body, binary.LittleEndian, binary.LittleEndian.Uint16(attrs[i]))
		_ = binary.Write(&body, binary.LittleEndian, uint16(len(attrs[i+1])))
		body.Write(attrs[i+1])
	}
	_ = binary.Write(s, binary.LittleEndian, uint32(body.Len()))
	_ = binary.Write(s, binary.LittleEndian, c)
	_ = binary.Write(s, binary.LittleEndian, uint32(0))
	s.Write(body.Bytes())
	return s
}

func attr(a uint16) []byte { return binary.LittleEndian.AppendUint16(nil, a) }

const testUUID = "0123abcd-0000-1111-2222-333344445555"

func TestStreamCheck(t *testing.T) {
	u, _ := parseUUID(testUUID)
	subvol := func(s *rawStream) *rawStream {
		return s.cmd(sendCmdSubvol, attr(sendAttrPath), []byte("v"), attr(sendAttrUUID), u[:])
	}
	good := subvol(newRawStream(1)).cmd(3, attr(sendAttrPath), []byte("d/f")).cmd(sendCmdEnd).Bytes()
	cases := map[string]struct {
		stream []byte
		refuse string // "" = passed on whole
	}{
		"good":           {good, ""},
		"cut short":      {good[:len(good)-10], "ends"},
		"protocol 2":     {subvol(newRawStream(2)).cmd(sendCmdEnd).Bytes(), "protocol 1"},
		"before subvol":  {newRawStream(1).cmd(3, attr(sendAttrPath), []byte("f")).Bytes(), "before"},
		"two subvolumes": {subvol(subvol(newRawStream(1))).Bytes(), "second"},
		"dotdot":         {subvol(newRawStream(1)).cmd(3, attr(sendAttrPath), []byte("a/../../f")).Bytes(), ".."},
		"absolute":       {subvol(newRawStream(1)).cmd(9, attr(sendAttrPath), []byte("f"), attr(sendAttrPathTo), []byte("/etc/f")).Bytes(), "relative"},
		"hard link out":  {subvol(newRawStream(1)).cmd(sendCmdLink, attr(sendAttrPath), []byte("f"), attr(sendAttrPathLink), []byte("../x")).Bytes(), ".."},
		"duplicate attr": {subvol(newRawStream(1)).cmd(3, attr(sendAttrPath), []byte("f"), attr(sendAttrPath), []byte("../g")).Bytes(), "twice"},
		"other uuid":     {newRawStream(1).cmd(sendCmdSubvol, attr(sendAttrPath), []byte("v"), attr(sendAttrUUID), make([]byte, 16)).Bytes(), "not the one"},
		"unknown parent": {newRawStream(1).cmd(sendCmdSnapshot, attr(sendAttrPath), []byte("v"), attr(sendAttrUUID), u[:], attr(sendAttrCloneUUID), make([]byte, 16)).Bytes(), "not received"},
		"foreign clone":  {subvol(newRawStream(1)).cmd(sendCmdClone, attr(sendAttrPath), []byte("f"), attr(sendAttrCloneUUID), make([]byte, 16), attr(sendAttrClonePath), []byte("g")).Bytes(), "neither"},
	}
	for name, c := range cases {
		check, err := newStreamCheck(bytes.NewReader(c.stream), testUUID, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		got, rerr := io.ReadAll(check)
		switch {
		case c.refuse == "" && (rerr != nil || !bytes.Equal(got, c.stream)):
			t.Errorf("%s: %v; want the stream passed on whole", name, rerr)
		case c.refuse != "" && (check.Err() == nil || !strings.Contains(check.Err().Error(), c.refuse)):
			t.Errorf("%s: %v; want a refusal saying %q", name, check.Err(), c.refuse)
		}
	}
}

// Metadata counts: a flood of empty files (a few bytes each in the
// stream, kilobytes each in btrfs) runs out of budget as data would.
func TestStreamCheckBudgetCountsMetadata(t *testing.T) {
	u, _ := parseUUID(testUUID)
	s := newRawStream(1).cmd(sendCmdSubvol, attr(sendAttrPath), []byte("v"), attr(sendAttrUUID), u[:])
	for i := 0; i < 100; i++ {
		s.cmd(sendCmdMkfile, attr(sendAttrPath), []byte(strings.Repeat("f", i+1)))
	}
	stream := s.cmd(sendCmdEnd).Bytes()
	check, err := newStreamCheck(bytes.NewReader(stream), testUUID, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	check.budget = 100 << 10 // five times the stream's size
	if _, err := io.ReadAll(check); err == nil || !strings.Contains(err.Error(), "larger than the pool") {
		t.Errorf("100 files against a 100 KiB budget (stream %d bytes): %v; want a refusal", len(stream), err)
	}
}
