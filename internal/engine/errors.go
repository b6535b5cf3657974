package engine

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/quota"
	datastorage "schneider.vip/retryspool/storage/data"
)

// MaxMessageIDLength is the longest message id accepted, in bytes; the
// message_id column is VARCHAR(255).
const MaxMessageIDLength = 255

var (
	// ErrInvalidMessageID reports a message id that is empty, longer than
	// 255 bytes, not valid UTF-8 or containing NUL. It is returned before any
	// SQL runs.
	ErrInvalidMessageID = errors.New("pgtenant: invalid message id")
	// ErrGuardFailed reports a write refused by the Target's write guard;
	// nothing was written.
	ErrGuardFailed = errors.New("pgtenant: write condition not met")
	// ErrClosed reports use of a closed backend, reader or writer.
	ErrClosed = errors.New("pgtenant: closed")
	// ErrTooLarge reports a body over the maximum message size; nothing was
	// stored and any earlier version is intact.
	ErrTooLarge = errors.New("pgtenant: message too large")
	// ErrQuotaExceeded reports a write refused by Options.Quota; nothing
	// was stored. The error is a *quota.Error.
	ErrQuotaExceeded = quota.ErrExceeded
	// ErrTextMode reports a pgx exec mode that sends BYTEA as text.
	ErrTextMode = errors.New("pgtenant: exec mode sends BYTEA as text; use a cached-statement or describe mode")
)

// ValidateMessageID returns nil for an acceptable message id and otherwise an
// error that errors.Is ErrInvalidMessageID.
func ValidateMessageID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidMessageID)
	case len(id) > MaxMessageIDLength:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidMessageID, len(id), MaxMessageIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidMessageID)
	}
	for i := 0; i < len(id); i++ {
		if id[i] == 0 {
			return fmt.Errorf("%w: contains NUL", ErrInvalidMessageID)
		}
	}
	return nil
}

// translate maps driver errors onto the sentinels, keeping the original
// error in the chain: no row is datastorage.ErrDataNotFound, the rest is
// pg.Classify's.
func translate(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return datastorage.ErrDataNotFound
	}
	return pg.Classify(err)
}

// CheckExecMode refuses the modes that send BYTEA as hex text.
func CheckExecMode(m pgx.QueryExecMode) error {
	switch m {
	case pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol:
		return fmt.Errorf("%w (got %v)", ErrTextMode, m)
	}
	return nil
}

// execMode returns m, or pgx.QueryExecModeCacheStatement for the zero
// mode, unless CheckExecMode refuses it.
func execMode(m pgx.QueryExecMode) (pgx.QueryExecMode, error) {
	if m == 0 {
		m = pgx.QueryExecModeCacheStatement
	}
	return m, CheckExecMode(m)
}

func tooLarge(max int64) error {
	return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
}
