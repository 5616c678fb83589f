package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTypedFlagsPrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantStr    string
		wantDur    time.Duration
		wantInt    int
		wantFloat  float64
		wantBool   bool
		wantErrFor []string // variables Err must name
	}{
		{
			name:    "defaults",
			wantStr: "./bills", wantDur: 5 * time.Minute, wantInt: 20, wantFloat: 1.5, wantBool: false,
		},
		{
			name: "environment",
			env: map[string]string{
				"RECONCILE_BILL_DIR": "/data/bills", "RECONCILE_STALE_AFTER": "90s", "RECONCILE_QPS": "7",
				"TEST_FLOAT": "0.25", "TEST_BOOL": "true",
			},
			wantStr: "/data/bills", wantDur: 90 * time.Second, wantInt: 7, wantFloat: 0.25, wantBool: true,
		},
		{
			name:    "environment is trimmed",
			env:     map[string]string{"RECONCILE_STALE_AFTER": " 2m\n", "RECONCILE_QPS": " 3 "},
			wantStr: "./bills", wantDur: 2 * time.Minute, wantInt: 3, wantFloat: 1.5,
		},
		{
			name: "flag wins over environment",
			env: map[string]string{
				"RECONCILE_BILL_DIR": "/data/bills", "RECONCILE_STALE_AFTER": "90s", "RECONCILE_QPS": "7",
				"TEST_FLOAT": "0.25", "TEST_BOOL": "true",
			},
			args:    []string{"--bill-dir=/flag", "--stale-after=1h", "--rate=9", "--float=2", "--flag-bool=false"},
			wantStr: "/flag", wantDur: time.Hour, wantInt: 9, wantFloat: 2, wantBool: false,
		},
		{
			name:    "bool flag alone means true",
			args:    []string{"--flag-bool"},
			wantStr: "./bills", wantDur: 5 * time.Minute, wantInt: 20, wantFloat: 1.5, wantBool: true,
		},
		{
			name: "bad environment values are errors, not defaults",
			env: map[string]string{
				"RECONCILE_STALE_AFTER": "abc", "RECONCILE_QPS": "many", "TEST_FLOAT": "x", "TEST_BOOL": "maybe",
			},
			wantStr: "./bills", wantDur: 5 * time.Minute, wantInt: 20, wantFloat: 1.5,
			wantErrFor: []string{`RECONCILE_STALE_AFTER="abc"`, `RECONCILE_QPS="many"`, `TEST_FLOAT="x"`, `TEST_BOOL="maybe"`},
		},
		{
			name:    "a bad environment value is unused when the flag is given",
			env:     map[string]string{"RECONCILE_STALE_AFTER": "abc"},
			args:    []string{"--stale-after=10m"},
			wantStr: "./bills", wantDur: 10 * time.Minute, wantInt: 20, wantFloat: 1.5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := newFlagSet()
			getenv := env(tt.env)
			s := String(fs, getenv, "bill-dir", "RECONCILE_BILL_DIR", "./bills", "where bills are stored")
			d := Duration(fs, getenv, "stale-after", "RECONCILE_STALE_AFTER", 5*time.Minute, "query orders older than this")
			i := Int(fs, getenv, "rate", "RECONCILE_QPS", 20, "queries per second")
			f := Float64(fs, getenv, "float", "TEST_FLOAT", 1.5, "a number")
			b := Bool(fs, getenv, "flag-bool", "TEST_BOOL", false, "a switch")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if *s != tt.wantStr {
				t.Errorf("string: got %q, want %q", *s, tt.wantStr)
			}
			if *d != tt.wantDur {
				t.Errorf("duration: got %v, want %v", *d, tt.wantDur)
			}
			if *i != tt.wantInt {
				t.Errorf("int: got %d, want %d", *i, tt.wantInt)
			}
			if *f != tt.wantFloat {
				t.Errorf("float: got %v, want %v", *f, tt.wantFloat)
			}
			if *b != tt.wantBool {
				t.Errorf("bool: got %v, want %v", *b, tt.wantBool)
			}
			err := Err(fs)
			if len(tt.wantErrFor) == 0 {
				if err != nil {
					t.Fatalf("Err: got %v, want nil", err)
				}
				return
			}
			wantErrContains(t, err, tt.wantErrFor...)
		})
	}
}

