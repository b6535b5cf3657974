package tenant

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/engine"
)

// listener holds one connection, outside the pool, that LISTENs for the
// metadata change notifications of every host, and tells the views of the
// tenants of its store. It reconnects by itself; while it is not connected
// the views are not trusted, and every scan reads the database.
type listener struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// startListener starts the core's listener once; later calls do nothing.
func (c *core) startListener() {
	c.listenOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		l := &listener{cancel: cancel}
		cfg := c.conns.config().ConnConfig.Copy()
		prefix := c.reg.Store() + "/"
		l.done.Go(func() { l.run(ctx, cfg, prefix, c.views, c.obs) })
		c.listener = l
	})
}

func (l *listener) stop() {
	l.cancel()
	l.done.Wait()
}

func (l *listener) run(ctx context.Context, cfg *pgx.ConnConfig, prefix string, views *viewSet, obs *observer) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx, cfg, prefix, views)
		views.trusted.Store(false)
		views.changedAll()
		if ctx.Err() != nil {
			return
		}
		obs.log.WarnContext(ctx, "pgtenant: metadata listener lost its connection; scans read the database until it is back", "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listen connects, LISTENs, trusts the views and forgets their contents
// (changes may have been missed while disconnected), then invalidates a
// tenant's view for every notification until the connection fails.
func (l *listener) listen(ctx context.Context, cfg *pgx.ConnConfig, prefix string, views *viewSet) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	views.changedAll()
	views.trusted.Store(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if ids, ok := engine.ParsePayload(prefix, n.Payload); ok {
			for _, id := range ids {
				views.changed(id)
			}
		}
	}
}
