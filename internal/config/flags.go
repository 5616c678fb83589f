package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxSecretFileBytes bounds what is read of a secret or key file; a larger
// file is certainly the wrong one.
const maxSecretFileBytes = 1 << 20

// String registers a string flag whose default is the environment variable
// env, or def when env is unset or empty. The usage text gets " (env ENV)".
// An empty env registers a flag without a variable.
func String(fs *flag.FlagSet, getenv func(string) string, name, env, def, usage string) *string {
	p := new(string)
	*p = lookup(getenv, env, def)
	fs.StringVar(p, name, *p, withEnv(usage, env))
	return p
}

// Duration registers a time.Duration flag (Go syntax: 90s, 5m, 2h) whose
// default is the environment variable env, or def when env is unset. A value
// of env that does not parse is reported by Err.
func Duration(fs *flag.FlagSet, getenv func(string) string, name, env string, def time.Duration, usage string) *time.Duration {
	return bind(fs, getenv, name, env, def, usage, "a duration such as 90s, 5m or 2h", time.ParseDuration, false)
}

// Int registers an int flag whose default is the environment variable env,
// or def when env is unset. A value of env that does not parse is reported
// by Err.
func Int(fs *flag.FlagSet, getenv func(string) string, name, env string, def int, usage string) *int {
	return bind(fs, getenv, name, env, def, usage, "an integer", func(s string) (int, error) {
		return strconv.Atoi(s)
	}, false)
}

// Float64 registers a float64 flag whose default is the environment variable
// env, or def when env is unset. A value of env that does not parse is
// reported by Err.
func Float64(fs *flag.FlagSet, getenv func(string) string, name, env string, def float64, usage string) *float64 {
	return bind(fs, getenv, name, env, def, usage, "a number", func(s string) (float64, error) {
		return strconv.ParseFloat(s, 64)
	}, false)
}

// Bool registers a bool flag (--name alone means true) whose default is the
// environment variable env (true/false, 1/0), or def when env is unset. A
// value of env that does not parse is reported by Err.
func Bool(fs *flag.FlagSet, getenv func(string) string, name, env string, def bool, usage string) *bool {
	return bind(fs, getenv, name, env, def, usage, "true or false", strconv.ParseBool, true)
}

// Err reports, after fs.Parse, every environment variable of a flag
// registered by this package whose value did not parse, unless that flag was
// given on the command line. Each error names the variable. The flags that
// RegisterMerchants registers are reported by MerchantFlags.Resolve instead.
func Err(fs *flag.FlagSet) error {
	set := setFlags(fs)
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := f.Value.(envChecker)
		if !ok || set[f.Name] || v.reportedElsewhere() {
			return
		}
		if err := v.envErr(); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// SplitList splits a comma-separated list, trims the elements and drops
// empty ones (NATS_URL, WORKER_SUBJECTS, WORKER_HANDLERS).
func SplitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// SecretFlag is a secret setting that is resolved after parsing, so that it
// never becomes a flag default. See Secret.
type SecretFlag struct {
	fs       *flag.FlagSet
	getenv   func(string) string
	name     string
	env      string
	fileName string
	fileEnv  string
	value    *string
	file     *string
}

// Secret registers a secret flag --name (never printed: its default is
// always empty) and, when fileName is not empty, a flag --fileName naming a
// file that holds the secret, with its default from fileEnv. Call Resolve
// after fs.Parse. Either env or fileEnv may be empty.
func Secret(fs *flag.FlagSet, getenv func(string) string, name, env, fileName, fileEnv, usage string) *SecretFlag {
	s := &SecretFlag{fs: fs, getenv: getenv, name: name, env: env, fileName: fileName, fileEnv: fileEnv, value: new(string)}
	var alt []string
	if env != "" {
		alt = append(alt, "env "+env)
	}
	if fileName != "" {
		alt = append(alt, "a file with --"+fileName)
	}
	hint := usage + " (other local users can see a command line"
	if len(alt) > 0 {
		hint += ": prefer " + strings.Join(alt, " or ")
	}
	hint += ")"
	fs.Var((*secretValue)(s.value), name, hint)
	if fileName != "" {
		plain := strings.ReplaceAll(usage, "`", "")
		s.file = String(fs, getenv, fileName, fileEnv, "", "`file` holding "+plain+" (one trailing newline is ignored)")
	} else {
		s.file = new(string)
	}
	return s
}

// Resolve returns the secret and says where it came from, looking in order
// at the flag, the file flag, the variable and the file variable; both the
// value and the file at the same level is an error. The source names the
// flag or variable and, for a file, its path ("WXPAY_APIV3_KEY_FILE
// /run/secrets/apiv3_key"); value and source are empty when nothing is set.
// Errors name the setting and the path, never the content.
func (s *SecretFlag) Resolve() (value, source string, err error) {
	set := setFlags(s.fs)
	flagValue, flagFile := set[s.name], s.fileName != "" && set[s.fileName]
	switch {
	case flagValue && flagFile:
		return "", "", fmt.Errorf("--%s and --%s are both set: use one", s.name, s.fileName)
	case flagValue:
		return *s.value, "--" + s.name, nil
	case flagFile:
		return s.readFile("--"+s.fileName, *s.file)
	}
	envValue := ""
	if s.env != "" && s.getenv != nil {
		envValue = s.getenv(s.env) // not trimmed: a secret is what it is
	}
	envFile := ""
	if s.fileEnv != "" {
		envFile = strings.TrimSpace(lookup(s.getenv, s.fileEnv, ""))
	}
	switch {
	case envValue != "" && envFile != "":
		return "", "", fmt.Errorf("%s and %s are both set: use one", s.env, s.fileEnv)
	case envValue != "":
		return envValue, s.env, nil
	case envFile != "":
		return s.readFile(s.fileEnv, envFile)
	}
	return "", "", nil
}

func (s *SecretFlag) readFile(setting, path string) (string, string, error) {
	source := setting + " " + path
	v, err := readSecretFile(path)
	if err != nil {
		return "", source, fmt.Errorf("%s: %w", source, err)
	}
	return v, source, nil
}

// readSecretFile reads a secret file and removes one trailing newline.
func readSecretFile(path string) (string, error) {
	b, err := readFile(path)
	if err != nil {
		return "", err
	}
	s := string(b)
	if strings.HasSuffix(s, "\n") {
		s = strings.TrimSuffix(s[:len(s)-1], "\r")
	}
	return s, nil
}

// readFile reads a key or secret file under a size limit. Its errors carry
// neither the path (callers name it) nor the content.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPath(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPath(err))
	}
	if len(b) > maxSecretFileBytes {
		return nil, fmt.Errorf("larger than %d bytes: is this the right file?", maxSecretFileBytes)
	}
	return b, nil
}