func TestDurationEnvErrorMessage(t *testing.T) {
	t.Parallel()
	fs := newFlagSet()
	Duration(fs, env(map[string]string{"RECONCILE_STALE_AFTER": "300"}), "stale-after", "RECONCILE_STALE_AFTER", 5*time.Minute, "u")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	wantErrContains(t, Err(fs), "RECONCILE_STALE_AFTER", "duration such as 90s, 5m or 2h")
}

func TestBadFlagValueIsParseError(t *testing.T) {
	t.Parallel()
	fs := newFlagSet()
	Duration(fs, nil, "stale-after", "RECONCILE_STALE_AFTER", 5*time.Minute, "u")
	Int(fs, nil, "rate", "RECONCILE_QPS", 20, "u")
	for _, args := range [][]string{{"--stale-after=abc"}, {"--rate=x"}} {
		if err := fs.Parse(args); err == nil {
			t.Errorf("Parse(%q): got nil error, want one", args)
		}
	}
}

func TestUsageNamesVariableAndDefault(t *testing.T) {
	t.Parallel()
	fs := newFlagSet()
	getenv := env(map[string]string{"RECONCILE_EXPIRE_AFTER": "3h"})
	Duration(fs, getenv, "stale-after", "RECONCILE_STALE_AFTER", 5*time.Minute, "query orders older than this")
	Duration(fs, getenv, "expire-after", "RECONCILE_EXPIRE_AFTER", 2*time.Hour, "close unpaid orders older than this")
	Bool(fs, getenv, "dry-run", "", false, "change nothing")
	String(fs, getenv, "consumer", "WORKER_CONSUMER", "", "durable consumer name")
	help := helpText(t, fs)
	for _, want := range []string{
		"-stale-after", "(env RECONCILE_STALE_AFTER)", "(default 5m0s)",
		"(env RECONCILE_EXPIRE_AFTER)", "(default 3h0m0s)",
		"-dry-run\n", "(env WORKER_CONSUMER)",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help does not contain %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "default false") || strings.Contains(help, `default ""`) {
		t.Errorf("help shows zero defaults:\n%s", help)
	}
}

