package deploy

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads docker-compose.yml the way docker compose does, with
// .env.example as its .env and every profile active.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	r := root(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(r, "docker-compose.yml")},
		cli.WithWorkingDirectory(r),
		cli.WithEnvFiles(filepath.Join(r, ".env.example")),
		cli.WithDotEnv,
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return s
}

// appServices are the compose services that run this repository's image.
var appServices = []string{"ingress", "worker", "reconciler", "sandbox"}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	want := append([]string{"nats", "redis"}, appServices...)
	if got := p.ServiceNames(); !sameSet(got, want) {
		t.Errorf("services %v, want %v", got, want)
	}
	profiles := map[string][]string{"nats": nil, "redis": nil, "ingress": nil, "worker": nil, "reconciler": {"tools"}, "sandbox": {"sandbox"}}
	for name, want := range profiles {
		if got := service(t, p, name).Profiles; !slices.Equal(got, want) {
			t.Errorf("service %s: profiles %v, want %v (`docker compose up` starts exactly the services without a profile)", name, got, want)
		}
	}
	if img := service(t, p, "nats").Image; !strings.HasPrefix(img, "nats:") || natsTooOld(img) {
		t.Errorf("nats: image %q, want the official nats image, 2.10 or later", img)
	}
	if img := service(t, p, "redis").Image; !strings.HasPrefix(img, "redis:") {
		t.Errorf("redis: image %q, want the official redis image", img)
	}
	r := root(t)
	image := service(t, p, "ingress").Image
	for _, name := range appServices {
		s := service(t, p, name)
		if s.Image != image || image == "" {
			t.Errorf("%s: image %q, want the one image every command is in (%q)", name, s.Image, image)
		}
		if s.Build == nil || filepath.Clean(s.Build.Context) != r {
			t.Errorf("%s: build %+v, want the repository's Dockerfile (context .)", name, s.Build)
		} else if df := s.Build.Dockerfile; df != "" && df != "Dockerfile" {
			t.Errorf("%s: build.dockerfile %q, want Dockerfile", name, df)
		}
		if want := "/" + name; len(s.Entrypoint) != 1 || s.Entrypoint[0] != want {
			t.Errorf("%s: entrypoint %v, want [%s]", name, s.Entrypoint, want)
		}
		commandOf(t, s.Entrypoint)
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.ContainsFunc(s.SecurityOpt, func(o string) bool { return strings.HasPrefix(o, "no-new-privileges") }) {
			t.Errorf("%s: read_only %v, cap_drop %v, security_opt %v: want a read-only root, no capabilities, no-new-privileges", name, s.ReadOnly, s.CapDrop, s.SecurityOpt)
		}
	}
	rec := service(t, p, "reconciler")
	if subs := help(t, "reconciler").subcommands; len(rec.Command) != 1 || !slices.Contains(subs, rec.Command[0]) || rec.Command[0] != "orders" {
		t.Errorf("reconciler: command %v, want [orders] (`docker compose run --rm reconciler orders|bills|all`; the reconciler knows %v)", rec.Command, subs)
	}
	for _, name := range []string{"reconciler", "sandbox"} {
		if s := service(t, p, name); s.Restart != "" && s.Restart != "no" {
			t.Errorf("%s: restart %q: a run that ends must not be started again", name, s.Restart)
		}
	}
	for _, name := range []string{"nats", "redis", "ingress", "worker"} {
		if s := service(t, p, name); s.Restart != "unless-stopped" && s.Restart != "always" {
			t.Errorf("%s: restart %q, want unless-stopped: a crash or a start before its dependencies must not leave it down", name, s.Restart)
		}
	}
}

