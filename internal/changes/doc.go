// Package changes owns what pgtenant's hosts tell each other about
// tenants whose data changed, and the cached views that depend on it:
//
//   - the Notifier, which announces changed tenants to every host, a batch
//     per NotifyWindow, after the writes it announces returned;
//   - the listener, one connection per Hub outside the pool that LISTENs
//     for the announcements of every host, with probes that prove it hears
//     them (a connection through a transaction pooler does not);
//   - the views: per tenant, the small queue states and the state counts
//     that RetrySpool's scheduler scans every 10 ms, kept in memory until
//     the tenant changes, bounded in messages, bytes, tenants and age;
//   - the staleness bound: a view is trusted only while the listener's
//     probes arrive, and kept at most MaxAge.
//
// Every operation that changes what a tenant holds (metadata writes, Drop,
// Purge, Provision, migrations) calls Hub.Changed: this host's views of the
// tenant are dropped at once, and the other hosts' when the announcement
// arrives.
//
// The only SQL here is the notification statement and LISTEN, both on a
// fixed channel name; payloads are bound parameters.
package changes