// unwrapPath drops the *fs.PathError wrapper, whose text repeats the path.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// secretValue is a flag.Value that never shows what it holds.
type secretValue string

func (v *secretValue) String() string     { return "" }
func (v *secretValue) Set(s string) error { *v = secretValue(s); return nil }

// envChecker is implemented by the flag values that bind registers.
type envChecker interface {
	envErr() error
	reportedElsewhere() bool
}

// envValue is a flag.Value of type T whose default may have come from an
// environment variable that did not parse (envError).
type envValue[T any] struct {
	p         *T
	parse     func(string) (T, error)
	isBool    bool
	envError  error
	elsewhere bool
}

func (v *envValue[T]) String() string {
	if v == nil || v.p == nil {
		var zero T
		return fmt.Sprint(zero)
	}
	return fmt.Sprint(*v.p)
}

func (v *envValue[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) {
			err = ne.Err // the flag package already quotes the value
		}
		return err
	}
	*v.p = x
	return nil
}

func (v *envValue[T]) IsBoolFlag() bool        { return v.isBool }
func (v *envValue[T]) envErr() error           { return v.envError }
func (v *envValue[T]) reportedElsewhere() bool { return v.elsewhere }

func bind[T any](fs *flag.FlagSet, getenv func(string) string, name, env string, def T, usage, kind string, parse func(string) (T, error), isBool bool) *T {
	return bindValue(fs, getenv, name, env, def, usage, kind, parse, isBool).p
}

func bindValue[T any](fs *flag.FlagSet, getenv func(string) string, name, env string, def T, usage, kind string, parse func(string) (T, error), isBool bool) *envValue[T] {
	v := &envValue[T]{p: new(T), parse: parse, isBool: isBool}
	*v.p = def
	if s := lookup(getenv, env, ""); s != "" {
		if x, err := parse(s); err != nil {
			v.envError = fmt.Errorf("%s=%q is not %s", env, s, kind)
		} else {
			*v.p = x
		}
	}
	fs.Var(v, name, withEnv(usage, env))
	return v
}

// lookup returns the trimmed value of env, or def when it is unset or
// empty. A nil getenv is an empty environment.
func lookup(getenv func(string) string, env, def string) string {
	if getenv == nil || env == "" {
		return def
	}
	if s := strings.TrimSpace(getenv(env)); s != "" {
		return s
	}
	return def
}

// isSetEnv reports whether env has a non-blank value.
func isSetEnv(getenv func(string) string, env string) bool {
	return lookup(getenv, env, "") != ""
}

func withEnv(usage, env string) string {
	if env == "" {
		return usage
	}
	return usage + " (env " + env + ")"
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
