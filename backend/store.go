package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/schema"
	datastorage "schneider.vip/retryspool/storage/data"
)

// DB runs statements; *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Target is the table a Store reads and writes.
type Target struct {
	// Table is the message table, with the layout of schema.CreateTableSQL.
	Table schema.Table
	// Partition, when not empty, confines the Store to the rows whose
	// schema.TenantColumn equals it, in a table created with shared=true.
	Partition string
	// Guard, when not nil, is a condition every write must meet; a write
	// that does not meet it stores nothing and returns ErrGuardFailed.
	Guard *Guard
}

// Guard is a write condition. SQL returns a boolean SQL expression whose
// parameters are numbered from first on, bound to Args in order. It must be
// built from validated, quoted identifiers only (see schema.ActiveGuard).
type Guard struct {
	SQL  func(first int) string
	Args []any
}

// Store moves message bodies in and out of one Target. It is safe for
// concurrent use; it holds no connection between calls.
type Store struct {
	db     DB
	mode   pgx.QueryExecMode
	target Target

	upsertSQL, getSQL, deleteSQL string
}

// NewStore returns a Store for t over db, sending every statement in exec
// mode m (pgx.QueryExecModeCacheStatement or pgx.QueryExecModeCacheDescribe
// are the useful ones; the text modes are refused with ErrTextMode).
func NewStore(db DB, t Target, m pgx.QueryExecMode) (*Store, error) {
	if err := checkExecMode(m); err != nil {
		return nil, err
	}
	s := &Store{db: db, mode: m, target: t}
	q := t.Table.Sanitize()
	cols, vals, where, conflict := "message_id, data, size", "$1::varchar, $2::bytea, $3::bigint", "message_id = $1", "message_id"
	next := 4
	if t.Partition != "" {
		cols = schema.TenantColumn + ", " + cols
		vals = "$1::text, $2::varchar, $3::bytea, $4::bigint"
		where = schema.TenantColumn + " = $1 AND message_id = $2"
		conflict = schema.TenantColumn + ", message_id"
		next = 5
	}
	source := "VALUES (" + vals + ", NOW(), NOW())"
	if t.Guard != nil {
		source = "SELECT " + vals + ", NOW(), NOW() WHERE " + t.Guard.SQL(next)
	}
	// The timestamp is computed in the VALUES list and taken from EXCLUDED
	// (Citus refuses non-immutable functions in DO UPDATE SET); created is
	// kept on update.
	s.upsertSQL = "INSERT INTO " + q + " (" + cols + ", created, updated) " + source +
		" ON CONFLICT (" + conflict + ") DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, updated = EXCLUDED.updated"
	s.getSQL = "SELECT data FROM " + q + " WHERE " + where
	s.deleteSQL = "DELETE FROM " + q + " WHERE " + where
	return s, nil
}

// Target returns the Store's target.
func (s *Store) Target() Target { return s.target }

// args returns the statement arguments: the exec mode, the partition value
// if any, then rest.
func (s *Store) args(rest ...any) []any {
	a := make([]any, 0, 2+len(rest))
	a = append(a, s.mode)
	if s.target.Partition != "" {
		a = append(a, s.target.Partition)
	}
	return append(a, rest...)
}

// retryStale runs op, and once more if it failed on a stale cached plan;
// pgx has dropped the statement by then, so the second run prepares it anew.
// Only single autocommit statements go through here, so a retry cannot
// repeat a partial effect.
func retryStale(op func() error) error {
	err := op()
	if errors.Is(err, ErrStalePlan) {
		err = op()
	}
	return err
}

// Put stores data under id, replacing any earlier version atomically. A nil
// data stores an empty body. On error nothing is changed, except when the
// connection failed after the server received the statement: then either the
// old or the new version is stored, complete.
func (s *Store) Put(ctx context.Context, id string, data []byte) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	if data == nil {
		data = []byte{} // nil would be NULL
	}
	args := s.args(id, data, int64(len(data)))
	if s.target.Guard != nil {
		args = append(args, s.target.Guard.Args...)
	}
	return retryStale(func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		tag, err := s.db.Exec(ctx, s.upsertSQL, args...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrGuardFailed
		}
		return nil
	})
}

