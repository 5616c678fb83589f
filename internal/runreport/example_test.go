package runreport_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/runreport"
)

// A run pushes its metrics when it ends. Here an httptest server stands in
// for the Pushgateway and prints what it receives.
func ExamplePush() {
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.Method, r.URL.Path)
		body, _ := io.ReadAll(r.Body)
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if !strings.HasPrefix(sc.Text(), "#") {
				fmt.Println(sc.Text())
			}
		}
	}))
	defer gw.Close()

	start := time.Date(2024, 5, 1, 3, 0, 0, 0, time.UTC)
	run := runreport.RunMetrics{
		Command:  "orders",
		Started:  start,
		Finished: start.Add(42 * time.Second),
		ExitCode: 0,
		Counts:   map[string]float64{"published": 12, "closed": 3},
	}
	err := runreport.Push(context.Background(), gw.URL, "wxpay_reconciler",
		map[string]string{"instance": "prod"}, run.Collectors("wxpay_reconciler")...)
	fmt.Println("error:", err)
	// Output:
	// PUT /metrics/job/wxpay_reconciler/instance/prod
	// wxpay_reconciler_last_run_duration_seconds{command="orders"} 42
	// wxpay_reconciler_last_run_exit_code{command="orders"} 0
	// wxpay_reconciler_last_run_items{command="orders",kind="closed"} 3
	// wxpay_reconciler_last_run_items{command="orders",kind="published"} 12
	// wxpay_reconciler_last_run_start_timestamp_seconds{command="orders"} 1.7145324e+09
	// wxpay_reconciler_last_run_success{command="orders"} 1
	// error: <nil>
}

// On a terminal the line is redrawn in place; Force and a hand-moved clock
// show here what a terminal would receive.
func ExampleProgress() {
	now := time.Date(2024, 5, 1, 3, 0, 0, 0, time.UTC)
	var out strings.Builder
	p := runreport.NewProgress(&out, runreport.ProgressOptions{
		Force: true,
		Now:   func() time.Time { return now },
	})
	t := p.Task("querying pending orders", 40, runreport.Items)
	for range 4 {
		now = now.Add(time.Second)
		t.Add(5)
	}
	t.Done()
	for _, line := range strings.SplitAfter(out.String(), "\x1b[K") {
		fmt.Printf("%q\n", line)
	}
	// Output:
	// "\rquerying pending orders  0/40  0%  elapsed 0s  ETA --\x1b[K"
	// "\rquerying pending orders  5/40  12%  5.0/s  elapsed 1s  ETA 7s\x1b[K"
	// "\rquerying pending orders  10/40  25%  5.0/s  elapsed 2s  ETA 6s\x1b[K"
	// "\rquerying pending orders  15/40  37%  5.0/s  elapsed 3s  ETA 5s\x1b[K"
	// "\rquerying pending orders  20/40  50%  5.0/s  elapsed 4s  ETA 4s\x1b[K"
	// "\rquerying pending orders  20/40  50%  5.0/s  elapsed 4s\x1b[K"
	// "\n"
}
