package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/events"
)

// A business system announces the order it just created, so that the
// worker's tracker keeps it pending and the reconciler follows it should
// WeChat's notification never come. Announcing it again (a retry after a
// timeout) is the same event. In production js comes from nats.Connect;
// here an in-process server stands in for it.
func ExampleAnnounceOrder() {
	js, _, closeServices := exampleServices()
	defer closeServices()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := events.NewPublisher(js, events.PublisherConfig{})

	a := events.Announcement{OutTradeNo: "T20240301001", CreateTime: "2024-03-01T10:00:00+08:00"}
	p, err := events.AnnounceOrder(ctx, pub, "1230000109", a)
	fmt.Println("announced:", p.Sequence, p.Duplicate, err)
	p, err = events.AnnounceOrder(ctx, pub, "1230000109", a)
	fmt.Println("again:", p.Sequence, p.Duplicate, err)

	st, _ := js.Stream(ctx, events.StreamName)
	msg, _ := st.GetLastMsgForSubject(ctx, events.Subject("1230000109", events.EventOrderCreated))
	fmt.Println(msg.Subject, msg.Header.Get("Nats-Msg-Id"))
	var ev events.Envelope
	_ = json.Unmarshal(msg.Data, &ev)
	fmt.Println(ev.ID, ev.EventType, ev.Source, string(ev.Resource))

	_, err = events.AnnounceRefund(ctx, pub, "1230000109", events.Announcement{OutTradeNo: "T20240301001"})
	fmt.Println(errors.Is(err, events.ErrInvalidAnnouncement), err)
	// Output:
	// announced: 1 false <nil>
	// again: 1 true <nil>
	// wxpay.1230000109.order.created event:biz:order:1230000109:T20240301001
	// biz:order:1230000109:T20240301001 ORDER.CREATED business {"out_trade_no":"T20240301001","create_time":"2024-03-01T10:00:00+08:00"}
	// true events: invalid announcement: refund announcement: no out_refund_no
}
