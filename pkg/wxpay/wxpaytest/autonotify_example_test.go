package wxpaytest_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sort"
	"sync"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// The platform sends the notification of each payment by itself; the
// fault policy drops one and sends another twice.
func ExampleServer_AutoNotify() {
	srv := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey, TimeScale: 0.001})
	defer srv.Close()
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	client, err := wxpay.NewClient(srv.ClientConfig(m))
	if err != nil {
		panic(err)
	}

	// The merchant's notify endpoint: it verifies and decrypts each one.
	var mu sync.Mutex
	var got []string
	receiver := httptest.NewServer(wxpay.NotifyHandler(client, func(ctx context.Context, n *wxpay.Notification) error {
		tx, err := n.Transaction()
		if err != nil {
			return err
		}
		mu.Lock()
		got = append(got, n.EventType+" "+tx.OutTradeNo)
		mu.Unlock()
		return nil
	}))
	defer receiver.Close()

	srv.AutoNotify(wxpaytest.AutoNotifyConfig{
		URL: receiver.URL,
		Fault: func(n wxpaytest.AutoNotification) wxpaytest.NotifyFault {
			switch n.OutTradeNo {
			case "ORDER-LOST":
				return wxpaytest.NotifyFault{Drop: true}
			case "ORDER-TWICE":
				return wxpaytest.NotifyFault{Duplicates: 1}
			}
			return wxpaytest.NotifyFault{}
		},
	})
	for _, no := range []string{"ORDER-PLAIN", "ORDER-LOST", "ORDER-TWICE"} {
		srv.CreateOrder(wxpaytest.NewOrder{MchID: m.MchID, OutTradeNo: no, Total: 100})
		srv.Pay(no)
	}
	if err := srv.WaitNotifications(context.Background()); err != nil {
		panic(err)
	}

	sort.Strings(got)
	for _, g := range got {
		fmt.Println(g)
	}
	st := srv.NotifyStats().Payment
	fmt.Printf("notifications %d, dropped %d, duplicated %d, acknowledged %d\n",
		st.Notifications, st.Dropped, st.Duplicated, st.Acknowledged)
	// Output:
	// TRANSACTION.SUCCESS ORDER-PLAIN
	// TRANSACTION.SUCCESS ORDER-TWICE
	// TRANSACTION.SUCCESS ORDER-TWICE
	// notifications 3, dropped 1, duplicated 1, acknowledged 3
}
