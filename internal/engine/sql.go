package engine

import (
	"errors"
	"strings"
	"time"

	"github.com/pgtenant/pgtenant/internal/quota"
	"github.com/pgtenant/pgtenant/internal/stmt"
	"github.com/pgtenant/pgtenant/schema"
)

// values are the parameters of the engine's statements, by name (see
// fields). A Target fills the first group once; each call fills its own.
type values struct {
	// The target's: its tenant column value, its guard's owner, its
	// quota.
	partition             string
	store, tenant         string
	maxBytes, maxMessages int64

	// A body's.
	messageID string
	data      []byte
	size      int64
	version   int64
	seq       int32
	now       time.Time
	before    time.Time
	limit     int64

	// A message's metadata.
	metaID, lastError, retryPolicy  []byte
	state, fromState, toState       int16
	attempts, maxAttempts, priority int64
	nextRetry, created              time.Time
	headers                         [][]byte
	afterCreated                    time.Time
	afterID                         string
	since                           *time.Time
	listLimit                       *int64
	offset                          int64
	ids                             []string
}

var fields = stmt.Fields[values]{
	"tenant_id":     func(v *values) any { return v.partition },
	"store":         func(v *values) any { return v.store },
	"tenant":        func(v *values) any { return v.tenant },
	"max_bytes":     func(v *values) any { return v.maxBytes },
	"max_messages":  func(v *values) any { return v.maxMessages },
	"message_id":    func(v *values) any { return v.messageID },
	"data":          func(v *values) any { return v.data },
	"size":          func(v *values) any { return v.size },
	"version":       func(v *values) any { return v.version },
	"seq":           func(v *values) any { return v.seq },
	"now":           func(v *values) any { return v.now },
	"before":        func(v *values) any { return v.before },
	"limit":         func(v *values) any { return v.limit },
	"meta_id":       func(v *values) any { return v.metaID },
	"last_error":    func(v *values) any { return v.lastError },
	"retry_policy":  func(v *values) any { return v.retryPolicy },
	"state":         func(v *values) any { return v.state },
	"from_state":    func(v *values) any { return v.fromState },
	"to_state":      func(v *values) any { return v.toState },
	"attempts":      func(v *values) any { return v.attempts },
	"max_attempts":  func(v *values) any { return v.maxAttempts },
	"priority":      func(v *values) any { return v.priority },
	"next_retry":    func(v *values) any { return v.nextRetry },
	"created":       func(v *values) any { return v.created },
	"headers":       func(v *values) any { return v.headers },
	"after_created": func(v *values) any { return v.afterCreated },
	"after_id":      func(v *values) any { return v.afterID },
	"since":         func(v *values) any { return v.since },
	"list_limit":    func(v *values) any { return v.listLimit },
	"offset":        func(v *values) any { return v.offset },
	"ids":           func(v *values) any { return v.ids },
}

