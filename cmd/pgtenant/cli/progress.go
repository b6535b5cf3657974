package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows how far a long run is: a bar, redrawn at most every
// 100 ms, when w is a terminal; else, for logs and pipes, one line at
// every tenth of the run ("provisioning: 1000/10000").
type progress struct {
	w          io.Writer
	what       string
	total      int
	bar        *progressbar.ProgressBar
	step, next int
	done       int // steps done
	shown      int // the last count printed, without a bar
}

// newProgress returns the progress of a run of total steps, shown on w.
func newProgress(w io.Writer, what string, total int) *progress {
	p := &progress{w: w, what: what, total: total}
	if isTerminal(w) {
		p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(what), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
			progressbar.OptionThrottle(100*time.Millisecond))
		return p
	}
	p.step = max(1, total/10)
	p.next = p.step
	return p
}

// set records that done steps are done; a count below one already set is
// ignored.
func (p *progress) set(done int) {
	if done < p.done {
		return
	}
	p.done = done
	if p.bar != nil {
		_ = p.bar.Set(done)
		return
	}
	for done >= p.next && p.next <= p.total {
		fmt.Fprintf(p.w, "%s: %d/%d\n", p.what, p.next, p.total)
		p.shown = p.next
		p.next += p.step
	}
}

// add records one more step done.
func (p *progress) add() { p.set(p.done + 1) }

// note prints a line (an error) without breaking the bar.
func (p *progress) note(format string, args ...any) {
	if p.bar != nil {
		fmt.Fprint(p.w, "\n")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// finish ends the run: the bar drawn as far as the run got, or, without
// a bar, the count reached if the last line did not show it.
func (p *progress) finish() {
	if p.bar != nil {
		if p.done >= p.total {
			_ = p.bar.Finish()
		}
		fmt.Fprintln(p.w)
		return
	}
	if p.shown != p.done {
		fmt.Fprintf(p.w, "%s: %d/%d\n", p.what, p.done, p.total)
		p.shown = p.done
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
