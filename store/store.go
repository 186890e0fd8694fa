// Package store keeps kindling's durable state in the data directory:
// function specs and invocation records in an embedded bbolt database, and
// artifacts on disk, content-addressed by sha256.
//
// Layout of the data directory:
//
//	kindling.db              bbolt: functions, invocations
//	artifacts/sha256/<hex>   artifact bytes, immutable
//	cache/                   compilation caches of the sandboxes
//	logs/<function>/         function logs
package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
)

var (
	bucketFunctions   = []byte("functions")
	bucketInvocations = []byte("invocations")
	bucketJobs        = []byte("jobs")
)

// Store is the data directory. It is safe for concurrent use.
type Store struct {
	dir string
	db  *bolt.DB
}

// Open opens (creating if needed) the data directory dir.
func Open(dir string) (*Store, error) {
	for _, sub := range []string{"", "artifacts/sha256", "cache", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", filepath.Join(dir, sub), err)
		}
	}
	db, err := bolt.Open(filepath.Join(dir, "kindling.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is locked by another kindling daemon: %w", dir, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("store: open database: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketFunctions, bucketInvocations, bucketJobs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: init buckets: %w", err)
	}
	return &Store{dir: dir, db: db}, nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// CacheDir returns the directory for a sandbox's compilation cache.
func (s *Store) CacheDir(sandbox string) string { return filepath.Join(s.dir, "cache", sandbox) }

// LogDir returns the directory for function logs.
func (s *Store) LogDir() string { return filepath.Join(s.dir, "logs") }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// PutArtifact stores r's bytes (at most limit) and returns their digest.
// Storing the same bytes twice is a no-op.
func (s *Store) PutArtifact(r io.Reader, limit int64) (api.ArtifactRef, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "artifacts"), "upload-*")
	if err != nil {
		return api.ArtifactRef{}, fmt.Errorf("store: artifact temp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, limit+1))
	if err != nil {
		return api.ArtifactRef{}, fmt.Errorf("store: write artifact: %w", err)
	}
	if n > limit {
		return api.ArtifactRef{}, fmt.Errorf("store: artifact larger than %d bytes: %w", limit, errdefs.ErrTooLarge)
	}
	if n == 0 {
		return api.ArtifactRef{}, fmt.Errorf("store: empty artifact: %w", errdefs.ErrInvalidArgument)
	}
	if err := tmp.Sync(); err != nil {
		return api.ArtifactRef{}, fmt.Errorf("store: sync artifact: %w", err)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), s.artifactPath(digest)); err != nil {
		return api.ArtifactRef{}, fmt.Errorf("store: commit artifact: %w", err)
	}
	return api.ArtifactRef{Digest: digest, Size: n}, nil
}

// PutArtifactBytes stores b; see PutArtifact.
func (s *Store) PutArtifactBytes(b []byte) (api.ArtifactRef, error) {
	return s.PutArtifact(bytes.NewReader(b), int64(len(b)))
}

// ValidDigest reports whether d looks like "sha256:<64 hex>".
func ValidDigest(d string) bool {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}

func (s *Store) artifactPath(digest string) string {
	return filepath.Join(s.dir, "artifacts", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// Artifact reads an artifact's bytes.
func (s *Store) Artifact(digest string) ([]byte, error) {
	if !ValidDigest(digest) {
		return nil, fmt.Errorf("store: artifact %q: not a sha256 digest: %w", digest, errdefs.ErrInvalidArgument)
	}
	b, err := os.ReadFile(s.artifactPath(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("store: artifact %s: %w", digest, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read artifact %s: %w", digest, err)
	}
	return b, nil
}

// HasArtifact reports whether the artifact exists.
func (s *Store) HasArtifact(digest string) bool {
	if !ValidDigest(digest) {
		return false
	}
	_, err := os.Stat(s.artifactPath(digest))
	return err == nil
}

// DeleteArtifact removes an artifact unless a function still refers to it.
func (s *Store) DeleteArtifact(digest string) error {
	fns, err := s.ListFunctions()
	if err != nil {
		return err
	}
	for _, f := range fns {
		if f.Artifact == digest {
			return nil
		}
	}
	if err := os.Remove(s.artifactPath(digest)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: delete artifact %s: %w", digest, err)
	}
	return nil
}

// PutFunction creates or replaces a function.
func (s *Store) PutFunction(f api.Function) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("store: encode function %q: %w", f.Name, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFunctions).Put([]byte(f.Name), b)
	})
}

// GetFunction returns a function or an error wrapping errdefs.ErrNotFound.
func (s *Store) GetFunction(name string) (api.Function, error) {
	var f api.Function
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFunctions).Get([]byte(name))
		if b == nil {
			return fmt.Errorf("function %q: %w", name, errdefs.ErrNotFound)
		}
		return json.Unmarshal(b, &f)
	})
	return f, err
}

