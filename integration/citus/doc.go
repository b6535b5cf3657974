// Package citus holds pgtenant's suite for a real Citus cluster: the data
// and metadata conformance suites in SchemaPerTenant and SharedTable, the
// set-up pgtenant does by itself on a coordinator, the routing of every
// data statement to one node, guards, drops, quotas, and a tenant moved
// between workers under load. Its tests carry the build tag citus and
// need a coordinator at PGTENANT_CITUS_DSN: `make test-citus` starts the
// cluster of ../shared/citus/cluster.sh, or uses the DSN given. They are
// not part of `make test`, since CI cannot build Citus.
package citus
