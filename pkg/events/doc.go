// Package events carries WeChat Pay notifications as durable, deduplicated
// business events on NATS JetStream. The sections below cover the publish
// half, which ingress and the reconciler use: the envelope, the subjects,
// the streams and the publisher.
//
// # Envelope
//
// Every event is one JSON Envelope with these fields: id,
// dedupe_key, event_type, mchid, source, create_time, received_at, summary,
// resource_type, original_type, resource (the decrypted resource as a JSON
// object, in the v3 notification's shape) and, for v2 notifications only,
// v2 (the authenticated fields as received: those the sign of a pay
// result covers, or the decrypted req_info of a refund).
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
//
// The sections that follow cover the consume half, which workers use: the
// router, its retries and dead letters, the Redis dedupe and shutdown.
//
// # Handlers
//
// A Router is one team's worker: a durable JetStream pull consumer on
// WXPAY, named RouterConfig.Consumer (one per team; every process of the
// team uses the same name and shares the work). Handlers are registered
// for NATS subject patterns under wxpay.> (build them with Pattern):
//
//	r, err := events.NewRouter(js, rdb, events.RouterConfig{Consumer: "fulfilment", Logger: log})
//	r.Handle(events.Pattern(events.AnyMerchant, wxpay.EventTransactionSuccess), fulfil.New(db))
//	r.Handle(events.Pattern(events.AnyMerchant, events.AnyEventType), audit.New(db), notifyOps)
//	return r.Run(ctx)
//
// A pattern is registered once, with one or several handlers. Handle and
// HandleFunc panic on a missing or nil handler, an invalid pattern, a
// pattern registered twice, or one outside RouterConfig.Subjects; Register
// returns the error instead. The consumer's filter subjects are RouterConfig.Subjects, or
// else the registered patterns (FilterSubjects), which needs NATS server
// 2.10 or later: Run refuses an older server with ErrServerTooOld. Run
// creates or updates the consumer at start (deliver all, explicit acks).
//
// Every handler whose pattern matches an event runs, in registration
// order (the handlers of one pattern in the order given); the first error stops the chain, and the event is done only when
// all succeeded, so a retry runs all of them again. Effects that need
// independent retries belong in separate consumers. An event that reaches
// the consumer with no matching handler is dead-lettered with reason "no
// handler", never silently acknowledged. A body that is not a valid
// Envelope is dead-lettered at once. Handlers decode the resource with
// DecodeResource, which turns JSON errors into permanent ones, and log
// with zerolog.Ctx(ctx), which carries the event's subject, consumer,
// stream_seq, delivery, event_id, dedupe_key and event_type.
//
// A handler must respect ctx, and must be idempotent on its own records:
// it may run more than once for the same dedupe_key (see Handler).
//
// # Retries and dead letters
//
// What a handler's error means is decided in one place: nil marks the
// event done and acknowledges it; Permanent(err) (or an ErrMalformedEnvelope
// error) dead-letters it at once; any other error delivers it again after
// an exponential backoff from RouterConfig.RetryBase (1s) doubling to
// RetryMax (5m), with ±25% jitter (NakWithDelay); RetryAfter(d, err)
// delivers it again after d instead when d is longer than that backoff. The error of attempt RouterConfig.MaxDeliver (10)
// dead-letters the event. The JetStream consumer itself has no delivery
// limit: the router enforces MaxDeliver, so JetStream never stops
// delivering an event without a dead letter. Only deliveries whose
// handlers ran and failed are attempts, counted in Redis under
// wxpay:attempts:<consumer>:<dedupe_key>:<stream seq> (kept for DoneTTL,
// deleted once the event is done); deliveries that ran no handler (Redis
// down, the lock held elsewhere, shutdown) never use up an event's
// attempts. A replayed dead letter is a new stored copy with attempts of
// its own.
//
// A dead letter is the original body on
// wxpaydlq.<consumer>.<mchid>.<event type> (DLQSubject) in WXPAY_DLQ, with
// the headers Wxpay-Dlq-Reason (the error text), Wxpay-Dlq-Deliveries,
// Wxpay-Dlq-Consumer, Wxpay-Dlq-Subject (the original subject) and
// Wxpay-Dlq-Stream-Seq, and the Nats-Msg-Id
// <consumer>:<stream seq>:<storage time in Unix nanoseconds>, which names
// the stored event even across re-creations of WXPAY, so that
// dead-lettering the same delivery again after a crash is dropped.
// The original is terminated only after WXPAY_DLQ acknowledged the dead
// letter; if that publish fails, the event is delivered again later.
// Nothing is dropped.
//
// ListDeadLetters reads dead letters, per team (consumer), per merchant
// and per original subject pattern. ReplayDeadLetters publishes them again
// on their original subjects (Nats-Msg-Id
// replay:<dead letter seq>:<its storage time in Unix nanoseconds>) and
// deletes each from WXPAY_DLQ only after WXPAY acknowledged it. A replayed
// event reaches every consumer whose filter matches, not only the team
// that failed it; the others find their done marker and skip it.
//
// JetStream removes an event from WXPAY at the stream's max age (7 days
// by default) whether a consumer acknowledged it or not, and a dead
// letter from WXPAY_DLQ at its own (30 days). A RetentionMonitor, run
// next to the router, exports the age of each consumer's oldest
// unacknowledged event (wxpay_worker_oldest_unacked_seconds) and oldest
// dead letter (wxpay_dlq_oldest_seconds), and logs a warning once one
// passes half of its stream's max age.
//
// # Dedupe
//
// Before any handler runs, Redis decides, with these keys (prefix
// RouterConfig.KeyPrefix, default wxpay:):
//
//  1. wxpay:done:<consumer>:<dedupe_key> exists: the event is acknowledged
//     without running anything (outcome duplicate).
//  2. Otherwise the worker takes wxpay:lock:<consumer>:<dedupe_key> (SET NX
//     PX, TTL the ack wait, value a token naming host, process and claim).
//     If another worker holds it, the event is delivered again after about
//     the lock's remaining TTL: two workers never run one event at once.
//  3. Holding the lock, it checks done again (the holder may have finished
//     meanwhile), then runs the handlers, extending the message's ack wait
//     (InProgress) and the lock every AckWait/3; only the owner can extend
//     or release the lock (compare-and-set Lua scripts). The handlers'
//     context ends when the lock turns out lost, or when it was last
//     confirmed (claimed or extended) 4/5 of its TTL ago, Redis not
//     answering: they stop before another worker can claim the event.
//  4. After the handlers succeeded: SET done (TTL RouterConfig.DoneTTL,
//     default 7 days, never under 25 h since WeChat retries for about a
//     day), release the lock, then acknowledge.
//
// "done" is never written before the handlers succeeded. A crash at any
// point leads to a redelivery that either finds done or runs the handlers
// again once the lock expired; that is why handlers must be idempotent:
// the Redis dedupe is the fast path, not a proof. If done cannot be
// written, the event is not acknowledged, and runs again. Redis must not
// evict these keys (noeviction, or volatile-* with room to spare).
//
// No handler runs without dedupe. When Redis does not answer, the router
// stops fetching events (they wait in the stream, undelivered, so an
// outage does not use up their deliveries), hands back with a delay the
// few it had already fetched, reports the outage from Ready (wrapping
// ErrRedisUnavailable; serve it on /readyz) and in the
// wxpay_worker_redis_up metric, and resumes by itself when a background
// PING succeeds again. Nothing is acknowledged unprocessed.
//
// # Shutdown
//
// Run returns nil after its ctx is cancelled and the work in flight is
// finished. It stops fetching; events it had fetched but not started are
// handed back, once its last pull has ended (at most a second), with a
// delay of that length (NakWithDelay), so that they go to another worker
// instead of straight back into a pull of the stopping one; running
// handlers keep a context that shutdown does not cancel, bounded by
// RouterConfig.HandlerTimeout (which is less than the ack wait), and their
// events are marked done and acknowledged as usual. Run leaves the NATS
// connection and the Redis client to the caller, which drains and closes
// them after Run returned.
//
// Metrics (on RouterConfig.Registerer): wxpay_worker_processed_total,
// wxpay_worker_duplicates_total, wxpay_worker_retries_total (by reason),
// wxpay_worker_dead_letters_total (by cause), wxpay_worker_handler_seconds,
// wxpay_worker_in_flight and wxpay_worker_redis_up, labelled by consumer
// and, where useful, event type.
package events
