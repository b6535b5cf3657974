package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrConnection reports that the connection to PostgreSQL failed: it
	// could not be opened, the server closed it (SQLSTATE classes 08 and
	// 57P, e.g. a terminated backend or a shutdown), or the network broke.
	ErrConnection = errors.New("pgtenant: connection to PostgreSQL failed")
	// ErrTableMissing reports that a table (or its schema) does not exist:
	// SQLSTATE 42P01 or 3F000.
	ErrTableMissing = errors.New("pgtenant: table does not exist")
	// ErrStalePlan reports a prepared statement invalidated by DDL:
	// SQLSTATE 0A000, "cached plan must not change result type". pgx drops
	// the statement from its cache, so running it again succeeds.
	ErrStalePlan = errors.New("pgtenant: cached plan is stale")
	// ErrPreparedStatements reports named prepared statements that a
	// transaction-pooling PgBouncer mixed up between clients (42P05
	// "prepared statement already exists", 26000 "does not exist").
	ErrPreparedStatements = errors.New("pgtenant: prepared statements were mixed up between clients; " +
		"behind PgBouncer in transaction pooling use WithExecMode(pgx.QueryExecModeCacheDescribe) " +
		"(pgtenant --exec-mode describe)")
)

// Classify maps driver errors onto the sentinels above, keeping the original
// error in the chain: missing tables, stale plans, prepared statements
// mixed up by a pooler, and failed or lost connections. Errors caused by
// the caller's context stay context errors, and any other statement the
// server refused stays a *pgconn.PgError. nil stays nil.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42P01", "3F000":
			return fmt.Errorf("%w: %w", ErrTableMissing, err)
		case "0A000":
			if strings.Contains(pgErr.Message, "cached plan") {
				return fmt.Errorf("%w: %w", ErrStalePlan, err)
			}
		case "42P05", "26000":
			return fmt.Errorf("%w: %w", ErrPreparedStatements, err)
		}
	}
	return ConnectionError(err)
}

// ConnectionError returns err wrapped with ErrConnection when it reports a
// failed or lost connection, and err unchanged otherwise (nil stays nil).
func ConnectionError(err error) error {
	if err == nil || errors.Is(err, ErrConnection) || IsContextError(err) {
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

// IsContextError reports an error caused by the caller's context: pgx
// returns those (wrapped) when a context ends during a call.
func IsContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