// natsTooOld reports an image tag before 2.10 (worker consumers filter on
// several subjects, which NATS 2.10 introduced).
func natsTooOld(image string) bool {
	m := regexp.MustCompile(`^nats:(\d+)\.(\d+)`).FindStringSubmatch(image)
	if m == nil {
		return true // latest or no version: not pinned
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major < 2 || major == 2 && minor < 10
}

func TestComposeStorage(t *testing.T) {
	p := loadCompose(t)
	nats := service(t, p, "nats")
	if cmd := strings.Join(nats.Command, " "); !strings.Contains(" "+cmd+" ", " -js ") || !strings.Contains(cmd, "-sd /data") {
		t.Errorf("nats: command %q, want JetStream (-js) stored in /data (-sd /data)", cmd)
	}
	checkNamedVolume(t, p, nats, "/data")
	redis := service(t, p, "redis")
	cmd := " " + strings.Join(redis.Command, " ") + " "
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, " "+want+" ") {
			t.Errorf("redis: command %q lacks %q (the worker's dedupe needs it: README, Reliability)", cmd, want)
		}
	}
	checkNamedVolume(t, p, redis, "/data")
	rec := service(t, p, "reconciler")
	dir := rec.Environment["RECONCILE_BILL_DIR"]
	if dir == nil || *dir == "" {
		t.Fatal("reconciler: RECONCILE_BILL_DIR not set: bills would go to ./bills on a read-only root")
	}
	checkNamedVolume(t, p, rec, *dir)
}

func checkNamedVolume(t *testing.T, p *types.Project, s types.ServiceConfig, target string) {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target != target {
			continue
		}
		if v.Type != types.VolumeTypeVolume {
			t.Errorf("%s: %s is a %s, want a named volume", s.Name, target, v.Type)
		} else if _, ok := p.Volumes[v.Source]; !ok {
			t.Errorf("%s: volume %q at %s is not declared under volumes:", s.Name, v.Source, target)
		}
		if v.ReadOnly {
			t.Errorf("%s: %s is mounted read-only", s.Name, target)
		}
		return
	}
	t.Errorf("%s: nothing is mounted at %s: its data would be lost with the container", s.Name, target)
}

func TestComposeHealthAndOrder(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"nats", "redis"} {
		hc := service(t, p, name).HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] != "CMD" {
			t.Errorf("%s: healthcheck %+v, want a CMD health check", name, hc)
		}
	}
	// The image has no shell: the long-running commands check themselves
	// with their health subcommand; the one-offs have nothing to check.
	for _, name := range []string{"ingress", "worker"} {
		checkSelfHealth(t, service(t, p, name))
	}
	for _, name := range []string{"reconciler", "sandbox"} {
		if hc := service(t, p, name).HealthCheck; hc != nil && !hc.Disable {
			t.Errorf("%s: healthcheck %v on a one-off that serves no admin listener", name, hc.Test)
		}
	}
	deps := map[string][]string{"ingress": {"nats"}, "worker": {"nats", "redis"}, "reconciler": {"nats", "redis"}, "sandbox": nil}
	for name, want := range deps {
		s := service(t, p, name)
		if got := sortedKeys(s.DependsOn); !sameSet(got, want) {
			t.Errorf("%s: depends_on %v, want %v", name, got, want)
		}
		for dep, d := range s.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s: depends_on %s with condition %q, want service_healthy", name, dep, d.Condition)
			}
		}
	}
}

