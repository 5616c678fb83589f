package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// root is the repository's root directory.
func root(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("the repository root %s has no go.mod: run the test from test/deploy", dir)
	}
	return dir
}

// command is what a command's --help says it knows.
type command struct {
	// env: every environment variable named in --help ("(env X)", "prefer
	// env X").
	env map[string]bool
	// secretEnv: the variables that hold a secret value ("prefer env X or a
	// file"): never to be written into a settings file.
	secretEnv map[string]bool
	// required: the variables --help marks "(required)".
	required map[string]bool
	// flags: every flag name, without dashes.
	flags map[string]bool
	// subcommands: the first word a command takes (reconciler orders).
	subcommands []string
}

var (
	envRe       = regexp.MustCompile(`\benv ([A-Z][A-Z0-9_]*)\b`)
	secretEnvRe = regexp.MustCompile(`prefer env ([A-Z][A-Z0-9_]*)`)
	requiredRe  = regexp.MustCompile(`\(required\) \(env ([A-Z][A-Z0-9_]*)\)`)
	flagRe      = regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`)
	usageSubRe  = regexp.MustCompile(`usage: \S+ ([a-z|]+) `)
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	helpMu    sync.Mutex
	helpCache = map[string]*command{}
)

// binary builds the repository's commands once per test run and returns
// the path of one; ok is false when the command does not exist.
func binary(t testing.TB, name string) (path string, ok bool) {
	t.Helper()
	r := root(t)
	if _, err := os.Stat(filepath.Join(r, "cmd", name, "main.go")); err != nil {
		return "", false
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "wxpay-deploy-test-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", binDir+string(filepath.Separator), "./cmd/...")
		cmd.Dir = r
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("building the commands (go build ./cmd/...): %v", buildErr)
	}
	return filepath.Join(binDir, name), true
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// TestMain removes the built commands.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// help runs `<name> [sub] --help` with an empty environment and parses it.
// For the reconciler, the settings of every subcommand are merged.
func help(t testing.TB, name string) *command {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if c, ok := helpCache[name]; ok {
		return c
	}
	bin, ok := binary(t, name)
	if !ok {
		return nil
	}
	c := &command{env: map[string]bool{}, secretEnv: map[string]bool{}, required: map[string]bool{}, flags: map[string]bool{}}
	top := runHelp(t, bin)
	if m := usageSubRe.FindStringSubmatch(top); m != nil {
		c.subcommands = strings.Split(m[1], "|")
	}
	texts := []string{top}
	for _, sub := range c.subcommands {
		texts = append(texts, runHelp(t, bin, sub))
	}
	for _, text := range texts {
		for _, m := range envRe.FindAllStringSubmatch(text, -1) {
			c.env[m[1]] = true
		}
		for _, m := range secretEnvRe.FindAllStringSubmatch(text, -1) {
			c.secretEnv[m[1]] = true
		}
		for _, m := range requiredRe.FindAllStringSubmatch(text, -1) {
			c.required[m[1]] = true
		}
		for _, m := range flagRe.FindAllStringSubmatch(text, -1) {
			c.flags[m[1]] = true
		}
	}
	if len(c.env) == 0 && len(c.flags) == 0 {
		t.Fatalf("%s --help lists no flag and no variable:\n%s", name, strings.Join(texts, "\n"))
	}
	helpCache[name] = c
	return c
}

func runHelp(t testing.TB, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--help")...)
	cmd.Env = []string{} // the defaults, not this machine's settings
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s --help: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// knownCommands are the commands whose settings the deployment files set.
var knownCommands = []string{"ingress", "worker", "reconciler"}

// commandOf returns the command an entrypoint runs ("/ingress" → ingress).
func commandOf(t testing.TB, entrypoint []string) string {
	t.Helper()
	if len(entrypoint) == 0 {
		t.Fatal("no entrypoint/command: the image runs the ingress by default; name the command explicitly")
	}
	name := strings.TrimPrefix(entrypoint[0], "/")
	if _, err := os.Stat(filepath.Join(root(t), "cmd", name)); err != nil && name != "sandbox" {
		t.Errorf("entrypoint %q runs no command of cmd/ (want /ingress, /worker, /reconciler or /sandbox)", entrypoint[0])
	}
	return name
}

// checkEnvKnown fails for every variable in names that cmd's --help does
// not list, and for every secret value set inline.
func checkEnvKnown(t testing.TB, where, cmdName string, names []string) {
	t.Helper()
	c := help(t, cmdName)
	if c == nil {
		t.Errorf("%s: command %s does not exist", where, cmdName)
		return
	}
	for _, n := range names {
		if !c.env[n] {
			t.Errorf("%s sets %s, which %s does not know (its --help lists %s)", where, n, cmdName, strings.Join(sortedKeys(c.env), " "))
		}
		if c.secretEnv[n] {
			t.Errorf("%s sets the secret %s as a value: mount it as a file and set %s_FILE", where, n, n)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestHelpListsSettings guards the derivation the other tests rely on: if
// --help stopped naming variables, every "known variable" check would
// fail for the wrong reason, or pass for one.
func TestHelpListsSettings(t *testing.T) {
	for _, name := range knownCommands {
		c := help(t, name)
		for _, v := range []string{"NATS_URL", "ADMIN_ADDR", "LOG_LEVEL"} {
			if !c.env[v] {
				t.Errorf("%s --help does not list %s", name, v)
			}
		}
	}
	if !help(t, "worker").required["WORKER_CONSUMER"] {
		t.Error("worker --help does not mark WORKER_CONSUMER (required)")
	}
	if !help(t, "ingress").secretEnv["WXPAY_APIV3_KEY"] {
		t.Error("ingress --help does not name WXPAY_APIV3_KEY as a secret (prefer env … or a file)")
	}
	if got := help(t, "reconciler").subcommands; !slices.Contains(got, "orders") || !slices.Contains(got, "bills") {
		t.Errorf("reconciler --help subcommands %v, want orders and bills", got)
	}
}
