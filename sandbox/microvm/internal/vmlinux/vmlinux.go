// Package vmlinux extracts the uncompressed kernel (an ELF "vmlinux") from a
// compressed x86 Linux boot image (a bzImage, such as /boot/vmlinuz-*), so
// QEMU's microvm machine can load it directly through its PVH entry point.
//
// The payload is located from the bzImage header (boot protocol 2.08+:
// payload_offset and payload_length) and, failing that, by scanning for the
// magic numbers of the compressors the kernel supports. gzip and bzip2 are
// decompressed in-process; xz, lzma and zstd through the xz and zstd
// programs (Debian packages xz-utils and zstd), since the standard library
// has no decoder for them.
package vmlinux

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Compression names a payload's compressor.
type Compression string

// The compressors a kernel payload may use (CONFIG_KERNEL_*).
const (
	Gzip  Compression = "gzip"
	Bzip2 Compression = "bzip2"
	XZ    Compression = "xz"
	LZMA  Compression = "lzma"
	Zstd  Compression = "zstd"
	LZ4   Compression = "lz4"
	LZO   Compression = "lzo"
)

var magics = []struct {
	c     Compression
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b, 0x08}},
	{XZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Bzip2, []byte("BZh")},
	{LZMA, []byte{0x5d, 0x00, 0x00}},
	{LZ4, []byte{0x02, 0x21, 0x4c, 0x18}},
	{LZO, []byte{0x89, 'L', 'Z', 'O', 0x00}},
}

// Sniff names the compressor whose magic number starts b, or "".
func Sniff(b []byte) Compression {
	for _, m := range magics {
		if bytes.HasPrefix(b, m.magic) {
			return m.c
		}
	}
	return ""
}

// Payload returns the compressed kernel inside a bzImage, using the boot
// protocol header. ok is false when the header does not describe one.
func Payload(bz []byte) (payload []byte, ok bool) {
	const (
		setupSectsOff = 0x1f1
		headerOff     = 0x202 // "HdrS"
		versionOff    = 0x206
		payloadOff    = 0x248
		payloadLenOff = 0x24c
	)
	if len(bz) < 0x250 || string(bz[headerOff:headerOff+4]) != "HdrS" {
		return nil, false
	}
	if binary.LittleEndian.Uint16(bz[versionOff:]) < 0x208 {
		return nil, false
	}
	setup := int(bz[setupSectsOff])
	if setup == 0 {
		setup = 4
	}
	start := (setup+1)*512 + int(binary.LittleEndian.Uint32(bz[payloadOff:]))
	n := int(binary.LittleEndian.Uint32(bz[payloadLenOff:]))
	if start < 0 || n <= 0 || start+n > len(bz) {
		return nil, false
	}
	return bz[start : start+n], true
}

// Extract returns the ELF kernel inside the bzImage bz.
func Extract(ctx context.Context, bz []byte) ([]byte, error) {
	if p, ok := Payload(bz); ok {
		if c := Sniff(p); c != "" {
			return decompressELF(ctx, c, p)
		}
	}
	// No usable header: try every magic number, as extract-vmlinux does.
	var errs []error
	for _, m := range magics {
		for off := 0; ; {
			i := bytes.Index(bz[off:], m.magic)
			if i < 0 {
				break
			}
			off += i
			out, err := decompressELF(ctx, m.c, bz[off:])
			if err == nil {
				return out, nil
			}
			errs = append(errs, fmt.Errorf("%s at %#x: %w", m.c, off, err))
			off++
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("vmlinux: no compressed kernel found (not a bzImage?)")
	}
	return nil, fmt.Errorf("vmlinux: no payload decompressed to an ELF kernel: %w", errors.Join(errs...))
}

func decompressELF(ctx context.Context, c Compression, p []byte) ([]byte, error) {
	out, err := decompress(ctx, c, p)
	if err != nil {
		return nil, err
	}
	if err := Check(out); err != nil {
		return nil, err
	}
	return out, nil
}

func decompress(ctx context.Context, c Compression, p []byte) ([]byte, error) {
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		return io.ReadAll(zr)
	case Bzip2:
		return io.ReadAll(bzip2.NewReader(bytes.NewReader(p)))
	case XZ:
		// --single-stream ignores what follows the stream (the 4-byte
		// uncompressed size the kernel build appends).
		return run(ctx, p, "xz", "--decompress", "--stdout", "--single-stream")
	case LZMA:
		return run(ctx, p, "xz", "--decompress", "--stdout", "--format=lzma")
	case Zstd:
		return run(ctx, p, "zstd", "--decompress", "--stdout", "--quiet")
	}
	return nil, fmt.Errorf("%s kernels are not supported", c)
}

