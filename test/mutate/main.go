// Command mutate checks that the test suite defends the guarantees the
// project makes: it applies each mutation listed in test/mutations/*.txt
// (a small source change that breaks one guarantee) to a copy of the
// repository, runs the tests named for it, and fails if any mutation
// survives, that is if those tests still pass with the guarantee broken.
//
//	go run ./test/mutate              # every mutation, two at a time
//	go run ./test/mutate -only 'dead letter'
//	go run ./test/mutate -list        # print the mutations, run nothing
//	go run ./test/mutate -cache DIR   # skip what was killed before from unchanged sources
//
// A mutation whose snippet no longer occurs exactly once, or whose mutated
// tree does not compile, is reported as invalid and fails the run too: a
// refactoring moves the mutation along with the code it breaks.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("mutate", flag.ContinueOnError)
	root := fs.String("root", ".", "repository root")
	dir := fs.String("mutations", "test/mutations", "folder of mutation lists (*.txt), relative to -root")
	jobs := fs.Int("j", runtime.NumCPU(), "mutations run at once")
	only := fs.String("only", "", "run only mutations whose name matches this regular expression")
	list := fs.Bool("list", false, "print the mutations and exit")
	timeout := fs.Duration("timeout", 4*time.Minute, "longest run of one mutation's tests")
	cacheDir := fs.String("cache", "", "remember killed mutations in this directory and skip them while nothing their tests are built from changed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	muts, err := loadDir(filepath.Join(*root, *dir))
	if err != nil {
		return err
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return fmt.Errorf("-only: %w", err)
		}
		var kept []Mutation
		for _, m := range muts {
			if re.MatchString(m.Name) {
				kept = append(kept, m)
			}
		}
		muts = kept
	}
	if len(muts) == 0 {
		return errors.New("no mutations to run")
	}
	if *list {
		for _, m := range muts {
			fmt.Fprintf(out, "%s\t%s\t%s\n", m.Where(), m.File, m.Name)
		}
		return nil
	}
	// Every snippet is checked against the real tree before anything runs,
	// so a stale list fails fast.
	var invalid []string
	for _, m := range muts {
		src, err := os.ReadFile(filepath.Join(*root, m.File))
		if err == nil {
			_, err = m.Apply(src)
		}
		if err != nil {
			invalid = append(invalid, fmt.Sprintf("%s: %v", m.Where(), err))
		}
	}
	if len(invalid) > 0 {
		return fmt.Errorf("%d mutation(s) do not apply to this tree:\n  %s", len(invalid), strings.Join(invalid, "\n  "))
	}
	if *jobs < 1 {
		*jobs = 1
	}
	files, err := treeFiles(*root)
	if err != nil {
		return err
	}
	start := time.Now()
	keys := make([]string, len(muts))
	if *cacheDir != "" {
		if keys, err = cacheKeys(*root, muts, files, *jobs); err != nil {
			return fmt.Errorf("-cache: %w", err)
		}
	}
	fmt.Fprintf(out, "mutate: %d mutations, %d at a time\n", len(muts), *jobs)
	results := make([]result, len(muts))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var setupErr error
	for w := 0; w < *jobs; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work, err := os.MkdirTemp("", "wxpay-mutate-")
			if err == nil {
				defer os.RemoveAll(work)
				err = copyTree(*root, work, files)
			}
			if err != nil {
				mu.Lock()
				setupErr = errors.Join(setupErr, err)
				mu.Unlock()
				for range next { // drain: other workers may still run
				}
				return
			}
			for i := range next {
				var res result
				if cached(*cacheDir, keys[i]) {
					res = result{verdict: verdictKilled, cached: true}
				} else if res = runOne(work, muts[i], *timeout); res.verdict == verdictKilled {
					if err := remember(*cacheDir, keys[i]); err != nil {
						fmt.Fprintln(out, "mutate: cache:", err)
					}
				}
				mu.Lock()
				results[i] = res
				if res.cached {
					fmt.Fprintf(out, "%-8s cached  %s\n", res.verdict, muts[i].Name)
				} else {
					fmt.Fprintf(out, "%-8s %5.1fs  %s\n", res.verdict, res.took.Seconds(), muts[i].Name)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range muts {
		next <- i
	}
	close(next)
	wg.Wait()
	if setupErr != nil {
		return setupErr
	}
	var bad []string
	killed, fromCache := 0, 0
	for i, r := range results {
		if r.verdict == verdictKilled {
			killed++
			if r.cached {
				fromCache++
			}
			continue
		}
		bad = append(bad, fmt.Sprintf("%s %s (%s)\n    go test %s\n%s", r.verdict, muts[i].Name, muts[i].Where(),
			strings.Join(muts[i].Run, " "), indent(tail(r.output, 25), "    | ")))
	}
	fmt.Fprintf(out, "mutate: %d of %d mutations killed (%d known from the cache) in %s\n", killed, len(muts), fromCache, time.Since(start).Round(time.Second))
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%d mutation(s) not killed: the tests named for them pass with the guarantee broken, or the mutation is invalid:\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
	return nil
}

const (
	verdictKilled   = "killed"
	verdictSurvived = "SURVIVED"
	verdictInvalid  = "INVALID"
)

type result struct {
	verdict string
	cached  bool // killed in an earlier run from the same sources
	took    time.Duration
	output  string
}

// runOne applies m in the work tree, runs its tests and restores the file.
func runOne(work string, m Mutation, timeout time.Duration) result {
	start := time.Now()
	path := filepath.Join(work, m.File)
	orig, err := os.ReadFile(path)
	if err != nil {
		return result{verdict: verdictInvalid, output: err.Error()}
	}
	mutated, err := m.Apply(orig)
	if err != nil {
		return result{verdict: verdictInvalid, output: err.Error()}
	}
	if err := os.WriteFile(path, mutated, 0o644); err != nil {
		return result{verdict: verdictInvalid, output: err.Error()}
	}
	defer os.WriteFile(path, orig, 0o644)

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// -trimpath lets the copies share the build cache; -vet=off because a
	// mutation is judged by the tests, not by vet.
	// -failfast: one failing test is enough; -ldflags -s -w: smaller,
	// faster links of the many test binaries.
	args := append([]string{"test", "-count=1", "-trimpath", "-vet=off", "-failfast", "-ldflags=-s -w", "-timeout", timeout.String()}, m.Run...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	res := result{took: time.Since(start), output: buf.String()}
	res.verdict = judge(err, res.output, ctx.Err() != nil)
	return res
}

// judge turns a go test run of a mutated tree into a verdict. A failing
// test (or one that hangs until the deadline) kills the mutation; a tree
// that does not build means the mutation itself is wrong; a run in which
// no test ran proves nothing.
func judge(err error, output string, timedOut bool) string {
	switch {
	case strings.Contains(output, "[build failed]") || strings.Contains(output, "[setup failed]"):
		return verdictInvalid
	case timedOut:
		return verdictKilled
	case err == nil && strings.Contains(output, "[no tests to run]"):
		return verdictInvalid
	case err == nil:
		return verdictSurvived
	case strings.Contains(output, "--- FAIL") || strings.Contains(output, "panic:") ||
		strings.Contains(output, "FAIL\t") || strings.Contains(output, "test timed out"):
		return verdictKilled
	default:
		return verdictInvalid
	}
}

// treeFiles lists the repository's files: tracked and untracked ones that
// are not ignored, or, outside a git checkout, every file but .git.
func treeFiles(root string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		var files []string
		for _, f := range strings.Split(string(out), "\x00") {
			if f == "" {
				continue
			}
			if _, err := os.Lstat(filepath.Join(root, f)); err == nil { // deleted but still in the index
				files = append(files, f)
			}
		}
		return files, nil
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	return files, err
}

func copyTree(root, dst string, files []string) error {
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return err
		}
		target := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if st, err := os.Stat(filepath.Join(root, f)); err == nil {
			mode = st.Mode().Perm()
		}
		if err := os.WriteFile(target, data, mode); err != nil {
			return err
		}
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
