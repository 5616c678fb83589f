package config

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// A URL's credentials never reach --help; the value itself is kept.
func TestURLFlagMasksCredentialsInHelp(t *testing.T) {
	const secret = "https://ops:hunter2-pw@recv.example/hooks/wxpay?token=s3cret-token#frag"
	env := map[string]string{"FORWARD_URL": secret}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var help bytes.Buffer
	fs.SetOutput(&help)
	u := URL(fs, func(k string) string { return env[k] }, "forward-url", "FORWARD_URL", "", "where to POST each event")
	fs.PrintDefaults()
	if out := help.String(); strings.Contains(out, "hunter2-pw") || strings.Contains(out, "s3cret-token") || strings.Contains(out, "ops:") ||
		!strings.Contains(out, "https://xxxxx@recv.example/hooks/wxpay?xxxxx") || !strings.Contains(out, "(env FORWARD_URL)") {
		t.Fatalf("--help shows %q, want the masked URL https://xxxxx@recv.example/hooks/wxpay?xxxxx", out)
	}
	if err := fs.Parse(nil); err != nil || *u != secret {
		t.Fatalf("value %q (%v), want the environment's URL as given", *u, err)
	}
	if err := fs.Parse([]string{"--forward-url", "http://other.example/x"}); err != nil || *u != "http://other.example/x" {
		t.Fatalf("value %q (%v), want the flag's URL", *u, err)
	}
	for in, want := range map[string]string{"": "", "http://h/p": "http://h/p", "http://h/p?": "http://h/p?xxxxx", "%zz": "(invalid URL)"} {
		if got := maskURL(in); got != want {
			t.Errorf("maskURL(%q) = %q, want %q", in, got, want)
		}
	}
}
