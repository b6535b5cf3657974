package pg

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB runs statements, pipelines of statements and transactions.
// *pgxpool.Pool, *pgxpool.Conn, *pgx.Conn and pgx.Tx all satisfy it (Begin
// on a transaction starts a savepoint). A batch outside a transaction runs
// in one implicit transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	Begin(ctx context.Context) (pgx.Tx, error)
}

// BeginTx starts a transaction with opts on db when db can (a pool or a
// connection), and a plain one (a savepoint, inside a transaction)
// otherwise.
func BeginTx(ctx context.Context, db DB, opts pgx.TxOptions) (pgx.Tx, error) {
	if b, ok := db.(interface {
		BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error)
	}); ok {
		return b.BeginTx(ctx, opts)
	}
	return db.Begin(ctx)
}