// ListFunctions returns all functions sorted by name.
func (s *Store) ListFunctions() ([]api.Function, error) {
	var fns []api.Function
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFunctions).ForEach(func(k, v []byte) error {
			var f api.Function
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("store: decode function %q: %w", k, err)
			}
			fns = append(fns, f)
			return nil
		})
	})
	return fns, err
}

// DeleteFunction removes a function; deleting a missing one is ErrNotFound.
func (s *Store) DeleteFunction(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFunctions)
		if b.Get([]byte(name)) == nil {
			return fmt.Errorf("function %q: %w", name, errdefs.ErrNotFound)
		}
		return b.Delete([]byte(name))
	})
}

// PutInvocations writes invocation records in one transaction.
func (s *Store) PutInvocations(invs []api.Invocation) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInvocations)
		for _, inv := range invs {
			v, err := json.Marshal(inv)
			if err != nil {
				return fmt.Errorf("store: encode invocation %s: %w", inv.ID, err)
			}
			if err := b.Put([]byte(inv.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetInvocation returns an invocation record.
func (s *Store) GetInvocation(id string) (api.Invocation, error) {
	var inv api.Invocation
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketInvocations).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("invocation %q: %w", id, errdefs.ErrNotFound)
		}
		return json.Unmarshal(v, &inv)
	})
	return inv, err
}

// PruneInvocations keeps the newest keep records (IDs sort by time).
func (s *Store) PruneInvocations(keep int) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInvocations)
		n := b.Stats().KeyN
		if n <= keep {
			return nil
		}
		// Collect first: deleting under a bbolt cursor skips keys.
		var old [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && n-len(old) > keep; k, _ = c.Next() {
			old = append(old, append([]byte(nil), k...))
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Job is an accepted asynchronous invocation not yet completed.
type Job struct {
	ID         string    `json:"id"`
	Function   string    `json:"function"`
	Body       []byte    `json:"body,omitempty"`
	Env        []string  `json:"env,omitempty"`
	AcceptedAt time.Time `json:"acceptedAt"`
	Attempts   int       `json:"attempts"`
}

// Enqueue stores a job and its "queued" invocation record in one durable
// transaction: once it returns, a crash loses neither.
func (s *Store) Enqueue(j Job, queued api.Invocation) error {
	jb, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("store: encode job %s: %w", j.ID, err)
	}
	ib, err := json.Marshal(queued)
	if err != nil {
		return fmt.Errorf("store: encode invocation %s: %w", j.ID, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketJobs).Put([]byte(j.ID), jb); err != nil {
			return err
		}
		return tx.Bucket(bucketInvocations).Put([]byte(j.ID), ib)
	})
}

// StartJob records another attempt at a job (so a job that crashes the
// daemon every time can be given up on).
func (s *Store) StartJob(id string) (Job, error) {
	var j Job
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("job %q: %w", id, errdefs.ErrNotFound)
		}
		if err := json.Unmarshal(v, &j); err != nil {
			return err
		}
		j.Attempts++
		nv, err := json.Marshal(j)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), nv)
	})
	return j, err
}

// CompleteJob stores a job's final invocation record and removes the job,
// in one durable transaction.
func (s *Store) CompleteJob(inv api.Invocation) error {
	v, err := json.Marshal(inv)
	if err != nil {
		return fmt.Errorf("store: encode invocation %s: %w", inv.ID, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketInvocations).Put([]byte(inv.ID), v); err != nil {
			return err
		}
		return tx.Bucket(bucketJobs).Delete([]byte(inv.ID))
	})
}

// PendingJobs returns the jobs not yet completed, oldest first.
func (s *Store) PendingJobs() ([]Job, error) {
	var jobs []Job
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("store: decode job %q: %w", k, err)
			}
			jobs = append(jobs, j)
			return nil
		})
	})
	return jobs, err
}
