package main

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-notify/wxpay-notify/internal/ingress"
	"github.com/wxpay-notify/wxpay-notify/pkg/bufpool"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// cmdFloor serves the least an ingress built on net/http and nats.go can do
// per notification: read the body and, with -nats, publish it to the WXPAY
// stream with a Nats-Msg-Id and wait for the acknowledgement, then answer
// 200. No signature check, no decryption, no envelope, no log line, no
// metric. Driven by 'run' like the real ingress (with the same corpus, the
// same rate and the same CPU accounting), it tells how much of the
// ingress's CPU per notification is the HTTP exchange and the publish
// themselves, which no change to the ingress's own code can remove.
//
// With -verify-key, the floor also checks each notification's signature
// (SHA256withRSA over timestamp, nonce and body with the platform's public
// key) and answers 401 when it fails: the one cost WeChat Pay forces on
// every ingress, done with crypto/rsa directly and nothing else, so that
// the ingress's own overhead can be told from the library's.
func cmdFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8089", "HTTP address")
	natsURL := fs.String("nats", "", "NATS server: publish each body to the WXPAY stream (created like the ingress does) and wait for the ack; empty: answer without publishing")
	pubTimeout := fs.Duration("publish-timeout", events.DefaultPublishTimeout, "longest wait for the JetStream acknowledgement")
	async := fs.Bool("async", false, "publish with nats.go's asynchronous API (PublishMsgAsync, then wait for the ack future) instead of PublishMsg")
	verifyKey := fs.String("verify-key", "", "PEM file of the platform's public key: verify each notification's signature (401 when it fails)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var pub *rsa.PublicKey
	if *verifyKey != "" {
		b, err := os.ReadFile(*verifyKey)
		if err != nil {
			return fmt.Errorf("-verify-key: %w", err)
		}
		if pub, err = wxpay.LoadPublicKey(b); err != nil {
			return fmt.Errorf("-verify-key %s: %w", *verifyKey, err)
		}
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // as cmd/ingress
	}
	var js jetstream.JetStream
	if *natsURL != "" {
		nc, err := nats.Connect(*natsURL, nats.Name("ingressload-floor"))
		if err != nil {
			return fmt.Errorf("NATS %s: %w", *natsURL, err)
		}
		defer nc.Drain()
		if js, err = jetstream.New(nc); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := events.EnsureStreams(ctx, js, events.StreamConfig{}); err != nil {
			return fmt.Errorf("streams on %s: %w", *natsURL, err)
		}
	}
	srv := &http.Server{
		Addr:    *listen,
		Handler: floorHandler(js, pub, *pubTimeout, *async),
		// The ingress's timeouts.
		ReadHeaderTimeout: 3 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "floor: serving on %s (publish: %v, verify: %v)\n", ln.Addr(), js != nil, pub != nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// floorSubject is a subject of the WXPAY stream.
var floorSubject = events.Subject("1230000109", wxpay.EventTransactionSuccess)

func floorHandler(js jetstream.JetStream, pub *rsa.PublicKey, pubTimeout time.Duration, async bool) http.Handler {
	bodies := bufpool.New(4<<10, ingress.DefaultMaxBodyBytes)
	ok := []byte(`{"code":"SUCCESS","message":"成功"}`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		buf := bodies.Get()
		defer bodies.Put(buf)
		switch n, err := buf.ReadFrom(io.LimitReader(r.Body, ingress.DefaultMaxBodyBytes)); {
		case err != nil:
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		case n == 0:
			http.Error(w, "empty body", http.StatusBadRequest)
			return
		}
		if pub != nil && !floorVerify(pub, r.Header, buf.Bytes()) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if js != nil {
			id := r.Header.Get("Wechatpay-Nonce")
			if id == "" {
				id = strconv.FormatInt(time.Now().UnixNano(), 10)
			}
			msg := &nats.Msg{
				Subject: floorSubject,
				Header:  nats.Header{jetstream.MsgIDHeader: []string{id}},
				Data:    buf.Bytes(),
			}
			var err error
			if async {
				err = publishAsync(js, msg, pubTimeout)
			} else {
				ctx, cancel := context.WithTimeout(r.Context(), pubTimeout)
				_, err = js.PublishMsg(ctx, msg)
				cancel()
			}
			if err != nil {
				http.Error(w, "publish: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(ok)
	})
}

func publishAsync(js jetstream.JetStream, msg *nats.Msg, timeout time.Duration) error {
	f, err := js.PublishMsgAsync(msg)
	if err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-t.C:
		return errors.New("no acknowledgement within " + timeout.String())
	}
}

// floorVerify checks a notification's Wechatpay-Signature: SHA256withRSA
// over "timestamp\nnonce\nbody\n".
func floorVerify(pub *rsa.PublicKey, h http.Header, body []byte) bool {
	sig, err := base64.StdEncoding.DecodeString(h.Get("Wechatpay-Signature"))
	if err != nil {
		return false
	}
	d := sha256.New()
	io.WriteString(d, h.Get("Wechatpay-Timestamp"))
	d.Write([]byte{'\n'})
	io.WriteString(d, h.Get("Wechatpay-Nonce"))
	d.Write([]byte{'\n'})
	d.Write(body)
	d.Write([]byte{'\n'})
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d.Sum(nil), sig) == nil
}