func TestSecretResolve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := writeFile(t, dir, "secret", testForwardToken+"\n")
	crlf := writeFile(t, dir, "secret-crlf", testForwardToken+"\r\n")
	twoNewlines := writeFile(t, dir, "secret-2nl", testForwardToken+"\n\n")
	other := writeFile(t, dir, "other", "from-the-file-flag")
	missing := dir + "/missing"
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		want       string
		wantSource string
		wantErr    []string
	}{
		{name: "nothing set"},
		{name: "variable", env: map[string]string{"FORWARD_SECRET": testForwardToken}, want: testForwardToken, wantSource: "FORWARD_SECRET"},
		{name: "variable is not trimmed", env: map[string]string{"FORWARD_SECRET": " x "}, want: " x ", wantSource: "FORWARD_SECRET"},
		{name: "file variable, one newline trimmed", env: map[string]string{"FORWARD_SECRET_FILE": file}, want: testForwardToken, wantSource: "FORWARD_SECRET_FILE " + file},
		{name: "file with CRLF", env: map[string]string{"FORWARD_SECRET_FILE": crlf}, want: testForwardToken, wantSource: "FORWARD_SECRET_FILE " + crlf},
		{name: "only one newline trimmed", env: map[string]string{"FORWARD_SECRET_FILE": twoNewlines}, want: testForwardToken + "\n", wantSource: "FORWARD_SECRET_FILE " + twoNewlines},
		{name: "flag wins over variables", env: map[string]string{"FORWARD_SECRET": "env", "FORWARD_SECRET_FILE": file}, args: []string{"--forward-secret=flag"}, want: "flag", wantSource: "--forward-secret"},
		{name: "file flag wins over variables", env: map[string]string{"FORWARD_SECRET": "env"}, args: []string{"--forward-secret-file", other}, want: "from-the-file-flag", wantSource: "--forward-secret-file " + other},
		{name: "both variables", env: map[string]string{"FORWARD_SECRET": "env", "FORWARD_SECRET_FILE": file}, wantErr: []string{"FORWARD_SECRET and FORWARD_SECRET_FILE are both set"}},
		{name: "both flags", args: []string{"--forward-secret=a", "--forward-secret-file", file}, wantErr: []string{"--forward-secret and --forward-secret-file are both set"}},
		{name: "missing file", env: map[string]string{"FORWARD_SECRET_FILE": missing}, wantErr: []string{"FORWARD_SECRET_FILE " + missing + ": cannot read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := newFlagSet()
			s := Secret(fs, env(tt.env), "forward-secret", "FORWARD_SECRET", "forward-secret-file", "FORWARD_SECRET_FILE", "the forwarding HMAC secret")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, source, err := s.Resolve()
			if tt.wantErr != nil {
				wantErrContains(t, err, tt.wantErr...)
				noSecrets(t, "error", err.Error())
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got != tt.want {
				t.Errorf("value: got %q, want %q", got, tt.want)
			}
			if source != tt.wantSource {
				t.Errorf("source: got %q, want %q", source, tt.wantSource)
			}
		})
	}
}

func TestSecretNotShownInHelp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	getenv := env(map[string]string{
		"FORWARD_SECRET":       testForwardToken,
		"WXPAY_APIV3_KEY":      testAPIv3Key,
		"WXPAY_APIV2_KEY":      testAPIv2Key,
		"REDIS_URL":            "redis://:s3cr3tpass@redis:6379/0",
		"NATS_URL":             "nats://natstoken@nats1:4222,nats://u:s3cr3tpass@nats2:4222",
		"WXPAY_MCHID":          testMchID,
		"WXPAY_APIV3_KEY_FILE": filepath.Join(dir, "k"),
	})
	fs := newFlagSet()
	RegisterCommon(fs, getenv)
	RegisterMerchants(fs, getenv)
	Secret(fs, getenv, "forward-secret", "FORWARD_SECRET", "forward-secret-file", "FORWARD_SECRET_FILE", "the forwarding secret")
	help := helpText(t, fs)
	noSecrets(t, "PrintDefaults", help)
	for _, want := range []string{"-apiv3-key key", "prefer env WXPAY_APIV3_KEY or a file with --apiv3-key-file", "-forward-secret", "-mchid", testMchID, "redis://:xxxxx@redis:6379/0"} {
		if !strings.Contains(help, want) {
			t.Errorf("help does not contain %q:\n%s", want, help)
		}
	}
	// fs.Usage is what --help runs.
	var buf strings.Builder
	fs.SetOutput(&buf)
	if err := fs.Parse([]string{"--help"}); err == nil {
		t.Fatal("Parse(--help): got nil error, want flag.ErrHelp")
	}
	noSecrets(t, "--help", buf.String())
	// Values given on the command line are not shown through flag.Value either.
	fs = newFlagSet()
	s := Secret(fs, nil, "forward-secret", "FORWARD_SECRET", "", "", "the forwarding secret")
	if err := fs.Parse([]string{"--forward-secret", testForwardToken}); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("forward-secret").Value.String(); got != "" {
		t.Errorf("flag.Value.String(): got %q, want empty", got)
	}
	if got, _, _ := s.Resolve(); got != testForwardToken {
		t.Errorf("Resolve: got %q, want the flag's value", got)
	}
}

func TestSplitList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{" a , b,,c ,", []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		if got := SplitList(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitList(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
