// Package flow is the in-process end-to-end test of one merchant's day:
// the fake WeChat Pay platform (pkg/wxpay/wxpaytest) delivers v3 payments,
// a v3 refund and a v2 console refund, each more than once, over HTTP to
// the ingress (internal/ingress, served as cmd/ingress serves it); a
// router (pkg/events) runs the tracker (internal/handlers, built by name as
// cmd/worker builds it) and a counting business handler on what the
// ingress stored. The test checks what each part promises the next: every answer
// is the one WeChat expects, each payment and refund has its business
// effect exactly once, the pending sets keep only what is still unpaid, and
// the day's ledger holds exactly the final payments and refunds.
//
// It runs on embedded NATS and miniredis, or on the real services named by
// WXPAY_TEST_NATS_URL and WXPAY_TEST_REDIS_URL (internal/testenv). The
// package has no code outside its test.
package flow
