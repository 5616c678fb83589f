package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// The result cache: a mutation killed once stays killed as long as nothing
// its tests are built from has changed, so a run skips it. The key of a
// mutation covers the entry itself (file, snippet, replacement, go test
// arguments), the Go version, every file in the directories of the
// module's packages the test binaries import (go list -deps -test), and
// every file of the repository that is neither Go source nor Markdown
// (configuration, YAML, scripts: what a test may read besides its
// packages), except the CI script, which no test reads. Only kills are cached: a survivor or an invalid entry runs
// again every time.

// cacheKeys returns the key of each mutation, by index.
func cacheKeys(root string, muts []Mutation, files []string, jobs int) ([]string, error) {
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	hashes, err := fileHashes(root, files)
	if err != nil {
		return nil, err
	}
	// The part every key shares: files that are not Go source or
	// Markdown, and the mutation lists are left out (each entry is in its
	// own key).
	global := sha256.New()
	fmt.Fprintf(global, "mutate-cache-v1 %s\n", runtime.Version())
	for _, f := range files {
		slash := filepath.ToSlash(f)
		if strings.HasSuffix(f, ".go") || strings.HasSuffix(f, ".md") || strings.HasPrefix(slash, "test/mutations/") || strings.HasPrefix(slash, ".ci/") {
			continue
		}
		fmt.Fprintf(global, "%s %s\n", filepath.ToSlash(f), hashes[f])
	}
	globalSum := global.Sum(nil)

	// The module-local package directories each test package depends on.
	pkgs := map[string]bool{}
	for _, m := range muts {
		for _, p := range packagesOf(m.Run) {
			pkgs[p] = true
		}
	}
	byDir := map[string][]string{} // directory (relative) → its files
	for _, f := range files {
		d := filepath.Dir(f)
		byDir[d] = append(byDir[d], f)
	}
	depDigest := map[string][]byte{}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, max(jobs, 1))
	var wg sync.WaitGroup
	for p := range pkgs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			dirs, err := depDirs(root, absRoot, p)
			h := sha256.New()
			for _, d := range dirs {
				for _, f := range byDir[d] {
					fmt.Fprintf(h, "%s %s\n", filepath.ToSlash(f), hashes[f])
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			depDigest[p] = h.Sum(nil)
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	keys := make([]string, len(muts))
	for i, m := range muts {
		h := sha256.New()
		h.Write(globalSum)
		fmt.Fprintf(h, "%q\n%q\n%q\n%q\n", m.File, strings.Join(m.Run, "\x00"), m.Old, m.New)
		for _, p := range packagesOf(m.Run) {
			h.Write(depDigest[p])
		}
		keys[i] = hex.EncodeToString(h.Sum(nil))
	}
	return keys, nil
}

// packagesOf returns the package patterns of a mutation's go test
// arguments: those before the first flag.
func packagesOf(run []string) []string {
	var pkgs []string
	for _, a := range run {
		if strings.HasPrefix(a, "-") {
			break
		}
		pkgs = append(pkgs, a)
	}
	return pkgs
}

// depDirs lists, relative to the root and sorted, the directories of the
// module's packages that pkg's tests are built from.
func depDirs(root, absRoot, pkg string) ([]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps -test %s: %v", pkg, err)
	}
	seen := map[string]bool{}
	var dirs []string
	for _, line := range strings.Split(string(out), "\n") {
		rel, err := filepath.Rel(absRoot, strings.TrimSpace(line))
		if line == "" || err != nil || strings.HasPrefix(rel, "..") || seen[rel] {
			continue // outside the module: pinned by go.sum, which is in the global part
		}
		seen[rel] = true
		dirs = append(dirs, rel)
	}
	sort.Strings(dirs)
	return dirs, nil
}

func fileHashes(root string, files []string) (map[string]string, error) {
	hashes := make(map[string]string, len(files))
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(data)
		hashes[f] = hex.EncodeToString(sum[:])
	}
	return hashes, nil
}

// cached reports whether key was recorded as killed in dir.
func cached(dir, key string) bool {
	if dir == "" || key == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, key[:2], key))
	return err == nil
}

// remember records key as killed in dir.
func remember(dir, key string) error {
	if dir == "" || key == "" {
		return nil
	}
	p := filepath.Join(dir, key[:2], key)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, nil, 0o644)
}
