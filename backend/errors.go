package backend

import (
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
)

// MaxMessageIDLength is the longest message id accepted, in bytes; the
// message_id column is VARCHAR(255).
const MaxMessageIDLength = engine.MaxMessageIDLength

// DefaultMaxMessageSize is the largest body accepted by default: 512 MiB.
const DefaultMaxMessageSize = engine.DefaultMaxMessageSize

var (
	// ErrInvalidMessageID reports a message id that is empty, longer than
	// 255 bytes, not valid UTF-8 or containing NUL. It is returned before any
	// SQL runs.
	ErrInvalidMessageID = engine.ErrInvalidMessageID
	// ErrTableMissing reports that the table (or its schema) does not exist:
	// SQLSTATE 42P01 or 3F000.
	ErrTableMissing = pg.ErrTableMissing
	// ErrClosed reports use of a closed backend, reader or writer.
	ErrClosed = engine.ErrClosed
	// ErrTooLarge reports a body over the maximum message size; nothing was
	// stored and any earlier version is intact.
	ErrTooLarge = engine.ErrTooLarge
	// ErrQuotaExceeded reports a write refused by a quota (see
	// tenant.Factory.WithQuota); nothing was stored.
	ErrQuotaExceeded = engine.ErrQuotaExceeded
	// ErrConnection reports that the connection to PostgreSQL failed: it
	// could not be opened, the server closed it (SQLSTATE classes 08 and 57P,
	// e.g. a terminated backend or a shutdown), or the network broke. For a
	// write or delete the outcome is unknown: either the old or the new state
	// is stored, complete, never a mixture. Writes and deletes are keyed by
	// message id, so repeating the call is safe. See the README's retry
	// policy.
	ErrConnection = pg.ErrConnection
	// ErrTextMode reports a pgx exec mode that sends BYTEA as text.
	ErrTextMode = engine.ErrTextMode
	// ErrPreparedStatements reports named prepared statements mixed up
	// between clients by a pooler in transaction mode (SQLSTATE 42P05 or
	// 26000); use pgx.QueryExecModeCacheDescribe behind such a pooler.
	ErrPreparedStatements = pg.ErrPreparedStatements
)

// ValidateMessageID returns nil for an acceptable message id and otherwise an
// error that errors.Is ErrInvalidMessageID.
func ValidateMessageID(id string) error { return engine.ValidateMessageID(id) }
