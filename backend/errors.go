package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	// ErrTableMissing reports that the table (or its schema) does not exist:
	// SQLSTATE 42P01 or 3F000.
	ErrTableMissing = errors.New("pgtenant: table does not exist")
	// ErrStalePlan reports a prepared statement invalidated by DDL: SQLSTATE
	// 0A000, "cached plan must not change result type". pgx drops the
	// statement from its cache, so running the statement again succeeds.
	ErrStalePlan = errors.New("pgtenant: cached plan is stale")
	// ErrGuardFailed reports a write refused by the Target's write guard;
	// nothing was written.
	ErrGuardFailed = errors.New("pgtenant: write condition not met")
	// ErrClosed reports use of a closed backend, reader or writer.
	ErrClosed = errors.New("pgtenant: closed")
	// ErrTooLarge reports a body over the maximum message size; nothing was
	// stored and any earlier version is intact.
	ErrTooLarge = errors.New("pgtenant: message too large")
	// ErrQuotaExceeded reports a write refused by Options.MaxBytes or
	// Options.MaxMessages; nothing was stored.
	ErrQuotaExceeded = errors.New("pgtenant: quota exceeded")
	// ErrConnection reports that the connection to PostgreSQL failed: it
	// could not be opened, the server closed it (SQLSTATE classes 08 and 57P,
	// e.g. a terminated backend or a shutdown), or the network broke. For a
	// write or delete the outcome is unknown: either the old or the new state
	// is stored, complete, never a mixture. Writes and deletes are keyed by
	// message id, so repeating the call is safe. See the README's retry
	// policy.
	ErrConnection = errors.New("pgtenant: connection to PostgreSQL failed")
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

// translate maps driver errors onto the package's sentinels, keeping the
// original error in the chain.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return datastorage.ErrDataNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42P01", "3F000":
			return fmt.Errorf("%w: %w", ErrTableMissing, err)
		case "0A000":
			return fmt.Errorf("%w: %w", ErrStalePlan, err)
		}
	}
	return ConnectionError(err)
}

// ConnectionError returns err wrapped with ErrConnection when it reports a
// failed or lost connection, and err unchanged otherwise (nil stays nil).
// Errors caused by the caller's context stay context errors, and a
// statement the server rejected stays a *pgconn.PgError. The tenant package
// applies it to its own SQL so that callers see one classification.
func ConnectionError(err error) error {
	if err == nil || errors.Is(err, ErrConnection) || isContextError(err) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 57P01-57P05: admin, crash or
		// idle shutdown, cannot connect now.
		if strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") {
			return fmt.Errorf("%w: %w", ErrConnection, err)
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE),
		errors.As(err, &netErr):
		return fmt.Errorf("%w: %w", ErrConnection, err)
	}
	return err
}

// isContextError reports an error caused by the caller's context: pgx
// returns those (wrapped) when a context ends during a call.
func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// checkExecMode refuses the modes that send BYTEA as hex text.
func checkExecMode(m pgx.QueryExecMode) error {
	switch m {
	case pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol:
		return fmt.Errorf("%w (got %v)", ErrTextMode, m)
	}
	return nil
}

func tooLarge(max int64) error {
	return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
}