// The statements on a target's message table {table} and its chunk table
// {chunks}. Every statement reads only the target's rows ({row}: the
// message's; {tenant_rows}: all of the target's) and carries the guard
// ({read_guard}, {write_guard}: "true" without one; a guarded INSERT ...
// SELECT selects {insert_key} and follows its select list with
// {insert_source}). Rules that Citus imposes, proven on a cluster by
// integration/citus: timestamps are bound (@now), never computed by the
// server in a statement that writes (Citus mis-deparses a stable function
// in an INSERT ... SELECT that reads a reference table, and refuses
// non-immutable functions in DO UPDATE SET); and no data-modifying WITH
// query sits beside a guard (a distributed schema's single-shard table
// then reaches its worker with the reference table unresolved): a write
// and the chunk clean-up that follows it are two statements of one
// pipeline (one round trip, one implicit transaction), the write first,
// so that the message row is locked before the chunk rows, as in every
// write.
const (
	// putSQL stores a body inline, replacing any earlier version; the
	// pieces of an earlier chunked version go with chunkCleanAllSQL after
	// it.
	putSQL = `INSERT INTO {table} ({key_cols}message_id, data, size, created, updated, chunked_version)
SELECT {insert_key}@message_id::VARCHAR, @data::pg_catalog.bytea, @size::BIGINT, @now::pg_catalog.timestamptz, @now::pg_catalog.timestamptz, NULL::BIGINT
{insert_source}
ON CONFLICT ({conflict}) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, updated = EXCLUDED.updated, chunked_version = EXCLUDED.chunked_version`

	// putInlineSQL is putSQL for the common case: it changes nothing when
	// the message's row points at pieces (chunked_version set), and then
	// putSQL and chunkCleanAllSQL run instead. Pieces exist only for a row
	// that points at them (every statement that makes a row inline or
	// deletes it removes them in its transaction), so an inline body that
	// replaces an inline one, or none, leaves the chunk table untouched:
	// not read, not locked, not opened by the server.
	putInlineSQL = `INSERT INTO {table} AS m ({key_cols}message_id, data, size, created, updated, chunked_version)
SELECT {insert_key}@message_id::VARCHAR, @data::pg_catalog.bytea, @size::BIGINT, @now::pg_catalog.timestamptz, @now::pg_catalog.timestamptz, NULL::BIGINT
{insert_source}
ON CONFLICT ({conflict}) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, updated = EXCLUDED.updated, chunked_version = EXCLUDED.chunked_version
WHERE m.chunked_version IS NULL`

	// chunkCleanAllSQL removes every piece of the message.
	chunkCleanAllSQL = `DELETE FROM {chunks} WHERE {row}`

	// quotaPutSQL is putSQL under a quota (package quota): it writes only
	// if the usage charged for it stays within the limits, and returns
	// whether it wrote and the usage the write came to. The usage row is
	// locked before (see quota.LockSQL), so the registry, not the guard,
	// decides whether the tenant takes writes.
	quotaPutSQL = `WITH {charge},
put AS (INSERT INTO {table} ({key_cols}message_id, data, size, created, updated, chunked_version)
	SELECT {key_val}@message_id::VARCHAR, @data::pg_catalog.bytea, @size::BIGINT, @now::pg_catalog.timestamptz, @now::pg_catalog.timestamptz, NULL::BIGINT
	WHERE EXISTS (SELECT 1 FROM charged)
	ON CONFLICT ({conflict}) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, updated = EXCLUDED.updated, chunked_version = EXCLUDED.chunked_version
	RETURNING 1),
gone AS (DELETE FROM {chunks} WHERE {row} AND EXISTS (SELECT 1 FROM put))
SELECT EXISTS (SELECT 1 FROM put), (SELECT bytes FROM next), (SELECT messages FROM next)`

	// chunkedPutSQL points the message row at a streamed body's pieces,
	// version @version, on the streaming transaction's commit.
	chunkedPutSQL = `INSERT INTO {table} ({key_cols}message_id, data, size, created, updated, chunked_version)
SELECT {insert_key}@message_id::VARCHAR, ''::pg_catalog.bytea, @size::BIGINT, @now::pg_catalog.timestamptz, @now::pg_catalog.timestamptz, @version::BIGINT
{insert_source}
ON CONFLICT ({conflict}) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, updated = EXCLUDED.updated, chunked_version = EXCLUDED.chunked_version`

	// quotaChunkedPutSQL is chunkedPutSQL under a quota.
	quotaChunkedPutSQL = `WITH {charge},
put AS (INSERT INTO {table} ({key_cols}message_id, data, size, created, updated, chunked_version)
	SELECT {key_val}@message_id::VARCHAR, ''::pg_catalog.bytea, @size::BIGINT, @now::pg_catalog.timestamptz, @now::pg_catalog.timestamptz, @version::BIGINT
	WHERE EXISTS (SELECT 1 FROM charged)
	ON CONFLICT ({conflict}) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, updated = EXCLUDED.updated, chunked_version = EXCLUDED.chunked_version
	RETURNING 1)
SELECT EXISTS (SELECT 1 FROM put), (SELECT bytes FROM next), (SELECT messages FROM next)`

	// chunkInsertSQL adds one piece of a streamed body.
	chunkInsertSQL = `INSERT INTO {chunks} ({key_cols}message_id, version, seq, data)
VALUES ({key_val}@message_id::VARCHAR, @version::BIGINT, @seq::INT, @data::pg_catalog.bytea)`

	// chunkCleanSQL removes the pieces of the message's other versions.
	chunkCleanSQL = `DELETE FROM {chunks} WHERE {row} AND version OPERATOR(pg_catalog.<>) @version::BIGINT`

	// probeSQL finds a missing chunk table and locks nothing, so that a
	// streaming write locks the message row before any chunk row.
	probeSQL = `SELECT FROM {chunks} LIMIT 0`

	// chunkScanSQL reads a version's pieces in order.
	chunkScanSQL = `SELECT data FROM {chunks} WHERE {row} AND version OPERATOR(pg_catalog.=) @version::BIGINT ORDER BY seq`

	// getSQL reads a message row: an inline body, or the version of its
	// pieces.
	getSQL = `SELECT data, size, chunked_version FROM {table} WHERE {row} AND {read_guard}`

	// deleteSQL removes a message; its pieces go with chunkCleanAllSQL
	// after it.
	deleteSQL = `DELETE FROM {table} WHERE {row} AND {read_guard} RETURNING size`

	// deleteInlineSQL is deleteSQL for a message stored inline; it deletes
	// nothing when the row points at pieces (then deleteSQL and
	// chunkCleanAllSQL run instead), so it never touches the chunk table.
	deleteInlineSQL = `DELETE FROM {table} WHERE {row} AND chunked_version IS NULL AND {read_guard} RETURNING size`

	// quotaDeleteSQL is deleteSQL under a quota: the usage is refunded.
	quotaDeleteSQL = `WITH gone_rows AS (DELETE FROM {table} WHERE {row} AND {read_guard} RETURNING size),
gone AS (DELETE FROM {chunks} WHERE {row} AND EXISTS (SELECT 1 FROM gone_rows)),
{refund}
SELECT size FROM gone_rows`

	// statsSQL counts the target's messages.
	statsSQL = `SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(size), 0)::BIGINT, pg_catalog.min(created), pg_catalog.max(created)
FROM {table} WHERE {tenant_rows} AND {read_guard}`

	// purgeSQL deletes the oldest batch not updated since @before (by the
	// updated index) and returns their ids and sizes; their pieces go with
	// purgeChunksSQL, in the same transaction.
	purgeSQL = `DELETE FROM {table} m
USING (SELECT {key_list} FROM {table} WHERE {tenant_rows} AND updated OPERATOR(pg_catalog.<) @before::pg_catalog.timestamptz AND {read_guard}
	ORDER BY updated LIMIT @limit::BIGINT) v
WHERE {match} RETURNING m.message_id, m.size`

	// purgeChunksSQL removes the pieces of the messages @ids.
	purgeChunksSQL = `DELETE FROM {chunks} WHERE {tenant_rows} AND message_id OPERATOR(pg_catalog.=) ANY (@ids::VARCHAR[])`

	// quotaPurgeSQL is purgeSQL under a quota, with the pieces and the
	// refund of the usage in the same statement.
	quotaPurgeSQL = `WITH gone_rows AS (DELETE FROM {table} m
	USING (SELECT {key_list} FROM {table} WHERE {tenant_rows} AND updated OPERATOR(pg_catalog.<) @before::pg_catalog.timestamptz AND {read_guard}
		ORDER BY updated LIMIT @limit::BIGINT) v
	WHERE {match} RETURNING {returned}),
gone AS (DELETE FROM {chunks} c USING gone_rows v WHERE {chunk_match}),
{refund}
SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(size), 0)::BIGINT FROM gone_rows`
)

