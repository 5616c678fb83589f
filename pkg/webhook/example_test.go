package webhook_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/webhook"
)

// A receiver checks the signature over the raw body before it parses
// anything, and answers 2xx only once the event is processed: the worker
// retries 408, 429 and 5xx answers and dead-letters other 4xx ones.
func Example() {
	secret := []byte("the FORWARD_SECRET of the worker")

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := webhook.Verify(secret, r.Header, body, 0, time.Now()); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		key := r.Header.Get(webhook.HeaderIdempotencyKey)
		fmt.Println("verified", key) // process the event once per key, then answer 2xx
		w.WriteHeader(http.StatusNoContent)
	})

	// What the worker's forward handler sends.
	body := []byte(`{"dedupe_key":"transaction:4200000001","event_type":"TRANSACTION.SUCCESS"}`)
	send := func(sig string) int {
		ts := time.Now().Unix()
		req := httptest.NewRequest(http.MethodPost, "/wxpay", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(webhook.HeaderIdempotencyKey, "transaction:4200000001")
		req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
		if sig == "" {
			sig = webhook.Sign(secret, ts, body)
		}
		req.Header.Set(webhook.HeaderSignature, sig)
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, req)
		return rec.Code
	}
	fmt.Println(send(""))
	fmt.Println(send("v1=forged"))
	// Output:
	// verified transaction:4200000001
	// 204
	// 401
}
