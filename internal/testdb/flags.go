package testdb

import "flag"

// flagRun and setRun read and set go test's -run flag.
func flagRun() string {
	if f := flag.Lookup("test.run"); f != nil {
		return f.Value.String()
	}
	return ""
}

func setRun(pattern string) error { return flag.Set("test.run", pattern) }
