package affinity

import (
	"cmp"
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/internal/pg"
)

// Pools is a pool split into groups of connections.
type Pools struct {
	groups      []*group
	size, total int // connections per group (the smallest), in all
	escapes     atomic.Int64
	next        atomic.Uint64 // rotates the first group tried by Shared
	closeOnce   sync.Once

	mu     sync.Mutex
	held   map[string]int       // slots held per key
	active map[string]int       // statements holding or waiting per key
	recent map[string]time.Time // keys active within ActiveWindow: when last
	swept  time.Time
}

// ActiveWindow is how long a tenant counts as active after its last
// statement ended, for fair shares: a tenant running one statement after
// another is active between them too.
const ActiveWindow = 100 * time.Millisecond

type group struct {
	pool *pgxpool.Pool
	gate *gate
}

// Open splits cfg's MaxConns connections into groups of size connections
// (the last groups may hold one more, so that all MaxConns are used) and
// opens a pool for each; MinConns are spread over the groups. size must be
// at least 1; a size of MaxConns or more makes one group.
func Open(ctx context.Context, cfg *pgxpool.Config, size int) (*Pools, error) {
	if size < 1 {
		return nil, errors.New("pgtenant: connections per group must be at least 1")
	}
	total := int(cfg.MaxConns)
	n := max(1, total/size)
	p := &Pools{size: total / n, total: total, held: make(map[string]int), active: make(map[string]int),
		recent: make(map[string]time.Time)}
	for i := range n {
		c := cfg.Copy()
		c.MaxConns = int32(share(total, n, i))
		c.MinConns = int32(min(share(int(cfg.MinConns), n, i), int(c.MaxConns)))
		pool, err := pgxpool.NewWithConfig(ctx, c)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.groups = append(p.groups, &group{pool: pool, gate: newGate(int(c.MaxConns))})
	}
	return p, nil
}

// share is group i's part of total spread over n groups.
func share(total, n, i int) int {
	s := total / n
	if i >= n-total%n {
		s++
	}
	return s
}

// Groups is the number of groups.
func (p *Pools) Groups() int { return len(p.groups) }

// Config is the configuration of the first group's pool (all are alike,
// but for MaxConns and MinConns).
func (p *Pools) Config() *pgxpool.Config { return p.groups[0].pool.Config() }

// Close closes every group's pool. It is idempotent.
func (p *Pools) Close() {
	p.closeOnce.Do(func() {
		for _, g := range p.groups {
			g.pool.Close()
		}
	})
}

// Stat sums the groups' pool statistics.
type Stat struct {
	MaxConns, TotalConns, AcquiredConns, IdleConns int32
	EmptyAcquireCount                              int64
	AcquireDuration                                time.Duration
	// Escapes counts statements that left their tenant's groups after
	// waiting EscapeAfter there.
	Escapes int64
}

// Stat returns the groups' statistics summed.
func (p *Pools) Stat() Stat {
	var s Stat
	for _, g := range p.groups {
		gs := g.pool.Stat()
		s.MaxConns += gs.MaxConns()
		s.TotalConns += gs.TotalConns()
		s.AcquiredConns += gs.AcquiredConns()
		s.IdleConns += gs.IdleConns()
		s.EmptyAcquireCount += gs.EmptyAcquireCount()
		s.AcquireDuration += gs.AcquireDuration()
	}
	s.Escapes = p.escapes.Load()
	return s
}

// Rank returns key's first and second choice among n groups; see Order.
func Rank(key string, n int) (first, second int) {
	o := Order(key, n)
	if n == 1 {
		return o[0], o[0]
	}
	return o[0], o[1]
}