// The statements on a target's metadata table {meta}.
const (
	// metaCols are the metadata columns, in the order scanMeta reads them.
	metaCols = "message_id, meta_id, state, attempts, max_attempts, next_retry, created, updated, last_error, size, priority, headers, retry_policy"

	// metaPutSQL stores a message's metadata, replacing what was there.
	metaPutSQL = `INSERT INTO {meta} ({key_cols}` + metaCols + `)
SELECT {insert_key}@message_id::VARCHAR, @meta_id::pg_catalog.bytea, @state::SMALLINT, @attempts::BIGINT, @max_attempts::BIGINT,
	@next_retry::pg_catalog.timestamptz, @created::pg_catalog.timestamptz, @now::pg_catalog.timestamptz, @last_error::pg_catalog.bytea,
	@size::BIGINT, @priority::BIGINT, @headers::pg_catalog.bytea[], @retry_policy::pg_catalog.bytea
{insert_source}
ON CONFLICT ({conflict}) DO UPDATE SET meta_id = EXCLUDED.meta_id, state = EXCLUDED.state, attempts = EXCLUDED.attempts,
	max_attempts = EXCLUDED.max_attempts, next_retry = EXCLUDED.next_retry, created = EXCLUDED.created, updated = EXCLUDED.updated,
	last_error = EXCLUDED.last_error, size = EXCLUDED.size, priority = EXCLUDED.priority, headers = EXCLUDED.headers,
	retry_policy = EXCLUDED.retry_policy`

	// metaUpdateSQL replaces a message's metadata but its creation time.
	metaUpdateSQL = `UPDATE {meta} SET meta_id = @meta_id::pg_catalog.bytea, state = @state::SMALLINT, attempts = @attempts::BIGINT,
	max_attempts = @max_attempts::BIGINT, next_retry = @next_retry::pg_catalog.timestamptz, updated = @now::pg_catalog.timestamptz,
	last_error = @last_error::pg_catalog.bytea, size = @size::BIGINT, priority = @priority::BIGINT, headers = @headers::pg_catalog.bytea[],
	retry_policy = @retry_policy::pg_catalog.bytea
WHERE {row} AND {write_guard}`

	metaGetSQL    = `SELECT ` + metaCols + ` FROM {meta} WHERE {row} AND {read_guard}`
	metaDeleteSQL = `DELETE FROM {meta} WHERE {row} AND {read_guard} RETURNING state`

	// metaMoveSQL is a compare and swap in one statement: the update
	// happens only if the message is in @from_state when it runs. When it
	// moves nothing, metaExistsSQL tells a missing message from a
	// conflict.
	metaMoveSQL = `UPDATE {meta} SET state = @to_state::SMALLINT, updated = @now::pg_catalog.timestamptz
WHERE {row} AND state OPERATOR(pg_catalog.=) @from_state::SMALLINT AND {write_guard}`
	metaExistsSQL = `SELECT EXISTS (SELECT 1 FROM {meta} WHERE {row} AND {read_guard})`

	// metaFirstPageSQL and metaNextPageSQL page through a state by key,
	// (created, message_id).
	metaFirstPageSQL = `SELECT ` + metaCols + ` FROM {meta}
WHERE {tenant_rows} AND state OPERATOR(pg_catalog.=) @state::SMALLINT AND {read_guard}
ORDER BY created, message_id LIMIT @limit::BIGINT`
	metaNextPageSQL = `SELECT ` + metaCols + ` FROM {meta}
WHERE {tenant_rows} AND state OPERATOR(pg_catalog.=) @state::SMALLINT
	AND (created, message_id) OPERATOR(pg_catalog.>) (@after_created::pg_catalog.timestamptz, @after_id::VARCHAR) AND {read_guard}
ORDER BY created, message_id LIMIT @limit::BIGINT`

	metaCountsSQL = `SELECT state, pg_catalog.count(*) FROM {meta} WHERE {tenant_rows} AND {read_guard} GROUP BY state`

	// metaListSQL is ListMessages, one statement per sort key and order.
	metaListSQL = `WITH f AS (SELECT message_id, created, updated, priority, attempts FROM {meta}
	WHERE {tenant_rows} AND state OPERATOR(pg_catalog.=) @state::SMALLINT
	AND (@since::pg_catalog.timestamptz IS NULL OR created OPERATOR(pg_catalog.>=) @since::pg_catalog.timestamptz
		OR updated OPERATOR(pg_catalog.>=) @since::pg_catalog.timestamptz) AND {read_guard})
SELECT (SELECT pg_catalog.count(*) FROM f),
	ARRAY(SELECT message_id FROM f ORDER BY {sort} {dir}, message_id {dir} LIMIT @list_limit::BIGINT OFFSET @offset::BIGINT)`

	// metaPurgeSQL deletes a batch of the oldest metadata not updated
	// since @before.
	metaPurgeSQL = `DELETE FROM {meta} m
USING (SELECT {key_list} FROM {meta} WHERE {tenant_rows} AND updated OPERATOR(pg_catalog.<) @before::pg_catalog.timestamptz AND {read_guard}
	ORDER BY updated LIMIT @limit::BIGINT) v
WHERE {match}`
)

