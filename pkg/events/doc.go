// Package events carries WeChat Pay notifications as durable, deduplicated
// business events on NATS JetStream. The sections below cover the publish
// half, which ingress and the reconciler use: the envelope, the subjects,
// the streams and the publisher.
//
// # Envelope
//
// Every event is one JSON Envelope with the fields of DESIGN.md: id,
// dedupe_key, event_type, mchid, source, create_time, received_at, summary,
// resource_type, original_type, resource (the decrypted resource as a JSON
// object, in the v3 notification's shape) and, for v2 notifications only,
// v2 (the fields as received).
//
// FromNotification builds the envelope of a verified v3 notification and
// FromV2 the one of a verified v2 XML notification, mapped onto the v3
// shape so that handlers see one form. Validate checks the contract;
// consumers call it on what they receive.
//
// The dedupe_key is the business identity and state of the event, and the
// same whichever way the event arrives: a callback, WeChat's retries of it,
// its v2 form, and the reconciler's finding. It is built only by
// TransactionKey (transaction:<transaction_id>:SUCCESS), RefundKey
// (refund:<refund_id>:<refund_status>), OrderKey
// (order:<mchid>:<out_trade_no>:<STATE>) and EventKey (event:<id>), so the
// code paths cannot drift apart.
//
// # Subjects
//
// Events are published on wxpay.<mchid>.<event type in lower case>, for
// example wxpay.1230000109.transaction.success, built only by Subject.
// Pattern builds filters for consumers and handler registrations, with
// AnyMerchant and AnyEventType as wildcards. Dead letters go to
// wxpaydlq.<consumer>.<mchid>.<event type> (DLQSubject). A merchant id must
// be a single subject token (ValidMchID).
//
// The stream WXPAY (StreamName) holds SubjectAll, wxpay.>, with limits
// retention and file storage, so that it is a log that can be replayed; the
// stream WXPAY_DLQ (DLQStreamName) holds DLQSubjectAll, wxpaydlq.>.
// EnsureStreams creates them, or raises an existing stream to what the
// command was told to expect, and reports what is still weaker so the
// command can log it at start.
//
// # Publishing
//
// Publisher.Publish sends an envelope with the Nats-Msg-Id header set to its
// dedupe_key and waits for the stream's PubAck. JetStream drops a second
// message with the same Nats-Msg-Id inside the duplicate window and says so
// in the PubAck (Published.Duplicate); the workers' Redis dedupe covers
// longer spans.
//
// The invariant the whole system rests on: ingress answers success only
// after the PubAck. An event is acknowledged to WeChat only once JetStream
// has stored it (with sync_interval: always and three replicas in
// production, on disk). A duplicate PubAck counts as stored. Any other
// outcome, including a publish still waiting when its deadline ends, is an
// error wrapping ErrPublish, which ingress answers with 503 so that WeChat
// sends the notification again. Retrying is always safe: the retry carries
// the same dedupe_key.
package events
