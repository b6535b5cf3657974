package quota

import (
	"errors"
	"fmt"

	"github.com/pgtenant/pgtenant/internal/registry"
)

// ErrExceeded reports a write refused by a quota; nothing was stored.
var ErrExceeded = errors.New("pgtenant: quota exceeded")

// Limits bound an owner's stored body bytes and number of messages; zero
// means no bound.
type Limits struct {
	Bytes, Messages int64
}

// Set reports whether any bound is set.
func (l Limits) Set() bool { return l.Bytes > 0 || l.Messages > 0 }

// Error reports a write that a limit refused. It unwraps to ErrExceeded.
type Error struct {
	// Unit is "bytes" or "messages": the limit that refused the write.
	Unit string
	// Used is what the write would have brought the usage to; Limit is
	// the bound.
	Used, Limit int64
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %d %s would be stored, at most %d allowed", ErrExceeded, e.Used, e.Unit, e.Limit)
}

// Unwrap returns ErrExceeded.
func (e *Error) Unwrap() error { return ErrExceeded }

// Check returns the Error for a write that would bring the usage to bytes
// and messages, or nil if l allows it.
func (l Limits) Check(bytes, messages int64) error {
	switch {
	case l.Messages > 0 && messages > l.Messages:
		return &Error{Unit: "messages", Used: messages, Limit: l.Messages}
	case l.Bytes > 0 && bytes > l.Bytes:
		return &Error{Unit: "bytes", Used: bytes, Limit: l.Bytes}
	}
	return nil
}

// BodyTooLarge is the Error for one body larger than the whole byte limit:
// a streaming write stops as soon as it is.
func (l Limits) BodyTooLarge(size int64) error {
	if l.Bytes > 0 && size > l.Bytes {
		return &Error{Unit: "bytes", Used: size, Limit: l.Bytes}
	}
	return nil
}

// LockSQL is the statement a quota'd write or delete runs first, in the
// same transaction: it locks the owner's usage row until the transaction
// ends. Its parameters are @store and @tenant.
var LockSQL = "SELECT 1 FROM " + registry.Table + " WHERE " + registry.ActiveRow("") + " FOR NO KEY UPDATE"

// Parts are the template parts of quota'd statements on a message table
// (see package stmt): the caller's template puts them in its WITH list.
//
//   - {charge} is the CTEs old, usage, next and charged for a write of
//     @size bytes to the message row {row}: old is the message's current
//     size (none for a new message), next the usage after the write, and
//     charged one row if the owner is active and next is within
//     @max_bytes and @max_messages (0: no bound), in which case the usage
//     row now holds next. The write itself must require EXISTS (SELECT 1
//     FROM charged). The statement returns next's bytes and messages, so
//     that a refusal can say which limit: Check.
//   - {refund} is the CTE refunded, which takes the messages of the CTE
//     "gone_rows" (one row per deleted message, with its size) off the
//     usage.
//
// Parts need {table} (the message table), {tenant_rows} (the condition on
// the owner's rows of it, "true" when it is the owner's alone) and {row}
// from the caller; their parameters are @store, @tenant, @size,
// @max_bytes and @max_messages.
var Parts = map[string]string{
	"charge": `old AS (SELECT size FROM {table} WHERE {row}),
usage AS (SELECT COALESCE(u.bytes, (SELECT COALESCE(pg_catalog.sum(size), 0)::BIGINT FROM {table} WHERE {tenant_rows})) AS bytes,
		COALESCE(u.messages, (SELECT pg_catalog.count(*) FROM {table} WHERE {tenant_rows})) AS messages
	FROM ` + registry.Table + ` u WHERE ` + registry.ActiveRow("u.") + `),
next AS (SELECT bytes OPERATOR(pg_catalog.+) @size::BIGINT OPERATOR(pg_catalog.-) COALESCE((SELECT size FROM old), 0) AS bytes,
		messages OPERATOR(pg_catalog.+) (CASE WHEN EXISTS (SELECT 1 FROM old) THEN 0 ELSE 1 END) AS messages
	FROM usage),
charged AS (UPDATE ` + registry.Table + ` u SET bytes = n.bytes, messages = n.messages FROM next n
	WHERE ` + registry.ActiveRow("u.") + `
	AND (@max_bytes::BIGINT OPERATOR(pg_catalog.<=) 0 OR n.bytes OPERATOR(pg_catalog.<=) @max_bytes::BIGINT)
	AND (@max_messages::BIGINT OPERATOR(pg_catalog.<=) 0 OR n.messages OPERATOR(pg_catalog.<=) @max_messages::BIGINT)
	RETURNING 1)`,
	"refund": `refunded AS (UPDATE ` + registry.Table + ` u
	SET bytes = u.bytes OPERATOR(pg_catalog.-) (SELECT COALESCE(pg_catalog.sum(size), 0)::BIGINT FROM gone_rows),
		messages = u.messages OPERATOR(pg_catalog.-) (SELECT pg_catalog.count(*) FROM gone_rows)
	WHERE ` + registry.KeyRow("u.") + ` AND u.bytes IS NOT NULL AND EXISTS (SELECT 1 FROM gone_rows))`,
}
