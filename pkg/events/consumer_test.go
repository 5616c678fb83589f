package events

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		wantErr bool
	}{
		{"2.15.2", false},
		{"2.10.0", false},
		{"2.10.0-RC.1", false},
		{"v2.11.1", false},
		{"3.0.0", false},
		{"2.9.10", true},
		{"2.9.25", true},
		{"1.4.1", true},
		{"", false},
		{"weird", false},
	}
	for _, tt := range tests {
		err := checkServerVersion(tt.version)
		if (err != nil) != tt.wantErr {
			t.Errorf("checkServerVersion(%q) = %v, want error %v", tt.version, err, tt.wantErr)
			continue
		}
		if err != nil && (!errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), tt.version) || !strings.Contains(err.Error(), "2.10")) {
			t.Errorf("checkServerVersion(%q) = %v, want ErrServerTooOld naming %s and 2.10", tt.version, err, tt.version)
		}
	}
}

// startOldNATS serves just enough of the NATS protocol to look like a
// server of the given version: INFO, then PONG for every PING.
func startOldNATS(t *testing.T, version string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "INFO {\"server_id\":\"OLD\",\"server_name\":\"old\",\"version\":%q,\"go\":\"go1.19\",\"host\":\"127.0.0.1\",\"port\":4222,\"headers\":true,\"max_payload\":1048576,\"proto\":1,\"jetstream\":true}\r\n", version)
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "PING") {
						io.WriteString(c, "PONG\r\n")
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

func TestRunRejectsOldServer(t *testing.T) {
	t.Parallel()
	url := startOldNATS(t, "2.9.10")
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connecting to the fake server: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	r, err := NewRouter(js, rdb, RouterConfig{Consumer: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	r.HandleFunc("wxpay.*.transaction.success", func(context.Context, Envelope) error { return nil })
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), "2.9.10") {
			t.Errorf("Run on NATS 2.9.10 = %v, want ErrServerTooOld naming 2.9.10", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run on NATS 2.9.10 did not return within 5s")
	}
	if err := r.Ready(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Ready after a failed Run = %v, want ErrNotRunning", err)
	}
}
