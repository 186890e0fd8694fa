package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteouts (image-spec layer.md) and their overlayfs form.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh." // aufs metadata, e.g. .wh..wh.plnk
	whiteoutOpaque = ".wh..wh..opq"
	xattrOpaque    = "trusted.overlay.opaque"
	paxXattr       = "SCHILY.xattr."
)

// applyLayer writes the entries of the layer tar r into dir, which is the
// layer's own directory (not the merged root file system): whiteouts become
// overlayfs whiteouts. Entries never reach outside dir, whatever their
// names or the symbolic links before them.
func applyLayer(ctx context.Context, dir string, r io.Reader) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirs []dirTime
	tr := tar.NewReader(sourceReader{r})
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return invalid("layer tar: %v", err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if err := applyEntry(root, name, hdr, tr); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{name, hdr.ModTime})
		}
	}
	// Directory times last: creating their entries changed them.
	for _, d := range slices.Backward(dirs) {
		if err := root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return err
		}
	}
	return nil
}

// entryName cleans a tar entry name into a path relative to the layer root.
func entryName(name string) (string, error) {
	clean := path.Clean("/" + name)[1:]
	if clean == "" {
		clean = "."
	}
	if !fs.ValidPath(clean) {
		return "", invalid("layer tar: bad entry name %q", name)
	}
	return clean, nil
}

func applyEntry(root *os.Root, name string, hdr *tar.Header, r io.Reader) error {
	parent, base := path.Split(name)
	parent = path.Clean("./" + parent)
	switch {
	case base == whiteoutOpaque:
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		return setXattr(root, parent, xattrOpaque, []byte("y"))
	case strings.HasPrefix(base, whiteoutMeta):
		return nil
	case strings.HasPrefix(base, whiteoutPrefix):
		target := path.Join(parent, strings.TrimPrefix(base, whiteoutPrefix))
		if err := prepare(root, parent, target, false); err != nil {
			return err
		}
		return mknod(root, target, unix.S_IFCHR, 0)
	}
	if name != "." {
		if err := prepare(root, parent, name, hdr.Typeflag == tar.TypeDir); err != nil {
			return err
		}
	}
	mode := hdr.FileInfo().Mode()
	switch hdr.Typeflag {
	case tar.TypeDir:
		if _, err := root.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			if err := root.Mkdir(name, 0o700); err != nil {
				return err
			}
		}
	case tar.TypeReg, tar.TypeGNUSparse:
		f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		return errors.Join(root.Symlink(hdr.Linkname, name), lchown(root, name, hdr))
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := root.Link(target, name); err != nil {
			return invalid("hard link to %q: %v", hdr.Linkname, err)
		}
		return nil // shares the target's inode and metadata
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		if err := mknod(root, name, typ, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
			return err
		}
	default:
		return nil // pax global headers and the like carry no file
	}
	if err := lchown(root, name, hdr); err != nil {
		return err
	}
	// After chown, which clears the set-ID bits.
	if err := root.Chmod(name, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, paxXattr); ok && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeDir) {
			if err := setXattr(root, name, attr, []byte(v)); err != nil {
				return err
			}
		}
	}
	if hdr.Typeflag != tar.TypeDir {
		return root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	}
	return nil
}

// prepare makes name's parent directory exist and removes what name holds
// now, unless it is a directory that isDir keeps.
func prepare(root *os.Root, parent, name string, isDir bool) error {
	if err := root.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if isDir && fi.IsDir() {
		return nil
	}
	return root.RemoveAll(name)
}

func lchown(root *os.Root, name string, hdr *tar.Header) error {
	return root.Lchown(name, hdr.Uid, hdr.Gid)
}

// mknod creates a device node or fifo at name, relative to its parent's
// file descriptor (os.Root has no mknod).
func mknod(root *os.Root, name string, typ uint32, dev int) error {
	parent, base := path.Split(name)
	d, err := root.Open(path.Clean("./" + parent))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Mknodat(int(d.Fd()), base, typ|0o600, dev); err != nil {
		return fmt.Errorf("mknod %s: %w", name, err)
	}
	return nil
}

// setXattr sets an extended attribute on a directory or regular file.
func setXattr(root *os.Root, name, attr string, value []byte) error {
	f, err := root.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), attr, value, 0); err != nil {
		return fmt.Errorf("set xattr %s on %s: %w", attr, name, err)
	}
	return nil
}
