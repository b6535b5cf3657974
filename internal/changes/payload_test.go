package changes

import (
	"slices"
	"strings"
	"testing"
)

func TestPayloadsRoundTrip(t *testing.T) {
	var ids []string
	for i := range 500 {
		ids = append(ids, strings.Repeat("t", 40)+string(rune('a'+i%26))+strings.Repeat("x", i%7))
	}
	payloads := Payloads("store/", "tok", ids)
	if len(payloads) < 3 {
		t.Fatalf("%d payloads for ~24 KB of ids, want them split", len(payloads))
	}
	var got []string
	for _, p := range payloads {
		if len(p) > MaxPayload {
			t.Errorf("payload of %d bytes, want at most %d", len(p), MaxPayload)
		}
		part, from, ok := ParsePayload("store/", p)
		if !ok || from != "tok" {
			t.Fatalf("payload %.20q… lacks its prefix", p)
		}
		got = append(got, part...)
	}
	if !slices.Equal(got, ids) {
		t.Errorf("ids did not survive the round trip: %d in, %d out", len(ids), len(got))
	}
	if _, _, ok := ParsePayload("other/", payloads[0]); ok {
		t.Error("another store's prefix matched")
	}
	if got, from, _ := ParsePayload("s/", "s/one"); !slices.Equal(got, []string{"one"}) || from != "" {
		t.Errorf("an earlier release's payload: %q from %q", got, from)
	}
}

func TestProbesAreNoStoresChanges(t *testing.T) {
	// A probe's payload never parses as a change of any store: store keys
	// never start with '!'.
	for _, store := range []string{"schema-per-tenant:retryspool_data", "shared-table:public.x"} {
		if _, _, ok := ParsePayload(store+"/", probePrefix+"0011 7"); ok {
			t.Errorf("a probe parses as a change of store %q", store)
		}
	}
}