// checkSelfHealth checks that s's health check is its own command's health
// subcommand, run without a shell, and runs it, with the service's
// environment, against an admin listener that is ready and then not: exit 0
// and exit 1.
func checkSelfHealth(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	hc := s.HealthCheck
	if hc == nil || hc.Disable {
		t.Errorf("%s: no healthcheck; want [\"CMD\", %q, \"health\"]", s.Name, firstOf(s.Entrypoint))
		return
	}
	if len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != firstOf(s.Entrypoint) || hc.Test[2] != "health" {
		t.Errorf("%s: healthcheck %q, want [\"CMD\", %q, \"health\", ...] (no shell in the image)", s.Name, hc.Test, firstOf(s.Entrypoint))
		return
	}
	// The subcommand waits up to 3 s for the answer.
	if hc.Timeout == nil || time.Duration(*hc.Timeout) <= 3*time.Second {
		t.Errorf("%s: healthcheck timeout %v, want more than the subcommand's own 3s", s.Name, hc.Timeout)
	}
	if hc.StartPeriod == nil || time.Duration(*hc.StartPeriod) < 10*time.Second {
		t.Errorf("%s: healthcheck start_period %v, want at least 10s (streams and consumer are created at start)", s.Name, hc.StartPeriod)
	}
	bin, ok := binary(t, commandOf(t, s.Entrypoint))
	if !ok {
		return
	}
	var ready atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready.Load() {
			http.Error(w, "not ready: test", http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, want := range []int{1, 0} {
		ready.Store(want == 0)
		cmd := exec.Command(bin, hc.Test[2:]...)
		// The service's settings, with its admin port moved to the test's
		// listener: ":9090" becomes ":<port>", reached on loopback.
		for k, v := range s.Environment {
			if v != nil && k != "ADMIN_ADDR" {
				cmd.Env = append(cmd.Env, k+"="+*v)
			}
		}
		admin := s.Environment["ADMIN_ADDR"]
		if admin == nil {
			t.Errorf("%s: ADMIN_ADDR is not set; the health check would ask the default", s.Name)
			return
		}
		host, _, err := net.SplitHostPort(*admin)
		if err != nil {
			t.Errorf("%s: ADMIN_ADDR=%q: %v", s.Name, *admin, err)
			return
		}
		cmd.Env = append(cmd.Env, "ADMIN_ADDR="+net.JoinHostPort(host, port))
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: running %q: %v", s.Name, hc.Test[1:], err)
		}
		if code != want {
			t.Errorf("%s: health check %q with /readyz ready=%v exited %d, want %d\n%s", s.Name, hc.Test[1:], want == 0, code, want, out)
		}
	}
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// TestComposeSettings checks every variable each service sets against its
// command's --help, the secrets, the addresses and the published ports.
func TestComposeSettings(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"ingress", "worker", "reconciler"} {
		s := service(t, p, name)
		cmd := commandOf(t, s.Entrypoint)
		env := map[string]string{}
		for k, v := range s.Environment {
			if v == nil {
				t.Errorf("%s: %s has no value (it would be taken from the shell running compose)", name, k)
				continue
			}
			env[k] = *v
		}
		checkEnvKnown(t, "docker-compose.yml service "+name, cmd, sortedKeys(env))
		for v := range help(t, cmd).required {
			if env[v] == "" {
				t.Errorf("%s: %s is required and empty", name, v)
			}
		}
		secrets := map[string]bool{}
		for _, sec := range s.Secrets {
			target := sec.Target
			if target == "" {
				target = sec.Source
			}
			if !strings.HasPrefix(target, "/") {
				target = "/run/secrets/" + target
			}
			secrets[target] = true
			if _, ok := p.Secrets[sec.Source]; !ok {
				t.Errorf("%s: secret %q is not declared under secrets:", name, sec.Source)
			}
		}
		for k, v := range env {
			if strings.HasSuffix(k, "_FILE") && !secrets[v] {
				t.Errorf("%s: %s=%s is not a secret mounted in the service (it has %v)", name, k, v, sortedKeys(secrets))
			}
		}
		if u := env["NATS_URL"]; !pointsAt(u, "nats", "4222") {
			t.Errorf("%s: NATS_URL %q, want the nats service (nats://nats:4222)", name, u)
		}
		if u, ok := env["REDIS_URL"]; ok && !pointsAt(u, "redis", "6379") {
			t.Errorf("%s: REDIS_URL %q, want the redis service", name, u)
		}
		if name != "ingress" && env["REDIS_URL"] == "" {
			t.Errorf("%s: REDIS_URL not set: the default 127.0.0.1 is the container itself", name)
		}
		if name == "reconciler" {
			continue
		}
		admin := port(t, name+" ADMIN_ADDR", env["ADMIN_ADDR"])
		published := map[uint32]types.ServicePortConfig{}
		for _, pc := range s.Ports {
			published[pc.Target] = pc
		}
		if pc, ok := published[admin]; !ok || pc.HostIP != "127.0.0.1" {
			t.Errorf("%s: the admin port %d is published as %+v, want it on 127.0.0.1 only (/metrics is never public)", name, admin, pc)
		}
		if name == "ingress" {
			listen := port(t, "ingress LISTEN_ADDR", env["LISTEN_ADDR"])
			if _, ok := published[listen]; !ok || listen == admin {
				t.Errorf("ingress: the public listener's port %d (LISTEN_ADDR) is not published (ports %+v)", listen, s.Ports)
			}
		}
	}
	for name, sec := range p.Secrets {
		rel, err := filepath.Rel(filepath.Join(root(t), "secrets"), sec.File)
		if sec.File == "" || err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("secret %s: file %q, want a file under ./secrets", name, sec.File)
		}
	}
}

