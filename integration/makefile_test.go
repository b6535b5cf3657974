package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakefileStopsOnFailedSetup runs the Makefile's targets with a set-up
// script that fails, and with one that succeeds as a control: a failing
// set-up stops the target with the script's own message, before any go
// command runs.
func TestMakefileStopsOnFailedSetup(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is needed to test the Makefile: %v", err)
	}
	dir := t.TempDir()
	write := func(name, script string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	failing := write("ensure-fails", "echo 'ensure-postgres: image nc-nonexistent:1 is neither present nor pullable' >&2\nexit 1\n")
	working := write("ensure-works", "echo 'ensure-postgres: debootstrap: 20 s, 7 steps done' >&2\necho 'Get:1 noise for the log' >&2\necho example/postgres:1\n")
	server := write("test-server", "echo postgres://fake/db\n")
	failingServer := write("test-server-fails", "[ \"$1\" = stop ] && exit 0\necho 'test-server: the server did not become ready within 60 s' >&2\nexit 1\n")
	marker := filepath.Join(dir, "go-ran")
	fakeGo := write("go", "echo \"$@\" >> "+marker+"\n")
	for _, target := range []string{"test", "demo", "bench"} {
		run := func(ensure string, testServer ...string) (string, error) {
			os.Remove(marker)
			srv := server
			if len(testServer) > 0 {
				srv = testServer[0]
			}
			cmd := exec.Command("make", "--no-print-directory", "-C", "..", target,
				"ENSURE="+ensure, "GO="+fakeGo, "TEST_SERVER="+srv, "SETUP_LOG="+filepath.Join(dir, "setup.log"))
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := run(failing)
		if err == nil {
			t.Errorf("make %s with a failing set-up succeeded:\n%s", target, out)
		}
		if !strings.Contains(out, "neither present nor pullable") {
			t.Errorf("make %s does not show the set-up's message:\n%s", target, out)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("make %s ran go after its set-up failed:\n%s", target, out)
		}
		// Control: the same target with a working set-up runs go.
		out, err = run(working)
		if err != nil {
			t.Errorf("make %s with a working set-up: %v\n%s", target, err, out)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("make %s did not run go after a working set-up:\n%s", target, out)
		}
		if target == "test" {
			// A test server that does not start stops make test too.
			out, err := run(working, failingServer)
			if err == nil || !strings.Contains(out, "did not become ready") {
				t.Errorf("make test with a failing test server: %v\n%s", err, out)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Errorf("make test ran go after its test server failed:\n%s", out)
			}
		}
		if target == "demo" {
			// The set-up's progress lines show on the screen; its chatter
			// goes to the log only.
			if strings.Contains(out, "noise for the log") || !strings.Contains(out, "  debootstrap: 20 s, 7 steps done\nready (example/postgres:1)") {
				t.Errorf("make demo screen:\n%s", out)
			}
			if log, err := os.ReadFile(filepath.Join(dir, "setup.log")); err != nil || !strings.Contains(string(log), "noise for the log") ||
				!strings.Contains(string(log), "7 steps done") {
				t.Errorf("make demo set-up log: %v\n%s", err, log)
			}
		}
	}
}
