// Package runreport reports on a run of a one-shot command (the reconciler
// CronJob) in the two places people look: a live progress line when a person
// runs it at a terminal, and the Prometheus Pushgateway that alerting reads
// once the run is over.
//
// # Progress line
//
// A Progress draws one line, redrawn in place, for one long piece of work at
// a time (querying N pending items, downloading M bytes, parsing R rows):
//
//	p := runreport.NewProgress(os.Stderr, runreport.ProgressOptions{})
//	t := p.Task("downloading bill", resp.ContentLength, runreport.Bytes)
//	_, err := io.Copy(f, t.Reader(resp.Body))
//	t.Done()
//
// It draws only when the writer is a terminal (or when forced): under a
// CronJob the output is a pipe and the structured log lines are what is kept,
// so the progress line would only be noise there. Task.Add is safe from many
// goroutines and cheap when nothing is drawn.
//
// # Pushgateway
//
// A CronJob's pod is gone before Prometheus could scrape it, so the run
// pushes its metrics instead. RunMetrics builds the usual gauges of a run
// (start time, duration, exit code, success, item counts) and Push replaces
// the job's group on the Pushgateway with them:
//
//	m := runreport.RunMetrics{Command: "orders", Started: start, Finished: time.Now(), ExitCode: code,
//		Counts: map[string]float64{"published": 12, "closed": 3}}
//	err := runreport.Push(ctx, url, "wxpay_reconciler", map[string]string{"subcommand": "orders"}, m.Collectors("wxpay_reconciler")...)
package runreport
