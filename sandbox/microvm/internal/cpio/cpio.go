// Package cpio writes cpio archives in the "newc" format (the SVR4 portable
// format without checksums), the format the Linux kernel unpacks as an
// initramfs. It writes only what an initramfs needs: directories, regular
// files, character devices and symbolic links, with numeric owners.
package cpio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// newc mode bits (the file type part of st_mode).
const (
	typeDir     = 0o040000
	typeRegular = 0o100000
	typeChar    = 0o020000
	typeSymlink = 0o120000
)

const (
	magic      = "070701"
	headerSize = 110 // magic + 13 eight-digit hex fields
	trailer    = "TRAILER!!!"
)

// Writer writes a newc archive. Entries are written in the order they are
// added; a directory must be added before the entries inside it. Close
// writes the trailer. The first error sticks: every later call returns it.
type Writer struct {
	w      io.Writer
	ino    uint32
	offset int64
	err    error
	closed bool
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

// Dir adds a directory.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.entry(name, typeDir|uint32(perm.Perm()), 0, 0, nil)
}

// File adds a regular file holding data.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.entry(name, typeRegular|uint32(perm.Perm()), 0, 0, data)
}

// CharDev adds a character device node.
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return w.entry(name, typeChar|uint32(perm.Perm()), major, minor, nil)
}

// Symlink adds a symbolic link named name pointing at target.
func (w *Writer) Symlink(name, target string) error {
	return w.entry(name, typeSymlink|0o777, 0, 0, []byte(target))
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil || w.closed {
		return w.err
	}
	if err := w.write(trailer, 0, 0, 0, nil, 1); err != nil {
		return err
	}
	w.closed = true
	return nil
}

func (w *Writer) entry(name string, mode, major, minor uint32, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("cpio: write after Close")
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" || name == trailer || strings.Contains(name, "\x00") {
		w.err = fmt.Errorf("cpio: invalid entry name %q", name)
		return w.err
	}
	if uint64(len(data)) > 0xffffffff {
		w.err = fmt.Errorf("cpio: %s: %d bytes exceed the newc size field", name, len(data))
		return w.err
	}
	nlink := uint32(1)
	if mode&0o170000 == typeDir {
		nlink = 2
	}
	w.ino++
	return w.write(name, mode, major, minor, data, nlink)
}

func (w *Writer) write(name string, mode, major, minor uint32, data []byte, nlink uint32) error {
	fields := [13]uint32{
		w.ino,                 // c_ino
		mode,                  // c_mode
		0,                     // c_uid
		0,                     // c_gid
		nlink,                 // c_nlink
		0,                     // c_mtime: reproducible archives
		uint32(len(data)),     // c_filesize
		0,                     // c_devmajor
		0,                     // c_devminor
		major,                 // c_rdevmajor
		minor,                 // c_rdevminor
		uint32(len(name) + 1), // c_namesize, with the NUL
		0,                     // c_check
	}
	hdr := make([]byte, 0, headerSize+len(name)+4)
	hdr = append(hdr, magic...)
	for _, f := range fields {
		hdr = fmt.Appendf(hdr, "%08x", f)
	}
	hdr = append(hdr, name...)
	hdr = append(hdr, 0)
	hdr = append(hdr, make([]byte, pad4(len(hdr)))...) // header+name end on a 4-byte boundary
	if err := w.put(hdr); err != nil {
		return err
	}
	if err := w.put(data); err != nil {
		return err
	}
	return w.put(make([]byte, pad4(len(data))))
}

func (w *Writer) put(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := w.w.Write(b)
	w.offset += int64(n)
	if err != nil {
		w.err = fmt.Errorf("cpio: %w", err)
	}
	return w.err
}

// pad4 is the number of zero bytes that bring n to a multiple of 4.
func pad4(n int) int { return (4 - n%4) % 4 }
