package events

import (
	"reflect"
	"strings"
	"testing"
)

func TestCheckPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		wantErr string // "" for valid
	}{
		{"wxpay.>", ""},
		{"wxpay.*.transaction.success", ""},
		{"wxpay.1230000109.refund.>", ""},
		{"wxpay.*.refund.*", ""},
		{"wxpay.1230000109.transaction.success", ""},
		{"wxpay.*.>", ""},
		{"", "empty"},
		{"wxpay", "not under"},
		{"foo.>", "not under"},
		{">", "not under"},
		{"wxpaydlq.billing.>", "not under"},
		{"wxpay..transaction.success", "not a subject token"},
		{"wxpay.*.transaction.", "not a subject token"},
		{"wxpay.>.success", "must be the last"},
		{"wxpay.12*.transaction.success", "not a subject token"},
		{"wxpay.* .transaction.success", "not a subject token"},
		{"wxpay.*.TRANSACTION.SUCCESS", "lower case"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			t.Parallel()
			err := checkPattern(tt.pattern)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("checkPattern(%q) = %v, want nil", tt.pattern, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("checkPattern(%q) = %v, want an error containing %q", tt.pattern, err, tt.wantErr)
			}
		})
	}
}

func TestMatchSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"wxpay.>", "wxpay.1230000109.transaction.success", true},
		{"wxpay.*.transaction.success", "wxpay.1230000109.transaction.success", true},
		{"wxpay.*.transaction.success", "wxpay.1230000109.refund.success", false},
		{"wxpay.1230000109.>", "wxpay.1230000109.refund.success", true},
		{"wxpay.1230000109.>", "wxpay.1900000001.refund.success", false},
		{"wxpay.1230000109.>", "wxpay.1230000109", false},
		{"wxpay.*.refund.*", "wxpay.1.refund.closed", true},
		{"wxpay.*.refund.*", "wxpay.1.refund.closed.extra", false},
		{"wxpay.*.refund", "wxpay.1.refund.closed", false},
		{"wxpay.1.transaction.success", "wxpay.1.transaction.success", true},
	}
	for _, tt := range tests {
		if got := matchSubject(tt.pattern, tt.subject); got != tt.want {
			t.Errorf("matchSubject(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
		}
	}
}

func TestSubsetOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p, f string
		want bool
	}{
		{"wxpay.*.transaction.success", "wxpay.>", true},
		{"wxpay.>", "wxpay.>", true},
		{"wxpay.>", "wxpay.*.>", false},
		{"wxpay.*.>", "wxpay.>", true},
		{"wxpay.1.transaction.success", "wxpay.*.transaction.success", true},
		{"wxpay.*.transaction.success", "wxpay.1.transaction.success", false},
		{"wxpay.*.transaction.success", "wxpay.1.>", false},
		{"wxpay.1.>", "wxpay.*.transaction.success", false},
		{"wxpay.*.refund.*", "wxpay.*.refund.>", true},
		{"wxpay.*.refund.>", "wxpay.*.refund.*", false},
		{"wxpay.*.refund", "wxpay.*.refund.>", false},
		{"wxpay.1.refund.success", "wxpay.1.refund.success", true},
	}
	for _, tt := range tests {
		if got := subsetOf(tt.p, tt.f); got != tt.want {
			t.Errorf("subsetOf(%q, %q) = %v, want %v", tt.p, tt.f, got, tt.want)
		}
	}
}

func TestFilterSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		patterns []string
		want     []string
	}{
		{"one", []string{"wxpay.*.transaction.success"}, []string{"wxpay.*.transaction.success"}},
		{"disjoint, sorted", []string{"wxpay.*.transaction.success", "wxpay.*.refund.success"},
			[]string{"wxpay.*.refund.success", "wxpay.*.transaction.success"}},
		{"covered dropped", []string{"wxpay.1.transaction.success", "wxpay.*.transaction.success", "wxpay.*.transaction.*"},
			[]string{"wxpay.*.transaction.*"}},
		{"everything", []string{"wxpay.1.>", "wxpay.>", "wxpay.*.refund.success"}, []string{"wxpay.>"}},
		{"partial overlap kept", []string{"wxpay.*.transaction.success", "wxpay.1.>"},
			[]string{"wxpay.*.transaction.success", "wxpay.1.>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := filterSubjects(tt.patterns); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("filterSubjects(%q) = %q, want %q", tt.patterns, got, tt.want)
			}
		})
	}
}
