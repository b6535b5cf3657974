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
	// Any failure to open a connection, the server's refusals (a wrong
	// password, an unknown database) included.
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return fmt.Errorf("%w: %w", ErrConnection, err)
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
	var netErr net.Error
	switch {
	case errors.Is(err, pgconn.ErrConnClosed),
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

// connectFailure is the error of a pool that cannot reach its server: one
// sentence that says where it tried, why it failed and what to check. It
// unwraps to ErrConnection and the driver's error.
type connectFailure struct {
	msg string
	err error
}

func (e *connectFailure) Error() string   { return e.msg }
func (e *connectFailure) Unwrap() []error { return []error{ErrConnection, e.err} }

// ConnectFailure returns err, a failed connection to the server of cfg,
// as one clear sentence: "pgtenant: cannot connect to PostgreSQL at
// host:port (database d, user u): why; what to check". dsnEmpty says that
// no DSN was given, so that pgx used PostgreSQL's defaults and the PG*
// environment variables. Errors that are not a failed connection are
// returned as they are.
func ConnectFailure(cfg *pgconn.Config, dsnEmpty bool, err error) error {
	if err == nil || cfg == nil || !errors.Is(ConnectionError(err), ErrConnection) {
		return err
	}
	why, check := connectCause(err)
	msg := fmt.Sprintf("pgtenant: cannot connect to PostgreSQL at %s:%d (database %q, user %q): %s; %s",
		cfg.Host, cfg.Port, cfg.Database, cfg.User, why, check)
	if dsnEmpty {
		msg += " (no DSN was given, so PostgreSQL's defaults and the PG* environment variables were used: pass one, such as DATABASE_URL)"
	}
	return &connectFailure{msg: msg, err: err}
}

// connectCause names why a connection failed, in words, and what to check.
func connectCause(err error) (why, check string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000":
			return pgErr.Message, "check the user and password in the DSN"
		case "3D000":
			return pgErr.Message, "check the database name in the DSN, or create the database"
		}
		return pgErr.Message, "check the server's log"
	}
	msg := err.Error()
	for _, c := range []struct{ in, why, check string }{
		{"connection refused", "connection refused", "check that the server runs and listens at that address"},
		{"no such host", "no such host", "check the host name in the DSN"},
		{"timeout", "timed out", "check that the address is reachable (firewall, connect_timeout)"},
		{"no such file or directory", "no server socket there", "check that the server runs, or give a host in the DSN"},
	} {
		if strings.Contains(msg, c.in) {
			return c.why, c.check
		}
	}
	// The innermost error says it best.
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	return err.Error(), "check the DSN and that the server accepts connections"
}

// IsTransient reports an error that running the same work again may not
// hit: a lost connection, a deadlock, a serialization failure, a lock or
// statement timeout, or a server out of locks or connections for the
// moment. Errors caused by the caller's context are not transient.
func IsTransient(err error) bool {
	if err == nil || IsContextError(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", // serialization failure, deadlock
			"55P03",          // lock_not_available: lock_timeout
			"57014",          // query_canceled: statement_timeout
			"53200", "53300": // out of shared memory (locks), too many connections
			return true
		}
	}
	return errors.Is(ConnectionError(err), ErrConnection)
}