// Order ranks n groups for key by rendezvous hashing: by a score that
// depends on the key and the group only, highest first. Adding a group
// moves a key's first choice only if the new group ranks first.
func Order(key string, n int) []int {
	h := fnv.New64a()
	h.Write([]byte(key))
	base := h.Sum64()
	scores := make([]uint64, n)
	order := make([]int, n)
	for i := range n {
		scores[i] = mix(base ^ uint64(i+1)*0x9e3779b97f4a7c15)
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	return order
}

// mix is splitmix64's finaliser.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// For returns the database of tenant key: its statements run on its first
// choice of group when it has a free connection, on its second while the
// tenant holds less than its fair share, and otherwise wait at its first
// or second choice, admitted fairly. So each server connection serves
// about 2/Groups of the tenants, and caches only their statements and
// relations. A tenant with more statements in flight than its two groups
// hold (a busy tenant, or the only active one) spreads further, in its
// order, up to its fair share of the whole pool.
func (p *Pools) For(key string) pg.DB {
	return &db{p: p, key: key, order: Order(key, len(p.groups))}
}

// Shared returns a database for statements of no tenant in particular
// (the registry's): each runs on a free group, tried from a rotating
// start, or waits at the group with the fewest waiters.
func (p *Pools) Shared() pg.DB {
	return &db{p: p, any: true}
}

// db is one tenant's view of the groups.
type db struct {
	p     *Pools
	key   string
	order []int // the tenant's groups, best first
	any   bool
}

// EscapeAfter is how long a statement waits at its groups before it takes
// a free connection of any group; ten times as long for a tenant that
// holds its fair share already (a tenant flooding its groups must not
// spread over everyone's). It keeps affinity from deadlocking: a
// goroutine holding a connection of its tenant's groups (an open stream)
// that waits for another while every connection of those groups is held
// the same way gets one elsewhere, as it would in an undivided pool.
const EscapeAfter = 100 * time.Millisecond

// enter counts a statement of key as active (holding or waiting).
func (p *Pools) enter(key string) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active[key]++
	p.recent[key] = now
	if now.Sub(p.swept) > ActiveWindow {
		for k, t := range p.recent {
			if now.Sub(t) > ActiveWindow && p.active[k] == 0 {
				delete(p.recent, k)
			}
		}
		p.swept = now
	}
}

// share is a key's fair share of slots: the pool's connections divided
// among the keys active now or within ActiveWindow, and at least a
// group's size. p.mu is held.
func (p *Pools) share() int {
	n := max(len(p.recent), 1)
	return max(p.size, (p.total+n-1)/n)
}

// claim counts a slot for key beyond its first choice if key holds at
// least least and less than its share, and reports whether it did.
func (p *Pools) claim(key string, least int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.held[key]; h < least || h >= p.share() {
		return false
	}
	p.held[key]++
	return true
}

// belowShare reports whether key holds less than its share.
func (p *Pools) belowShare(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[key] < p.share()
}

// took counts a slot for key.
func (p *Pools) took(key string) {
	p.mu.Lock()
	p.held[key]++
	p.mu.Unlock()
}

// unclaim takes back a claim whose slot was not free.
func (p *Pools) unclaim(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[key]--; p.held[key] <= 0 {
		delete(p.held, key)
	}
}

// leave records that a statement of key ended; holding says whether it
// held a slot.
func (p *Pools) leave(key string, holding bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active[key]--; p.active[key] <= 0 {
		delete(p.active, key)
	}
	p.recent[key] = time.Now()
	if holding {
		if p.held[key]--; p.held[key] <= 0 {
			delete(p.held, key)
		}
	}
}

// acquire admits the statement to a group and returns it with the function
// that lets the next one in.
func (d *db) acquire(ctx context.Context) (*group, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	d.p.enter(d.key)
	g, err := d.admit(ctx)
	if err != nil {
		d.p.leave(d.key, false)
		return nil, nil, err
	}
	var o sync.Once
	return g, func() {
		o.Do(func() {
			g.gate.release(d.key)
			d.p.leave(d.key, true)
		})
	}, nil
}

// admit finds the statement a slot and counts it as held: at once if
// one is free where the statement may go (tryAny for statements of no
// tenant, tryTenant for a tenant's), else by waiting at the group that
// choose picks, or escaping to any free group after EscapeAfter.
func (d *db) admit(ctx context.Context) (*group, error) {
	var (
		g  *group
		ok bool
	)
	if d.any {
		g, ok = d.tryAny()
	} else {
		g, ok = d.tryTenant()
	}
	if ok {
		return g, nil
	}
	return d.wait(ctx, g)
}

// tryAny takes a free group for a statement of no tenant, starting at a
// rotating one so that no backend runs all of them; when none is free it
// returns the group with the fewest waiters to wait at.
func (d *db) tryAny() (*group, bool) {
	n := len(d.p.groups)
	start := int(d.p.next.Add(1) % uint64(n))
	for i := range n {
		if x := d.p.groups[(start+i)%n]; x.gate.tryAcquire(d.key) {
			d.p.took(d.key)
			return x, true
		}
	}
	g := d.p.groups[start]
	for _, x := range d.p.groups {
		if x.gate.load() < g.gate.load() {
			g = x
		}
	}
	return g, false
}

