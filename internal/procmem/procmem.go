// Package procmem reads the memory of processes on this machine from
// /proc: what the benchmarks report of PostgreSQL's server backends. Only
// tests and benchmarks import it.
package procmem

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// PrivateKB returns the private memory of process pid (Private_Clean +
// Private_Dirty of /proc/PID/smaps_rollup), in KiB.
func PrivateKB(pid string) (int64, error) {
	f, err := os.Open("/proc/" + pid + "/smaps_rollup")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var kb int64
	s := bufio.NewScanner(f)
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) >= 2 && (f[0] == "Private_Clean:" || f[0] == "Private_Dirty:") {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, err
			}
			kb += v
		}
	}
	return kb, s.Err()
}
