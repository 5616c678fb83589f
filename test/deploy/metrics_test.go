package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/internal/runreport"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// describer is a prometheus.Registerer that records the names of the
// metrics registered on it, without collecting them.
type describer struct{ names map[string]bool }

var fqNameRe = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqNameRe.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return nil
}

func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		d.Register(c)
	}
}

func (d *describer) Unregister(prometheus.Collector) bool { return true }

// noJetStream stands in for a JetStream context that constructors only
// keep: NewRouter and NewRetentionMonitor register their metrics without
// talking to NATS.
type noJetStream struct{ jetstream.JetStream }

// knownMetrics returns the names of the metrics the commands export, from
// the code that registers them: the ingress's, the worker's (router and
// retention monitor) and the reconciler's pushed run metrics.
func knownMetrics(t testing.TB) map[string]bool {
	t.Helper()
	d := &describer{names: map[string]bool{}}
	ingress.NewMetrics(d)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	if _, err := events.NewRouter(noJetStream{}, rdb, events.RouterConfig{Consumer: "c", Registerer: d}); err != nil {
		t.Fatalf("events.NewRouter: %v", err)
	}
	if _, err := events.NewRetentionMonitor(noJetStream{}, events.RetentionConfig{Consumers: []string{"c"}, Registerer: d}); err != nil {
		t.Fatalf("events.NewRetentionMonitor: %v", err)
	}
	// The reconciler pushes runreport's gauges under the namespace it
	// passes to Collectors.
	src, err := os.ReadFile(filepath.Join(root(t), "cmd", "reconciler", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\.Collectors\("([a-z_]+)"\)`).FindSubmatch(src)
	if m == nil {
		t.Fatal(`cmd/reconciler/main.go: no .Collectors("<namespace>") call: where do the reconciler's pushed metrics come from now?`)
	}
	rm := runreport.RunMetrics{Command: "orders", Started: time.Now(), ExitCode: 0, Counts: map[string]float64{"queried": 1}}
	d.MustRegister(rm.Collectors(string(m[1]))...)
	for _, want := range []string{"wxpay_ingress_requests_total", "wxpay_worker_dead_letters_total", "wxpay_worker_oldest_unacked_seconds"} {
		if !d.names[want] {
			t.Fatalf("the metrics found in the code lack %s (found %v): is the describer broken?", want, sortedKeys(d.names))
		}
	}
	return d.names
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }

// runIn runs a program in dir and returns its output.
func runIn(dir, prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
