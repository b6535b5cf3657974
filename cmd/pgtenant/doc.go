// Command pgtenant shows and operates pgtenant's multi-tenant storage: a
// demo that plays a SaaS queue host, tenant administration, migrations and
// purges. Run "pgtenant --help".
package main