// listSorts are ListMessages' sort keys and the columns they sort by.
var listSorts = map[string]string{"created": "created", "updated": "updated", "priority": "priority", "attempts": "attempts"}

// parts are the template parts of target t.
func (t Target) parts() map[string]string {
	p := map[string]string{
		"table":         t.Table.Sanitize(),
		"chunks":        t.Table.Chunks().Sanitize(),
		"meta":          t.Table.Meta().Sanitize(),
		"key_cols":      "",
		"key_val":       "",
		"tenant_rows":   "true",
		"row":           "message_id OPERATOR(pg_catalog.=) @message_id",
		"conflict":      "message_id",
		"key_list":      "message_id",
		"match":         "m.message_id OPERATOR(pg_catalog.=) v.message_id",
		"chunk_match":   "c.message_id OPERATOR(pg_catalog.=) v.message_id",
		"returned":      "m.message_id, m.size",
		"read_guard":    "true",
		"write_guard":   "true",
		"insert_key":    "",
		"insert_source": "",
	}
	if t.Partition != "" {
		col := schema.TenantColumn
		p["key_cols"] = col + ", "
		p["key_val"] = "@tenant_id::pg_catalog.text, "
		p["insert_key"] = p["key_val"]
		p["tenant_rows"] = col + " OPERATOR(pg_catalog.=) @tenant_id"
		p["row"] = col + " OPERATOR(pg_catalog.=) @tenant_id AND message_id OPERATOR(pg_catalog.=) @message_id"
		p["conflict"] = col + ", message_id"
		p["key_list"] = col + ", message_id"
		p["match"] += " AND m." + col + " OPERATOR(pg_catalog.=) v." + col
		p["chunk_match"] += " AND c." + col + " OPERATOR(pg_catalog.=) v." + col
		p["returned"] += ", m." + col
	}
	if g := t.Guard; g != nil {
		p["read_guard"], p["write_guard"], p["insert_source"] = g.Read, g.Write, g.Insert
		if t.Partition != "" {
			p["insert_key"] = g.Key
		}
	}
	for k, v := range quota.Parts {
		p[k] = v
	}
	return p
}

