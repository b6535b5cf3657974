// Package cli is the pgtenant command: Run parses the arguments and runs one
// command. It is a package of its own so that the integration tests can run
// every command in process against a real database.
package cli