// TestComposeSandboxFlags checks the sandbox's arguments against its --help.
func TestComposeSandboxFlags(t *testing.T) {
	p := loadCompose(t)
	s := service(t, p, "sandbox")
	if len(s.Environment) > 0 || len(s.Secrets) > 0 {
		t.Errorf("sandbox: environment %v, secrets %v: it needs no settings and no WeChat account", sortedKeys(s.Environment), s.Secrets)
	}
	c := help(t, "sandbox")
	if c == nil {
		t.Skip("cmd/sandbox does not exist yet: its flags cannot be checked")
	}
	for _, a := range s.Command {
		if name, ok := strings.CutPrefix(a, "-"); ok {
			name = strings.TrimPrefix(name, "-")
			name, _, _ = strings.Cut(name, "=")
			if !c.flags[name] {
				t.Errorf("sandbox: flag %s is not one sandbox --help lists (%v)", a, sortedKeys(c.flags))
			}
		}
	}
}

// TestEnvExample checks that .env.example documents exactly the variables
// docker-compose.yml takes from .env, each with a comment, and no secret.
func TestEnvExample(t *testing.T) {
	r := root(t)
	compose, err := os.ReadFile(filepath.Join(r, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(string(compose), -1) {
		used[m[1]] = true
	}
	f, err := os.Open(filepath.Join(r, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	documented := map[string]bool{}
	commented := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			commented = false
		case strings.HasPrefix(line, "#"):
			commented = true
		default:
			name, _, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf(".env.example:%d: %q is not NAME=value", n, line)
				continue
			}
			if !commented {
				t.Errorf(".env.example:%d: %s has no comment above it saying what it is", n, name)
			}
			documented[name] = true
			commented = false
		}
	}
	for v := range used {
		if !documented[v] {
			t.Errorf("docker-compose.yml uses ${%s}, which .env.example does not document", v)
		}
	}
	for v := range documented {
		if !used[v] {
			t.Errorf(".env.example documents %s, which docker-compose.yml does not use", v)
		}
		for _, c := range knownCommands {
			if help(t, c).secretEnv[v] {
				t.Errorf(".env.example holds the secret %s: secrets are files under ./secrets", v)
			}
		}
	}
}

// pointsAt reports whether every URL in the comma-separated list u has
// host and port.
func pointsAt(u, host, port string) bool {
	if u == "" {
		return false
	}
	for _, e := range strings.Split(u, ",") {
		p, err := url.Parse(strings.TrimSpace(e))
		if err != nil || p.Hostname() != host || p.Port() != port {
			return false
		}
	}
	return true
}

// port returns the port of a listen address such as ":9090".
func port(t testing.TB, what, addr string) uint32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, perr := strconv.ParseUint(p, 10, 16)
	if err != nil || perr != nil || n == 0 {
		t.Fatalf("%s=%q: want host:port with a fixed port", what, addr)
	}
	return uint32(n)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
