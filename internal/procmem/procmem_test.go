package procmem

import (
	"os"
	"strconv"
	"testing"
)

// TestPrivateKBOfThisProcess: the test binary has private memory, and a
// process that does not exist is an error.
func TestPrivateKBOfThisProcess(t *testing.T) {
	kb, err := PrivateKB(strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if kb <= 0 {
		t.Fatalf("PrivateKB of this process = %d KiB, want more than 0", kb)
	}
	if _, err := PrivateKB("0"); err == nil {
		t.Fatal("PrivateKB of pid 0 gave no error")
	}
}
