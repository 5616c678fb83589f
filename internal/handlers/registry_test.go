package handlers

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

func TestChain(t *testing.T) {
	t.Parallel()
	if got, want := Names(), []string{"log", "tracker", "forward"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Names: got %v, want %v", got, want)
	}
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	defer rdb.Close()
	secretReads := 0
	deps := Deps{
		Logger:  zerolog.Nop(),
		Redis:   rdb,
		Forward: ForwardConfig{URL: "https://receiver.example/hook"},
		ForwardSecret: func() ([]byte, error) {
			secretReads++
			return []byte("a-forward-secret-of-32-bytes...."), nil
		},
	}

	chain, err := Chain([]string{"tracker", "log"}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 {
		t.Fatalf("got %d handlers, want 2", len(chain))
	}
	if _, ok := chain[0].(*Tracker); !ok {
		t.Fatalf("first handler is %T, want the tracker (the order given)", chain[0])
	}
	if secretReads != 0 {
		t.Fatal("the forward secret was read without the forward handler")
	}

	chain, err = Chain([]string{"forward"}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := chain[0].(*Forward); !ok || string(f.cfg.Secret) != "a-forward-secret-of-32-bytes...." || secretReads != 1 {
		t.Fatalf("forward: got %T with the secret read %d times", chain[0], secretReads)
	}

	deps.ForwardSecret = func() ([]byte, error) { return nil, errors.New("FORWARD_SECRET_FILE /x: no such file") }
	if _, err := Chain([]string{"log", "forward"}, deps); err == nil || !strings.Contains(err.Error(), "FORWARD_SECRET_FILE") {
		t.Fatalf("got %v, want the secret's error", err)
	}

	for _, check := range []func([]string) error{
		CheckNames,
		func(names []string) error { _, err := Chain(names, deps); return err },
	} {
		err := check([]string{"log", "email"})
		if !errors.Is(err, ErrUnknownHandler) || !strings.Contains(err.Error(), `"email" (want log, tracker or forward)`) {
			t.Fatalf("got %v, want ErrUnknownHandler naming email and the handlers there are", err)
		}
	}
	if err := CheckNames([]string{"log", "tracker", "forward"}); err != nil {
		t.Fatal(err)
	}
}
