package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

func TestCorpusRoundTripAndVerify(t *testing.T) {
	dir := t.TempDir()
	k, err := makeKeys(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := generate(k, 5, 2, time.Now(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Every note verifies and decrypts as the ingress does, with its own
	// transaction (hence its own dedupe_key).
	client, err := wxpay.NewClient(wxpay.Config{MchID: k.MchID, APIv3Key: k.APIv3Key, PublicKey: &k.Platform.PublicKey,
		PublicKeyID: k.PublicKeyID, BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, n := range c.Notes {
		p, err := client.ParseNotification(context.Background(), n.header(), n.Body)
		if err != nil {
			t.Fatalf("note %d: %v", i, err)
		}
		tx, err := p.Transaction()
		if err != nil {
			t.Fatal(err)
		}
		if seen[tx.TransactionID] || seen[tx.OutTradeNo] {
			t.Fatalf("note %d repeats a transaction: %+v", i, tx)
		}
		seen[tx.TransactionID], seen[tx.OutTradeNo] = true, true
	}
	file := filepath.Join(dir, "corpus")
	if err := writeCorpus(file, c); err != nil {
		t.Fatal(err)
	}
	back, err := readCorpus(file)
	if err != nil {
		t.Fatal(err)
	}
	if back.MchID != c.MchID || back.Timestamp != c.Timestamp || len(back.Notes) != len(c.Notes) {
		t.Fatalf("header differs: %+v", back)
	}
	for i := range c.Notes {
		a, b := c.Notes[i], back.Notes[i]
		if a.Timestamp != b.Timestamp || a.Nonce != b.Nonce || a.Signature != b.Signature || a.Serial != b.Serial || !bytes.Equal(a.Body, b.Body) {
			t.Fatalf("note %d differs", i)
		}
	}
	// The keys directory is reused, not replaced.
	k2, err := makeKeys(filepath.Join(dir, "keys"))
	if err != nil || k2.MchID != k.MchID || !k2.Platform.Equal(k.Platform) {
		t.Fatalf("keys not reused: %v", err)
	}
}

func TestDueRampsUpThenHoldsTheRate(t *testing.T) {
	r := &runner{f: runFlags{rate: 1000, rampUp: 2 * time.Second}, nRamp: 1000, start: time.Unix(0, 0)}
	r.interval = float64(time.Second) / r.f.rate
	prev := r.due(0)
	for i := 1; i < 3000; i++ {
		d := r.due(i)
		if d.Before(prev) {
			t.Fatalf("due(%d) %v before due(%d) %v", i, d, i-1, prev)
		}
		prev = d
	}
	if got := r.due(1000).Sub(r.start); got != 2*time.Second {
		t.Fatalf("window opens at %v, want 2s", got)
	}
	if got := r.due(1999).Sub(r.due(1000)); got != 999*time.Millisecond {
		t.Fatalf("window pace %v, want 999ms", got)
	}
	// Half-way through the ramp-up the rate is half: a quarter of its requests are due.
	if got := r.due(250).Sub(r.start); got != time.Second {
		t.Fatalf("due(250) = %v, want 1s", got)
	}
}

func TestRawClient(t *testing.T) {
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		got.Add(1)
		if r.Header.Get("Wechatpay-Nonce") != "n1" || string(b) != `{"id":"x"}` || r.URL.Path != "/notify/1" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"code":"FAIL"}`))
			return
		}
		w.Write([]byte(`{"code":"SUCCESS","message":"成功"}`))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/notify/1")
	var dials atomic.Int64
	rc := newRawClient(u, 5*time.Second, &dials)
	if err := rc.warm(2); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		code, _, _, err := rc.post(&Note{Timestamp: "1", Nonce: "n1", Signature: "s", Serial: "k", Body: []byte(`{"id":"x"}`)})
		if err != nil || code != 200 {
			t.Fatalf("post: %d %v", code, err)
		}
	}
	code, body, _, err := rc.post(&Note{Timestamp: "1", Nonce: "other", Signature: "s", Serial: "k", Body: []byte(`{}`)})
	if err != nil || code != 400 || string(body) != `{"code":"FAIL"}` {
		t.Fatalf("bad post: %d %q %v", code, body, err)
	}
	if got.Load() != 4 || dials.Load() > 2 {
		t.Fatalf("%d posts over %d connections", got.Load(), dials.Load())
	}
}

// The floor server stores each distinct body once and answers as the
// ingress does; a repeated Wechatpay-Nonce is one message (its Nats-Msg-Id).
func TestFloorPublishesAndAnswers(t *testing.T) {
	nt := testenv.StartNATS(t)
	_, js := testenv.Connect(t, nt.URL)
	if _, err := events.EnsureStreams(t.Context(), js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async=%v", async), func(t *testing.T) { testFloor(t, js, async) })
	}
}

func testFloor(t *testing.T, js jetstream.JetStream, async bool) {
	srv := httptest.NewServer(floorHandler(js, nil, 2*time.Second, async))
	defer srv.Close()
	s, err := js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	post := func(nonce, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/notify/1230000109", bytes.NewBufferString(body))
		req.Header.Set("Wechatpay-Nonce", nonce)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Purging a stream keeps its Nats-Msg-Id window: each run its own ids.
	for _, n := range []string{"a", "b", "a"} {
		n = fmt.Sprint(n, async)
		if code, body := post(n, `{"id":"`+n+`"}`); code != 200 || body != `{"code":"SUCCESS","message":"成功"}` {
			t.Fatalf("nonce %s: %d %s", n, code, body)
		}
	}
	if code, body := post("c", ""); code != http.StatusBadRequest || body != "empty body\n" {
		t.Fatalf("empty body: %d %q, want 400 empty body", code, body)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2 (a, b)", info.State.Msgs)
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
}

// With a public key, the floor answers a notification signed by the
// platform 200 and one whose body or signature was changed 401.
func TestFloorVerifies(t *testing.T) {
	k, err := makeKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	note, err := buildNote(k, new(bytes.Buffer), "run", 1, 0, strconv.FormatInt(time.Now().Unix(), 10), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(floorHandler(nil, &k.Platform.PublicKey, 2*time.Second, false))
	defer srv.Close()
	post := func(h http.Header, body []byte) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/notify/"+k.MchID, bytes.NewReader(body))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(note.header(), note.Body); code != 200 {
		t.Fatalf("signed notification: %d, want 200", code)
	}
	changed := bytes.Replace(note.Body, []byte(`"TRANSACTION.SUCCESS"`), []byte(`"TRANSACTION.SUCCESs"`), 1)
	if code := post(note.header(), changed); code != http.StatusUnauthorized {
		t.Fatalf("changed body: %d, want 401", code)
	}
	h := note.header()
	h.Set("Wechatpay-Nonce", "other")
	if code := post(h, note.Body); code != http.StatusUnauthorized {
		t.Fatalf("changed nonce: %d, want 401", code)
	}
}
