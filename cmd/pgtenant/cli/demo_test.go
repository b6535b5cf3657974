package cli

import (
	"errors"
	"strings"
	"testing"
)

// TestContainerHint checks that each way the demo's container fails to
// start (the errors as testcontainers-go reports them) gets its own advice.
func TestContainerHint(t *testing.T) {
	cases := []struct{ err, want string }{
		{`create container: reaper: new reaper: run container: Error response from daemon: Get "https://registry-1.docker.io/v2/": no such host`, "TESTCONTAINERS_RYUK_DISABLED=true"},
		{`create container: Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: no such host`, "image img:1 is not present and cannot be pulled"},
		{`Cannot connect to the Docker daemon at unix:///var/run/docker.sock`, "is Docker running?"},
	}
	for _, c := range cases {
		if got := containerHint(errors.New(c.err), "img:1"); !strings.Contains(got, c.want) {
			t.Errorf("hint for %q = %q, want it to mention %q", c.err, got, c.want)
		}
	}
}