// Get returns the body stored under id, or an error that errors.Is
// datastorage.ErrDataNotFound.
func (s *Store) Get(ctx context.Context, id string) ([]byte, error) {
	if err := ValidateMessageID(id); err != nil {
		return nil, err
	}
	var data []byte
	err := retryStale(func() error {
		return translate(s.db.QueryRow(ctx, s.getSQL, s.args(id)...).Scan(&data))
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// Delete removes the body stored under id, or returns an error that
// errors.Is datastorage.ErrDataNotFound if there is none.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	return retryStale(func() error {
		tag, err := s.db.Exec(ctx, s.deleteSQL, s.args(id)...)
		if err != nil {
			return translate(err)
		}
		if tag.RowsAffected() == 0 {
			return errNotFound(id)
		}
		return nil
	})
}

// ReadAll reads a body from r for id: it validates id before reading and
// checks ctx after.
func ReadAll(ctx context.Context, id string, r io.Reader) ([]byte, error) {
	if err := ValidateMessageID(id); err != nil {
		return nil, err
	}
	if r == nil {
		return []byte{}, nil
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("pgtenant: reading message %q: %w", id, err)
	}
	return data, ctx.Err()
}

// StoreFrom reads the body from r and stores it under id, returning the
// number of bytes stored.
func (s *Store) StoreFrom(ctx context.Context, id string, r io.Reader) (int64, error) {
	data, err := ReadAll(ctx, id, r)
	if err != nil {
		return 0, err
	}
	if err := s.Put(ctx, id, data); err != nil {
		return 0, err
	}
	return int64(len(data)), nil
}

// Reader returns a reader over the body stored under id.
func (s *Store) Reader(ctx context.Context, id string) (io.ReadCloser, error) {
	data, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return NewBytesReader(data), nil
}

// Writer returns a writer that stores the bytes written under id when it
// is closed; see NewBufferedWriter.
func (s *Store) Writer(ctx context.Context, id string) (io.WriteCloser, error) {
	if err := ValidateMessageID(id); err != nil {
		return nil, err
	}
	return NewBufferedWriter(func(data []byte) error { return s.Put(ctx, id, data) }), nil
}

func errNotFound(id string) error {
	return fmt.Errorf("%w: %q", datastorage.ErrDataNotFound, id)
}

// BufferedWriter collects a body and hands it to a commit function on
// Close: zero bytes written commit an empty body; Write after Close returns
// ErrClosed; Close runs the commit once and a second Close returns the
// first one's result without committing again. It is not safe for
// concurrent use, like most io.Writers.
type BufferedWriter struct {
	commit func([]byte) error
	buf    bytes.Buffer
	once   sync.Once
	closed bool
	err    error
}

// NewBufferedWriter returns a BufferedWriter that calls commit on Close.
func NewBufferedWriter(commit func([]byte) error) *BufferedWriter {
	return &BufferedWriter{commit: commit}
}

// Write appends p to the body.
func (w *BufferedWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	return w.buf.Write(p)
}

// Close commits the body, once.
func (w *BufferedWriter) Close() error {
	w.once.Do(func() {
		w.closed = true
		data := w.buf.Bytes()
		if data == nil {
			data = []byte{}
		}
		w.err = w.commit(data)
		w.buf = bytes.Buffer{}
	})
	return w.err
}

// BytesReader is an io.ReadCloser over a body in memory; Read after Close
// returns ErrClosed, and Close is idempotent.
type BytesReader struct {
	r      *bytes.Reader
	closed bool
}

// NewBytesReader returns a BytesReader over data.
func NewBytesReader(data []byte) *BytesReader { return &BytesReader{r: bytes.NewReader(data)} }

// Read reads from the body.
func (r *BytesReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	return r.r.Read(p)
}

// Close releases the body.
func (r *BytesReader) Close() error {
	r.closed = true
	return nil
}
