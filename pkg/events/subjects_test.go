package events

import (
	"testing"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

func TestSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		mchid     string
		eventType string
		want      string
	}{
		{"payment", "1230000109", wxpay.EventTransactionSuccess, "wxpay.1230000109.transaction.success"},
		{"refund success", "1230000109", wxpay.EventRefundSuccess, "wxpay.1230000109.refund.success"},
		{"refund abnormal", "1230000109", wxpay.EventRefundAbnormal, "wxpay.1230000109.refund.abnormal"},
		{"refund closed", "1230000109", wxpay.EventRefundClosed, "wxpay.1230000109.refund.closed"},
		{"closed by us", "1230000109", EventTransactionClosed, "wxpay.1230000109.transaction.closed"},
		{"revoked", "1230000109", EventTransactionRevoked, "wxpay.1230000109.transaction.revoked"},
		{"pay error", "1230000109", EventTransactionPayError, "wxpay.1230000109.transaction.payerror"},
		{"bill ready", "1230000109", EventBillReady, "wxpay.1230000109.bill.ready"},
		{"bill mismatch", "1230000109", EventBillMismatch, "wxpay.1230000109.bill.mismatch"},
		{"order created", "1230000109", EventOrderCreated, "wxpay.1230000109.order.created"},
		{"refund created", "1230000109", EventRefundCreated, "wxpay.1230000109.refund.created"},
		{"already lower case", "1900000001", "transaction.success", "wxpay.1900000001.transaction.success"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Subject(tt.mchid, tt.eventType); got != tt.want {
				t.Errorf("Subject(%q, %q) = %q, want %q", tt.mchid, tt.eventType, got, tt.want)
			}
		})
	}
}

func TestPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		mchid     string
		eventType string
		want      string
	}{
		{"one merchant, one type", "1230000109", wxpay.EventTransactionSuccess, "wxpay.1230000109.transaction.success"},
		{"any merchant", AnyMerchant, wxpay.EventRefundSuccess, "wxpay.*.refund.success"},
		{"any event of a merchant", "1230000109", AnyEventType, "wxpay.1230000109.>"},
		{"everything", AnyMerchant, AnyEventType, "wxpay.*.>"},
		{"every refund state", AnyMerchant, "REFUND.*", "wxpay.*.refund.*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Pattern(tt.mchid, tt.eventType); got != tt.want {
				t.Errorf("Pattern(%q, %q) = %q, want %q", tt.mchid, tt.eventType, got, tt.want)
			}
		})
	}
}

func TestDLQSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                       string
		consumer, mchid, eventType string
		want                       string
	}{
		{"payment", "billing", "1230000109", wxpay.EventTransactionSuccess, "wxpaydlq.billing.1230000109.transaction.success"},
		{"project event", "ledger", "1900000001", EventBillMismatch, "wxpaydlq.ledger.1900000001.bill.mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := DLQSubject(tt.consumer, tt.mchid, tt.eventType); got != tt.want {
				t.Errorf("DLQSubject(%q, %q, %q) = %q, want %q", tt.consumer, tt.mchid, tt.eventType, got, tt.want)
			}
		})
	}
}

func TestValidMchID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mchid string
		want  bool
	}{
		{"1230000109", true},
		{"sp-1900000001", true},
		{"", false},
		{"123.456", false},
		{"*", false},
		{">", false},
		{"12 34", false},
		{"1234\t", false},
		{"1234\n", false},
		{"1234\r", false},
		{"12\x0034", false},
		{"12\xff34", false},
		{"12\u300034", false}, // ideographic space
	}
	for _, tt := range tests {
		if got := ValidMchID(tt.mchid); got != tt.want {
			t.Errorf("ValidMchID(%q) = %v, want %v", tt.mchid, got, tt.want)
		}
	}
}

func TestValidEventType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		eventType string
		want      bool
	}{
		{"TRANSACTION.SUCCESS", true},
		{"BILL.READY", true},
		{"PING", true},
		{"", false},
		{".", false},
		{"TRANSACTION.", false},
		{".SUCCESS", false},
		{"TRANSACTION..SUCCESS", false},
		{"TRANSACTION.*", false},
		{">", false},
		{"TRANSACTION SUCCESS", false},
	}
	for _, tt := range tests {
		if got := validEventType(tt.eventType); got != tt.want {
			t.Errorf("validEventType(%q) = %v, want %v", tt.eventType, got, tt.want)
		}
	}
}
