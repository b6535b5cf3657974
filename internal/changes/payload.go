package changes

import "strings"

// Channel is the notification channel of every pgtenant store. Its name
// and the change payload format are those of earlier releases, so hosts of
// two releases hear each other during a rolling upgrade.
const Channel = "pgtenant_meta"

// MaxPayload is the most bytes of one notification's payload (PostgreSQL
// refuses 8000 or more).
const MaxPayload = 7900

// probePrefix starts a probe's payload; a change payload starts with its
// store's key, which never starts with '!'.
const probePrefix = "!probe "

// Payloads packs ids into payloads of at most MaxPayload bytes, each
// prefix followed by ids separated by newlines (a tenant id holds none).
func Payloads(prefix string, ids []string) []string {
	var (
		out []string
		b   strings.Builder
	)
	for _, id := range ids {
		if b.Len() > 0 && b.Len()+1+len(id) > MaxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(prefix)
		} else {
			b.WriteByte('\n')
		}
		b.WriteString(id)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// ParsePayload returns the tenant ids of a payload with prefix, and
// whether it had that prefix.
func ParsePayload(prefix, payload string) ([]string, bool) {
	rest, ok := strings.CutPrefix(payload, prefix)
	if !ok {
		return nil, false
	}
	return strings.Split(rest, "\n"), true
}
