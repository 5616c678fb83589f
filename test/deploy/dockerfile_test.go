package deploy

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, …
	args string
}

func dockerfile(t *testing.T) []instruction {
	t.Helper()
	f, err := os.Open(filepath.Join(root(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" && cur.Len() == 0 {
			continue
		}
		if more, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	var froms []string
	var build, final []instruction // RUN of the builder stage; the final stage
	args := map[string]string{}
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			froms = append(froms, in.args)
			final = nil
		case in.cmd == "ARG" && len(froms) == 0:
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			build = append(build, in)
		}
		if len(froms) > 0 {
			final = append(final, in)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("Dockerfile: stages %v, want a builder and a final stage", froms)
	}
	builder := regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(froms[0], func(s string) string {
		return args[strings.Trim(s, "${}")]
	})
	if !regexp.MustCompile(`^golang:` + regexp.QuoteMeta(goMinor(t)) + `(\.\d+)?(-\S+)? AS build$`).MatchString(builder) {
		t.Errorf("Dockerfile: builder %q, want golang:%s (go.mod's Go) AS build", builder, goMinor(t))
	}
	if len(build) != 1 {
		t.Fatalf("Dockerfile: %d RUN go build, want one", len(build))
	}
	b := build[0].args
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w -X main.version=${VERSION}"`, "./cmd/...", "--mount=type=cache,target=/go/pkg/mod"} {
		if !strings.Contains(b, want) {
			t.Errorf("Dockerfile: the go build lacks %q:\n%s", want, b)
		}
	}
	last := froms[len(froms)-1]
	if !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot$`).MatchString(last) {
		t.Errorf("Dockerfile: final image %q, want gcr.io/distroless/static…:nonroot", last)
	}
	var user, entry string
	copied := false
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		case "COPY":
			if strings.Contains(in.args, "--from=build") && strings.Contains(in.args, "/out/bin/") {
				copied = true
			}
		case "HEALTHCHECK":
			t.Error("Dockerfile: HEALTHCHECK cannot run in a distroless image (no shell, no HTTP client)")
		case "RUN":
			t.Errorf("Dockerfile: RUN %s in the final stage: distroless has no shell", in.args)
		}
	}
	if user != "65532:65532" && user != "nonroot:nonroot" && user != "nonroot" {
		t.Errorf("Dockerfile: USER %q, want the nonroot user (65532)", user)
	}
	if !copied {
		t.Error("Dockerfile: the final stage does not copy the built commands (/out/bin/)")
	}
	if !strings.HasPrefix(entry, `["/`) {
		t.Errorf("Dockerfile: ENTRYPOINT %s, want the exec form (no shell to run the other)", entry)
	}
	// -X main.version works only where main declares it.
	r := root(t)
	dirs, _ := filepath.Glob(filepath.Join(r, "cmd", "*", "main.go"))
	if len(dirs) < 3 {
		t.Fatalf("found %d commands under cmd/", len(dirs))
	}
	for _, f := range dirs {
		if !declaresVersion(t, f) {
			t.Errorf("%s: no package-level string variable version for -X main.version", f)
		}
	}
}

func declaresVersion(t *testing.T, file string) bool {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Errorf("%s: %v", file, err)
		return false
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				if n.Name == "version" {
					return true
				}
			}
		}
	}
	return false
}

// goMinor returns go.mod's go directive as major.minor ("1.26").
func goMinor(t *testing.T) string {
	data, err := os.ReadFile(filepath.Join(root(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns[strings.TrimSuffix(strings.TrimPrefix(l, "/"), "/")] = true
		}
	}
	for _, p := range []string{".git", ".env", "secrets"} {
		if !patterns[p] {
			t.Errorf(".dockerignore does not exclude %s: it would be sent to the builder", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd", "internal", "pkg", "*", "**", "*.go"} {
		if patterns[p] {
			t.Errorf(".dockerignore excludes %s, which the build needs", p)
		}
	}
}
