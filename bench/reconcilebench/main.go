// Command reconcilebench measures the built reconciler end to end against
// the fake platform (pkg/wxpay/wxpaytest) in this process, an embedded
// NATS server and a real Redis:
//
//	go run ./bench/reconcilebench bills  [-rows 1000000] [-redis URL]
//	go run ./bench/reconcilebench orders [-orders 10000] [-rate 200] [-redis URL]
//
// bills: a trade bill of -rows rows (5% refunds) and a ledger holding every
// row; `reconciler bills` downloads, hash-checks, stores, parses and matches
// it. Reported: wall time, rows per second and the command's peak RSS.
//
// orders: -orders paid orders whose notifications never came, pending;
// `reconciler orders --rate R` finds and publishes them all. Reported: wall
// time against the floor set by the rate (orders / rate) and the command's
// CPU time, which shows whether the run waits on the rate or on itself.
//
// Everything stays on loopback. Redis keys use the prefix wxpaybench: and are
// deleted before and after.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

const prefix = "wxpaybench:"

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "bills" && os.Args[1] != "orders") {
		fmt.Fprintln(os.Stderr, "usage: reconcilebench bills|orders [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	rows := fs.Int("rows", 1_000_000, "bills: rows of the trade bill")
	orders := fs.Int("orders", 10_000, "orders: pending orders")
	rate := fs.Int("rate", 200, "orders: --rate of the reconciler")
	redisURL := fs.String("redis", envOr("WXPAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"), "a real Redis (loopback)")
	fs.Parse(os.Args[2:])
	if err := run(mode, *rows, *orders, *rate, *redisURL); err != nil {
		fmt.Fprintln(os.Stderr, "reconcilebench:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(mode string, rows, orders, rate int, redisURL string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "reconcilebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	bin := filepath.Join(dir, "reconciler")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/reconciler").CombinedOutput(); err != nil {
		return fmt.Errorf("building the reconciler (run from the repository root): %v\n%s", err, out)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("embedded NATS did not start")
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", redisURL, err)
	}
	clean := func() {
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Unlink(ctx, iter.Val())
		}
	}
	clean()
	defer clean()

	srv := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	env, err := merchantEnv(dir, srv, m)
	if err != nil {
		return err
	}
	env = append(env, "NATS_URL="+ns.ClientURL(), "REDIS_URL="+redisURL, "REDIS_KEY_PREFIX="+prefix,
		"RECONCILE_BILL_DIR="+filepath.Join(dir, "bills"), "LOG_LEVEL="+envOr("BENCH_LOG_LEVEL", "warn"))
	store := tracking.NewStore(rdb, tracking.Config{KeyPrefix: prefix})

	if mode == "bills" {
		return benchBills(ctx, srv, m, rdb, store, bin, env, rows)
	}
	return benchOrders(ctx, srv, m, store, bin, env, orders, rate)
}

func merchantEnv(dir string, srv *wxpaytest.Server, m *wxpaytest.Merchant) ([]string, error) {
	keyFile, pubFile := filepath.Join(dir, "apiclient_key.pem"), filepath.Join(dir, "pub_key.pem")
	if err := os.WriteFile(keyFile, wxpaytest.PrivateKeyPEM(m.PrivateKey), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(pubFile, wxpaytest.PublicKeyPEM(&srv.PublicKey().PrivateKey.PublicKey), 0o600); err != nil {
		return nil, err
	}
	return []string{"WXPAY_MCHID=" + m.MchID, "WXPAY_APIV3_KEY=" + m.APIv3Key, "WXPAY_PRIVATE_KEY_FILE=" + keyFile,
		"WXPAY_CERT_SERIAL_NO=" + m.CertSerialNo, "WXPAY_PUBLIC_KEY_FILE=" + pubFile, "WXPAY_PUBLIC_KEY_ID=" + srv.PublicKey().ID,
		"WXPAY_API_BASE=" + srv.URL(), "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GODEBUG=" + os.Getenv("BENCH_CHILD_GODEBUG")}, nil
}

// measure runs the command and returns its wall time, peak RSS and CPU
// time. The peak RSS is the child's own VmHWM, read from /proc while it
// runs: the maxrss that wait4 reports also counts this (large) process,
// whose image the child shares between fork and exec.
func measure(bin string, env []string, args ...string) (wall time.Duration, rssMB float64, cpu time.Duration, out []byte, err error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, nil, err
	}
	done := make(chan struct{})
	var hwmKB int64
	go func() {
		defer close(done)
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			raw, err := os.ReadFile(status)
			if err != nil {
				return // the process has exited
			}
			for _, line := range strings.Split(string(raw), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					hwmKB = max(hwmKB, kb)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	err = cmd.Wait()
	wall = time.Since(start)
	<-done
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return wall, float64(hwmKB) / 1024, cpu, buf.Bytes(), err
}

func benchBills(ctx context.Context, srv *wxpaytest.Server, m *wxpaytest.Merchant, rdb *redis.Client, store *tracking.Store, bin string, env []string, n int) error {
	y, mo, d := time.Now().In(wxpay.ChinaTime()).AddDate(0, 0, -1).Date()
	day := time.Date(y, mo, d, 0, 0, 0, 0, wxpay.ChinaTime())
	rows := make([]wxpaytest.BillRow, n)
	key := store.LedgerKey(m.MchID, day)
	pipe := rdb.Pipeline()
	for i := range rows {
		at := day.Add(time.Duration(int64(i)*86399/int64(n)) * time.Second)
		total := int64(100 + i%9900)
		tx := fmt.Sprintf("42%018d", i)
		no := "T" + strconv.Itoa(i)
		r := wxpaytest.BillRow{TradeTime: at, MchID: m.MchID, TransactionID: tx, OutTradeNo: no, OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
			Total: total, Fee: total * 6, Description: "bench", Attach: "a"}
		id, entry := tx, tracking.Entry{OutTradeNo: no, Amount: total, State: "SUCCESS", EventID: "evt-" + tx}
		if i%20 == 19 { // every twentieth row is a refund of the row before
			r.TradeState, r.RefundID, r.OutRefundNo, r.Refund = "REFUND", fmt.Sprintf("50%018d", i), "R"+strconv.Itoa(i), total/2
			r.TransactionID, r.OutTradeNo = rows[i-1].TransactionID, rows[i-1].OutTradeNo
			id, entry = r.RefundID, tracking.Entry{OutRefundNo: r.OutRefundNo, Amount: r.Refund, State: "SUCCESS", EventID: "evt-" + r.RefundID}
		}
		rows[i] = r
		v, _ := json.Marshal(entry)
		pipe.HSet(ctx, key, id, v)
		if i%10000 == 9999 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	// What the fake platform spends making the bill when it is applied for
	// (text, gzip, SHA-1): inside the end-to-end time, though WeChat
	// serves a file it made in advance.
	renderStart := time.Now()
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	if err := wxpaytest.WriteTradeBill(io.MultiWriter(zw, sha1.New()), wxpay.BillTypeAll, slices.Values(rows)); err != nil {
		return err
	}
	zw.Close()
	render := time.Since(renderStart)
	srv.Bills().SetOptions(wxpaytest.BillOptions{NoHistory: true})
	srv.Bills().AddTradeRows(rows...)
	rows = nil

	wall, rss, cpu, out, err := measure(bin, env, "bills", "--date", day.Format("2006-01-02"))
	fmt.Printf("%s", out)
	if err != nil {
		return fmt.Errorf("reconciler bills: %v", err)
	}
	fmt.Printf("bills: %d rows in %.2f s = %.0f rows/s end to end; peak RSS %.0f MB; CPU %.2f s; of the wall time, the fake platform's rendering of the bill took about %.2f s (without it: %.0f rows/s)\n",
		n, wall.Seconds(), float64(n)/wall.Seconds(), rss, cpu.Seconds(), render.Seconds(), float64(n)/(wall-render).Seconds())
	return nil
}

func benchOrders(ctx context.Context, srv *wxpaytest.Server, m *wxpaytest.Merchant, store *tracking.Store, bin string, env []string, n, rate int) error {
	created := time.Now().Add(-time.Hour)
	for i := range n {
		no := fmt.Sprintf("B%07d", i)
		if _, err := srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no, Total: 100}); err != nil {
			return err
		}
		if _, err := srv.Pay(no); err != nil {
			return err
		}
		if err := store.AddPending(ctx, tracking.Order, m.MchID, no, created); err != nil {
			return err
		}
	}
	wall, rss, cpu, out, err := measure(bin, env, "orders", "--rate", strconv.Itoa(rate))
	fmt.Printf("%s", out)
	if err != nil {
		return fmt.Errorf("reconciler orders: %v", err)
	}
	floor := time.Duration(float64(n) / float64(rate) * float64(time.Second))
	fmt.Printf("orders: %d pending at --rate %d in %.1f s; the rate alone needs %.1f s (%.3f×); CPU %.2f s (%.1f%% of the wall time); peak RSS %.0f MB\n",
		n, rate, wall.Seconds(), floor.Seconds(), wall.Seconds()/floor.Seconds(), cpu.Seconds(), 100*cpu.Seconds()/wall.Seconds(), rss)
	return nil
}
