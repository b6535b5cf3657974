// Package golden holds no code. Its test renders every SQL statement
// pgtenant sends, per isolation mode, into testdata/*.sql, the one place a
// reviewer reads them, and checks rules over all of them: operators,
// functions and types qualified (a caller's search_path must not redirect
// them), timestamps bound in writes and upserts that take their values
// from EXCLUDED (Citus), no session state changed.
//
// After changing a statement, run
//
//	go test ./internal/golden -update
//
// and read the diff of testdata.
package golden
