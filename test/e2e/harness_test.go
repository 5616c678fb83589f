// Package e2e runs the built commands as real processes (a three-node
// NATS cluster, Redis, two ingresses, two workers) against the fake
// WeChat Pay platform, injects crashes while payments flow, and checks
// the business side's record.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
)

// proc is one process of the system under test: it can be started,
// killed with SIGKILL and started again with the same command line and
// environment (so on the same ports and the same store).
type proc struct {
	name  string
	bin   string
	args  []string
	env   []string
	ready func(ctx context.Context) error // nil: no readiness check
	logf  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// harness owns every process of one test and kills them at cleanup.
type harness struct {
	t     testing.TB
	dir   string
	mu    sync.Mutex
	procs []*proc
}

func newHarness(t testing.TB) *harness {
	h := &harness{t: t, dir: t.TempDir()}
	t.Cleanup(h.killAll)
	return h
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(t testing.TB) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v (is the go command on PATH?)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("go env GOMOD names no go.mod: run the test inside the module")
	}
	return filepath.Dir(gomod)
}

// buildBinaries builds nats-server, ingress, worker and reconciler from the checkout
// (nats-server from the module cache) into dir.
func buildBinaries(t testing.TB, dir string) {
	root := moduleRoot(t)
	for _, args := range [][]string{
		{"build", "-o", filepath.Join(dir, "nats-server"), "github.com/nats-io/nats-server/v2"},
		{"build", "-o", dir + string(filepath.Separator), "./cmd/ingress", "./cmd/worker", "./cmd/reconciler"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// add registers a process; start runs it.
func (h *harness) add(name, bin string, args []string, env map[string]string, ready func(context.Context) error) *proc {
	p := &proc{name: name, bin: bin, args: args, ready: ready, logf: filepath.Join(h.dir, name+".log")}
	p.env = append(p.env, "PATH="+os.Getenv("PATH"), "HOME="+h.dir)
	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p
}

// start runs p and waits until it is ready (at most timeout).
func (p *proc) start(ctx context.Context, timeout time.Duration) error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return fmt.Errorf("%s is already running", p.name)
	}
	logFile, err := os.OpenFile(p.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	fmt.Fprintf(logFile, "==== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		p.mu.Unlock()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		cmd.Wait()
		logFile.Close()
		close(done)
	}()
	return p.poll(ctx, timeout, done, "ready", 50*time.Millisecond)
}

// waitReady polls p's readiness check until it passes, for a process
// that was not restarted but must recover by itself (a client that
// reconnects after its server came back). It fails after timeout.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	return p.poll(ctx, timeout, nil, "ready again", 100*time.Millisecond)
}

// poll runs p's readiness check every interval until it passes; it fails
// after timeout, or when exited (nil: not watched) is closed first. what
// names the state in the error.
func (p *proc) poll(ctx context.Context, timeout time.Duration, exited <-chan struct{}, what string, interval time.Duration) error {
	if p.ready == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := p.ready(rctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited before it was %s; its log:\n%s", p.name, what, p.tail())
		case <-rctx.Done():
			return fmt.Errorf("%s not %s within %v (last check: %v); its log:\n%s", p.name, what, timeout, err, p.tail())
		case <-time.After(interval):
		}
	}
}

// kill sends SIGKILL, as a crash or an OOM kill does, and waits for the
// process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// running reports whether p was started and has not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// tail returns the end of p's log, for failure messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.logf)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stopAll kills every process of the test and fails it if one still
// runs afterwards: nothing the suite started outlives it.
func (h *harness) stopAll(t *testing.T) {
	t.Helper()
	h.killAll()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.procs {
		if p.running() {
			t.Errorf("%s still runs after it was killed", p.name)
		}
	}
}

// killAll kills every process still running; no process outlives the test.
func (h *harness) killAll() {
	h.mu.Lock()
	procs := append([]*proc(nil), h.procs...)
	h.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
}

// httpReady is a readiness check: GET url answers 200.
func httpReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, strings.TrimSpace(b.String()))
		}
		return nil
	}
}

// tcpReady is a readiness check: addr accepts connections.
func tcpReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// stack is the settings the commands of one fault test share: where the
// binaries are, the NATS cluster, Redis and the merchant.
type stack struct {
	h           *harness
	bin         string
	natsURL     string
	redisURL    string
	merchantEnv map[string]string
}

// env is the environment every long-running command gets, with its admin
// address.
func (s stack) env(admin string) map[string]string {
	return map[string]string{"NATS_URL": s.natsURL, "STREAM_REPLICAS": "3", "REDIS_URL": s.redisURL,
		"ADMIN_ADDR": admin, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
}

// startIngresses starts n ingresses for the merchant and returns them with
// the addresses they serve notifications on.
func (s stack) startIngresses(t *testing.T, ctx context.Context, n int) (ingresses []*proc, backends []string) {
	t.Helper()
	for i := range n {
		admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		env := s.env(admin)
		env["LISTEN_ADDR"] = listen
		for k, v := range s.merchantEnv {
			env[k] = v
		}
		ingresses = append(ingresses, s.h.add(fmt.Sprintf("ingress%d", i+1), filepath.Join(s.bin, "ingress"), nil, env,
			httpReady("http://"+admin+"/readyz")))
		backends = append(backends, listen)
	}
	startAll(t, ctx, ingresses, 60*time.Second)
	return ingresses, backends
}

// addWorker adds worker i+1 of consumer e2e, with the tracker and the
// forward handler posting to forwardURL/events/w<i+1>; set overrides or
// adds settings. It is started by the caller.
func (s stack) addWorker(t *testing.T, i int, forwardURL string, set map[string]string) *proc {
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := s.env(admin)
	env["WORKER_CONSUMER"] = "e2e"
	env["WORKER_HANDLERS"] = "tracker,forward"
	env["FORWARD_URL"] = fmt.Sprintf("%s/events/w%d", forwardURL, i+1)
	env["FORWARD_SECRET"] = forwardSecret
	for k, v := range set {
		env[k] = v
	}
	return s.h.add(fmt.Sprintf("worker%d", i+1), filepath.Join(s.bin, "worker"), nil, env, httpReady("http://"+admin+"/readyz"))
}

// reconcilerEnv is the environment of a reconciler run.
func (s stack) reconcilerEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.h.dir, "NATS_URL=" + s.natsURL, "REDIS_URL=" + s.redisURL,
		"STREAM_REPLICAS=3", "LOG_FORMAT=json"}
	for k, v := range s.merchantEnv {
		env = append(env, k+"="+v)
	}
	return env
}