// tryTenant takes the tenant's first choice if free; else its second if
// free and the tenant holds less than its share; else, if the tenant alone
// holds as many slots as its two groups have and less than its share, the
// next free group in its order. When none is free it returns the group to
// wait at: the first choice, or the second if fewer wait there and the
// tenant is within its share.
func (d *db) tryTenant() (*group, bool) {
	if x := d.p.groups[d.order[0]]; x.gate.tryAcquire(d.key) {
		d.p.took(d.key)
		return x, true
	}
	if len(d.order) > 1 && d.p.claim(d.key, 0) {
		if x := d.p.groups[d.order[1]]; x.gate.tryAcquire(d.key) {
			return x, true
		}
		d.p.unclaim(d.key)
	}
	// A tenant that fills its two groups by itself (a busy tenant, or the
	// only one) spreads over the next ones while within its share.
	for _, i := range d.order[min(2, len(d.order)):] {
		if !d.p.claim(d.key, 2*d.p.size) {
			break
		}
		if x := d.p.groups[i]; x.gate.tryAcquire(d.key) {
			return x, true
		}
		d.p.unclaim(d.key)
	}
	g := d.p.groups[d.order[0]]
	if len(d.order) > 1 {
		if b := d.p.groups[d.order[1]]; b.gate.load() < g.gate.load() && d.p.belowShare(d.key) {
			g = b // within its share: it may wait there
		}
	}
	return g, false
}

// wait queues the statement at g, admitted in turn, and after EscapeAfter
// of waiting takes a free slot of any other group instead (a tenant at its
// share only after ten times as long: it may hold slots it waits for).
func (d *db) wait(ctx context.Context, g *group) (*group, error) {
	w := g.gate.enqueue(d.key)
	if w == nil {
		d.p.took(d.key)
		return g, nil
	}
	timer := time.NewTimer(EscapeAfter)
	defer timer.Stop()
	var waited time.Duration
	for {
		select {
		case <-w.ch:
			d.p.took(d.key)
			return g, nil
		case <-ctx.Done():
			if g.gate.cancel(d.key, w) {
				g.gate.release(d.key)
			}
			return nil, ctx.Err()
		case <-timer.C:
			waited += EscapeAfter
			if !d.any && waited < 10*EscapeAfter && !d.p.belowShare(d.key) {
				timer.Reset(EscapeAfter)
				continue
			}
			if x := d.escape(g, w); x != nil {
				return x, nil
			}
			timer.Reset(EscapeAfter)
		}
	}
}

// escape takes a free slot of a group other than g for a statement
// waiting at g with w, or returns nil.
func (d *db) escape(g *group, w *waiter) *group {
	for _, x := range d.p.groups {
		if x != g && x.gate.tryAcquire(d.key) {
			if g.gate.cancel(d.key, w) {
				g.gate.release(d.key)
			}
			d.p.escapes.Add(1)
			d.p.took(d.key)
			return x
		}
	}
	return nil
}

func (d *db) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	g, release, err := d.acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer release()
	return g.pool.Exec(ctx, sql, args...)
}

func (d *db) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	g, release, err := d.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := g.pool.Query(ctx, sql, args...)
	if err != nil {
		release()
		return nil, err
	}
	return &gatedRows{Rows: rows, release: release}, nil
}

func (d *db) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	g, release, err := d.acquire(ctx)
	if err != nil {
		return errRow{err}
	}
	return &gatedRow{row: g.pool.QueryRow(ctx, sql, args...), release: release}
}

// SendBatch runs a pipeline on a group; its slot is held until the
// results are closed.
func (d *db) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	g, release, err := d.acquire(ctx)
	if err != nil {
		return errBatch{err}
	}
	return &gatedBatch{BatchResults: g.pool.SendBatch(ctx, b), release: release}
}

func (d *db) Begin(ctx context.Context) (pgx.Tx, error) {
	return d.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction on a group; its slot is held until the
// transaction ends.
func (d *db) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	g, release, err := d.acquire(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := g.pool.BeginTx(ctx, opts)
	if err != nil {
		release()
		return nil, err
	}
	return &gatedTx{Tx: tx, release: release}, nil
}

// gatedRows lets the next statement in when the rows are done.
type gatedRows struct {
	pgx.Rows
	release func()
}

func (r *gatedRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.release()
	return false
}

func (r *gatedRows) Close() {
	r.Rows.Close()
	r.release()
}

// gatedRow lets the next statement in after Scan.
type gatedRow struct {
	row     pgx.Row
	release func()
}

func (r *gatedRow) Scan(dest ...any) error {
	defer r.release()
	return r.row.Scan(dest...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// gatedBatch lets the next statement in when the batch's results are
// closed.
type gatedBatch struct {
	pgx.BatchResults
	release func()
}

func (b *gatedBatch) Close() error {
	defer b.release()
	return b.BatchResults.Close()
}

// errBatch is the results of a batch that could not start.
type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow{b.err} }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }

// gatedTx lets the next statement in when the transaction ends.
type gatedTx struct {
	pgx.Tx
	release func()
}

func (t *gatedTx) Commit(ctx context.Context) error {
	defer t.release()
	return t.Tx.Commit(ctx)
}

func (t *gatedTx) Rollback(ctx context.Context) error {
	defer t.release()
	return t.Tx.Rollback(ctx)
}
