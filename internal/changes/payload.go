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

// fromPrefix starts the last line of a change payload: the sending
// Hub's token, so that a Hub skips the echo of its own changes (it
// dropped its views when it made them). Hosts of earlier releases take it
// for a tenant id, which no tenant id can be.
const fromPrefix = "!from "

// Payloads packs ids into payloads of at most MaxPayload bytes: prefix,
// then ids separated by newlines (a tenant id holds none), then a line
// with the sender's token.
func Payloads(prefix, token string, ids []string) []string {
	var (
		out []string
		b   strings.Builder
	)
	from := "\n" + fromPrefix + token
	for _, id := range ids {
		if b.Len() > 0 && b.Len()+1+len(id)+len(from) > MaxPayload {
			out = append(out, b.String()+from)
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
		out = append(out, b.String()+from)
	}
	return out
}

// ParsePayload returns the tenant ids and the sender's token (empty from
// an earlier release) of a payload with prefix, and whether it had that
// prefix.
func ParsePayload(prefix, payload string) (ids []string, token string, ok bool) {
	rest, ok := strings.CutPrefix(payload, prefix)
	if !ok {
		return nil, "", false
	}
	ids = strings.Split(rest, "\n")
	if last := ids[len(ids)-1]; strings.HasPrefix(last, fromPrefix) {
		token, ids = strings.TrimPrefix(last, fromPrefix), ids[:len(ids)-1]
	}
	return ids, token, true
}