// compiler compiles one target's statements, keeping the first error.
type compiler struct {
	parts map[string]string
	err   error
}

func (c *compiler) compile(text string, extra ...string) stmt.Stmt[values] {
	parts := c.parts
	if len(extra) > 0 {
		parts = make(map[string]string, len(c.parts)+len(extra)/2)
		for k, v := range c.parts {
			parts[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			parts[extra[i]] = extra[i+1]
		}
	}
	s, err := stmt.Compile(text, parts, fields)
	if err != nil && c.err == nil {
		c.err = err
	}
	return s
}

// errNoGuardForQuota reports quotas asked of a target without an owner.
var errNoGuardForQuota = errors.New("pgtenant: quotas need a guarded target (an owner's usage row)")

// Statements returns every statement of a Store and a MetaStore on t with
// options o, named, in a fixed order (for the golden files).
func Statements(t Target, o Options) ([]stmt.Named, error) {
	s, err := NewStore(nil, t, o)
	if err != nil {
		return nil, err
	}
	m, err := NewMetaStore(nil, t, o.Mode, 0)
	if err != nil {
		return nil, err
	}
	out := []stmt.Named{
		s.put.Named("data.put"), s.chunkCleanAll.Named("data.chunk_clean_all"), s.chunkInsert.Named("data.chunk_insert"),
		s.chunkedPut.Named("data.chunked_put"), s.chunkClean.Named("data.chunk_clean"), s.probe.Named("data.probe"), s.get.Named("data.get"),
		s.chunkScan.Named("data.chunk_scan"), s.del.Named("data.delete"), s.stats.Named("data.stats"), s.purge.Named("data.purge"),
	}
	if !o.Quota.Set() {
		out = append(out, s.purgeChunks.Named("data.purge_chunks"), s.putInline.Named("data.put_inline"), s.delInline.Named("data.delete_inline"))
	}
	if o.Quota.Set() {
		out = append(out, s.lock.Named("data.quota_lock"))
	}
	out = append(out, m.put.Named("meta.put"), m.update.Named("meta.update"), m.get.Named("meta.get"), m.del.Named("meta.delete"),
		m.move.Named("meta.move"), m.exists.Named("meta.exists"), m.firstPage.Named("meta.first_page"), m.nextPage.Named("meta.next_page"),
		m.counts.Named("meta.counts"), m.purge.Named("meta.purge"))
	for _, name := range []string{"created", "updated", "priority", "attempts"} {
		for _, dir := range []string{"ASC", "DESC"} {
			out = append(out, m.list[name+dir].Named("meta.list."+name+"."+strings.ToLower(dir)))
		}
	}
	return out, nil
}