// run pipes in through a decompressor. Output followed by an error (trailing
// bytes after the stream) still counts when it is a whole ELF image, which
// the caller checks.
func run(ctx context.Context, in []byte, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("decompressing needs %s: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil && out.Len() == 0 {
		return nil, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// Check reports whether b is an x86-64 ELF kernel QEMU can boot directly:
// one with a PVH entry point (a Xen ELF note of type PHYS32_ENTRY).
func Check(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF image: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("ELF machine %s, want %s", f.Machine, elf.EM_X86_64)
	}
	if !hasPVHNote(f) {
		return errors.New("ELF kernel has no PVH entry point (CONFIG_PVH)")
	}
	return nil
}

// hasPVHNote looks for the note XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner
// "Xen") in the kernel's PT_NOTE segments.
func hasPVHNote(f *elf.File) bool {
	const phys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			continue
		}
		for len(b) >= 12 {
			nameSz := int(f.ByteOrder.Uint32(b[0:]))
			descSz := int(f.ByteOrder.Uint32(b[4:]))
			typ := f.ByteOrder.Uint32(b[8:])
			nameEnd := 12 + align4(nameSz)
			end := nameEnd + align4(descSz)
			if nameSz < 0 || descSz < 0 || end > len(b) || end < 12 {
				break
			}
			name := strings.TrimRight(string(b[12:12+nameSz]), "\x00")
			if name == "Xen" && typ == phys32Entry {
				return true
			}
			b = b[end:]
		}
	}
	return false
}

func align4(n int) int { return (n + 3) &^ 3 }

// Cached returns the path of the kernel extracted from the bzImage at
// bzPath, extracting it into dir on first use. The cache is keyed by the
// bzImage's content, so an upgraded kernel is extracted anew.
func Cached(ctx context.Context, bzPath, dir string) (string, error) {
	bz, err := os.ReadFile(bzPath)
	if err != nil {
		return "", fmt.Errorf("vmlinux: %w", err)
	}
	sum := sha256.Sum256(bz)
	dst := filepath.Join(dir, "vmlinux-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	// A direct ELF kernel needs no extraction.
	var out []byte
	if Check(bz) == nil {
		out = bz
	} else if out, err = Extract(ctx, bz); err != nil {
		return "", fmt.Errorf("vmlinux: %s: %w", bzPath, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("vmlinux: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".vmlinux-*")
	if err != nil {
		return "", fmt.Errorf("vmlinux: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return "", fmt.Errorf("vmlinux: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("vmlinux: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("vmlinux: %w", err)
	}
	return dst, nil
}

// Version returns the kernel release a bzImage announces in its header
// ("6.1.0-13-amd64"), or "" when it has none.
func Version(bz []byte) string {
	const versionPtrOff = 0x20e
	if len(bz) < 0x210 || string(bz[0x202:0x206]) != "HdrS" {
		return ""
	}
	p := int(binary.LittleEndian.Uint16(bz[versionPtrOff:])) + 0x200
	if p >= len(bz) {
		return ""
	}
	s := bz[p:]
	if i := bytes.IndexAny(s, " \x00"); i >= 0 {
		s = s[:i]
	}
	return string(s)
}
