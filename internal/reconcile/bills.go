package reconcile

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/tracking"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// Bill kinds, as they name files and the bill field of bill.ready.
const (
	BillTrade    = "tradebill"
	BillFundFlow = "fundflowbill"
)

// Kinds of discrepancy between a trade bill and the ledger (the kind field
// of bill.mismatch).
const (
	// MismatchMissingInLedger: WeChat's bill has a payment or a finished
	// refund the ledger does not (its notification never reached a
	// handler, or the tracker does not run).
	MismatchMissingInLedger = "missing_in_ledger"
	// MismatchMissingInBill: the ledger has a payment or refund WeChat's
	// bill does not.
	MismatchMissingInBill = "missing_in_bill"
	// MismatchAmount: both have it, with different amounts.
	MismatchAmount = "amount_differs"
	// MismatchState: both have it, in different final states.
	MismatchState = "state_differs"
)

// Defaults of BillOptions.
const (
	DefaultBillDir = "./bills"
	// DefaultMaxMismatchEvents bounds the bill.mismatch events of one bill:
	// a day whose ledger is empty (the tracker was not running) would
	// otherwise publish one per row. Every discrepancy is still counted.
	DefaultMaxMismatchEvents = 10000
	// billApplies is how many times one run applies for the same bill when
	// its download_url has expired (INVALID_REQUEST) before it is used.
	billApplies = 3
	// matchBatch is how many bill rows are looked up in the ledger at once.
	matchBatch = 1000
)

// ErrBillNotReady: WeChat is still making the bill (STATEMENT_CREATING).
// Bills of a day are ready after 10:00 China time on the next day; run
// again later.
var ErrBillNotReady = errors.New("the bill is not ready yet (WeChat answered STATEMENT_CREATING; bills are ready after 10:00 China time the next day, run again later)")

// errEmptyDay: WeChat has no bill for the day (NO_STATEMENT_EXIST).
var errEmptyDay = errors.New("no bill for this day")

// Progress shows long work on a terminal; nil shows nothing.
type Progress interface {
	// Start begins a task of total units (0 when unknown), bytes or items.
	Start(label string, total int64, bytes bool) ProgressTask
}

// ProgressTask is one task of a Progress.
type ProgressTask interface {
	Add(n int64)
	Done()
}

// BillOptions configures Reconciler.Bills; zero fields take the defaults.
type BillOptions struct {
	// Dir is where verified bills are stored, as
	// <Dir>/<mchid>/<bill>_<type>_<YYYY-MM-DD>.csv.
	Dir string
	// MaxMismatchEvents bounds the bill.mismatch events per bill.
	MaxMismatchEvents int
	// Progress, when set, shows downloads and matching.
	Progress Progress
}

// BillResult is one bill of one merchant in a run.
type BillResult struct {
	MchID string `json:"mchid"`
	// Bill is BillTrade or BillFundFlow; Type its bill_type or
	// account_type.
	Bill string `json:"bill"`
	Type string `json:"type"`
	Date string `json:"bill_date"`
	// File is where the verified bill was stored; HashValue its SHA-1.
	File      string `json:"file,omitempty"`
	HashValue string `json:"hash_value,omitempty"`
	// Empty: WeChat has no bill for the day (NO_STATEMENT_EXIST), which
	// is reconciled as a bill without rows.
	Empty bool  `json:"empty"`
	Rows  int64 `json:"rows"`
	// Matched counts trade-bill rows found in the ledger as they are.
	Matched int64 `json:"matched"`
	// RefundsProcessing counts refunds the bill shows as still
	// processing and the ledger does not have yet: not a discrepancy.
	RefundsProcessing int64 `json:"refunds_processing,omitempty"`
	// Mismatches counts discrepancies by kind; Published how many
	// bill.mismatch events went out (at most MaxMismatchEvents).
	Mismatches map[string]int64 `json:"mismatches,omitempty"`
	Published  int64            `json:"mismatch_events"`
	// NotReady: WeChat was still making the bill.
	NotReady bool   `json:"not_ready,omitempty"`
	Error    string `json:"error,omitempty"`
}

// MismatchCount is the number of discrepancies found in the bill.
func (b BillResult) MismatchCount() int64 {
	var n int64
	for _, c := range b.Mismatches {
		n += c
	}
	return n
}

// BillSummary is what Reconciler.Bills did.
type BillSummary struct {
	Date       string       `json:"bill_date"`
	Bills      []BillResult `json:"bills"`
	Rows       int64        `json:"rows"`
	Mismatches int64        `json:"mismatches"`
	NotReady   int          `json:"not_ready"`
	Errors     int          `json:"errors"`
}

// Clean reports whether every bill was fetched and matched.
func (s BillSummary) Clean() bool { return s.Errors == 0 && s.Mismatches == 0 }

// String is the one-line summary.
func (s BillSummary) String() string {
	byKind := map[string]int64{}
	for _, b := range s.Bills {
		for k, n := range b.Mismatches {
			byKind[k] += n
		}
	}
	kinds := make([]string, 0, len(byKind))
	for k, n := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	by := ""
	if len(kinds) > 0 {
		by = " (" + strings.Join(kinds, " ") + ")"
	}
	return fmt.Sprintf("bills of %s: %d bill(s), %d rows, mismatches %d%s, not ready %d, errors %d",
		s.Date, len(s.Bills), s.Rows, s.Mismatches, by, s.NotReady, s.Errors)
}

func (s *BillSummary) add(b BillResult) {
	s.Bills = append(s.Bills, b)
	s.Rows += b.Rows
	s.Mismatches += b.MismatchCount()
	switch {
	case b.NotReady:
		s.NotReady++
		s.Errors++
	case b.Error != "":
		s.Errors++
	}
}

// BillTotals is the summary row of a trade bill in bill.ready. Amounts are
// in fen; Fee is in 0.00001 yuan, the bill's own precision for fees.
type BillTotals struct {
	Count           int64 `json:"count"`
	SettlementTotal int64 `json:"settlement_total"`
	Refund          int64 `json:"refund"`
	CouponRefund    int64 `json:"coupon_refund"`
	Fee             int64 `json:"fee"`
	OrderTotal      int64 `json:"order_total"`
	RequestedRefund int64 `json:"requested_refund"`
}

// FundFlowTotals is the summary row of a fund-flow bill in bill.ready;
// amounts in fen.
type FundFlowTotals struct {
	Count        int64 `json:"count"`
	IncomeCount  int64 `json:"income_count"`
	Income       int64 `json:"income"`
	ExpenseCount int64 `json:"expense_count"`
	Expense      int64 `json:"expense"`
}

// BillReady is the resource of a bill.ready event: one bill downloaded,
// verified, stored, parsed and (a trade bill) matched against the ledger.
type BillReady struct {
	Bill        string `json:"bill"`
	BillType    string `json:"bill_type,omitempty"`
	AccountType string `json:"account_type,omitempty"`
	BillDate    string `json:"bill_date"`
	// Empty: WeChat has no bill for the day.
	Empty     bool   `json:"empty"`
	Rows      int64  `json:"rows"`
	File      string `json:"file,omitempty"`
	HashValue string `json:"hash_value,omitempty"`
	// Trade or FundFlow holds the bill's totals.
	Trade    *BillTotals     `json:"trade_totals,omitempty"`
	FundFlow *FundFlowTotals `json:"fund_flow_totals,omitempty"`
	// Matched and Mismatches (trade bills): rows found in the ledger as
	// they are, and discrepancies by kind.
	Matched    int64            `json:"matched"`
	Mismatches map[string]int64 `json:"mismatches"`
}

// Mismatch is the resource of a bill.mismatch event: one discrepancy
// between the trade bill of BillDate and the ledger.
type Mismatch struct {
	Kind          string `json:"kind"`
	BillDate      string `json:"bill_date"`
	TransactionID string `json:"transaction_id,omitempty"`
	OutTradeNo    string `json:"out_trade_no,omitempty"`
	RefundID      string `json:"refund_id,omitempty"`
	OutRefundNo   string `json:"out_refund_no,omitempty"`
	// Bill is the bill's side (absent when the bill does not have it),
	// Ledger the ledger's (absent when the ledger does not).
	Bill   *MismatchBill   `json:"bill,omitempty"`
	Ledger *MismatchLedger `json:"ledger,omitempty"`
}

// MismatchBill is a bill row's side of a Mismatch; Amount in fen.
type MismatchBill struct {
	Line      int    `json:"line"`
	TradeTime string `json:"trade_time"`
	State     string `json:"state"`
	Amount    int64  `json:"amount"`
}

// MismatchLedger is the ledger's side of a Mismatch; Amount in fen.
type MismatchLedger struct {
	State   string `json:"state"`
	Amount  int64  `json:"amount"`
	EventID string `json:"event_id"`
}

// Bills fetches, verifies, stores and reconciles every merchant's trade
// bill (ALL) and fund-flow bill (BASIC) of day's China date: the trade
// bill is matched against the ledger the tracker keeps, each discrepancy
// published as bill.mismatch, each bill announced as bill.ready (README,
// "The reconciler"). Failures are counted in the summary and the run goes
// on; the returned error is only ctx's.
func (r *Reconciler) Bills(ctx context.Context, day time.Time, opts BillOptions) (BillSummary, error) {
	if opts.Dir == "" {
		opts.Dir = DefaultBillDir
	}
	if opts.MaxMismatchEvents <= 0 {
		opts.MaxMismatchEvents = DefaultMaxMismatchEvents
	}
	day = chinaDate(day)
	s := BillSummary{Date: day.Format("2006-01-02")}
	for _, m := range r.merchants {
		for _, bill := range []string{BillTrade, BillFundFlow} {
			if ctx.Err() != nil {
				return s, context.Cause(ctx)
			}
			b := &billRun{r: r, m: m, day: day, opts: opts, bill: bill,
				res: BillResult{MchID: m.MchID, Bill: bill, Date: s.Date, Mismatches: map[string]int64{}}}
			b.log = r.log.With().Str("mchid", m.MchID).Str("bill", bill).Str("bill_date", s.Date).Logger()
			b.run(ctx)
			if len(b.res.Mismatches) == 0 {
				b.res.Mismatches = nil
			}
			s.add(b.res)
		}
	}
	return s, nil
}

// chinaDate is midnight, China time, of t's China date.
func chinaDate(t time.Time) time.Time {
	y, mo, d := t.In(wxpay.ChinaTime()).Date()
	return time.Date(y, mo, d, 0, 0, 0, 0, wxpay.ChinaTime())
}

// billRun is one bill of one merchant.
type billRun struct {
	r    *Reconciler
	m    Merchant
	day  time.Time
	opts BillOptions
	bill string
	res  BillResult
	log  zerolog.Logger
}

func (b *billRun) fail(err error, msg string) {
	if errors.Is(err, ErrBillNotReady) {
		b.res.NotReady = true
		b.res.Error = ErrBillNotReady.Error()
		b.log.Error().Msg(msg + ": " + ErrBillNotReady.Error())
		return
	}
	b.res.Error = msg + ": " + err.Error()
	b.log.Error().Err(err).Msg(msg)
}

func (b *billRun) run(ctx context.Context) {
	var apply func(context.Context, time.Time) (*wxpay.Bill, error)
	if b.bill == BillTrade {
		b.res.Type = wxpay.BillTypeAll
		apply = func(ctx context.Context, day time.Time) (*wxpay.Bill, error) {
			return b.m.Client.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: day, BillType: wxpay.BillTypeAll, Gzip: true})
		}
	} else {
		b.res.Type = wxpay.AccountTypeBasic
		apply = func(ctx context.Context, day time.Time) (*wxpay.Bill, error) {
			return b.m.Client.ApplyFundFlowBill(ctx, wxpay.FundFlowBillRequest{Date: day, AccountType: wxpay.AccountTypeBasic, Gzip: true})
		}
	}
	dir := filepath.Join(b.opts.Dir, b.m.MchID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		b.fail(err, "creating the bill directory (check --bill-dir / RECONCILE_BILL_DIR and its permissions)")
		return
	}
	name := fmt.Sprintf("%s_%s_%s.csv", b.bill, b.res.Type, b.res.Date)
	start := time.Now()
	path, hash, err := b.fetch(ctx, dir, name, func(ctx context.Context) (*wxpay.Bill, error) { return apply(ctx, b.day) })
	switch {
	case errors.Is(err, errEmptyDay):
		b.res.Empty = true
		b.log.Info().Msg("WeChat has no bill for this day (NO_STATEMENT_EXIST): an empty day")
	case err != nil:
		b.fail(err, "fetching the bill")
		return
	default:
		b.res.File, b.res.HashValue = path, hash
		b.log.Info().Str("file", path).Str("hash_value", hash).Stringer("took", time.Since(start).Round(time.Millisecond)).Msg("bill verified and stored")
	}
	start = time.Now()
	ready := BillReady{Bill: b.bill, BillDate: b.res.Date, Empty: b.res.Empty, File: b.res.File, HashValue: b.res.HashValue}
	if b.bill == BillTrade {
		ready.BillType = b.res.Type
		totals, err := b.matchTrade(ctx, path)
		if err != nil {
			b.fail(err, "reconciling the trade bill")
			return
		}
		ready.Trade = &totals
		ready.Matched = b.res.Matched
	} else {
		ready.AccountType = b.res.Type
		totals, err := b.readFundFlow(path)
		if err != nil {
			b.fail(err, "reading the fund-flow bill")
			return
		}
		ready.FundFlow = &totals
	}
	ready.Rows = b.res.Rows
	ready.Mismatches = b.res.Mismatches
	id := fmt.Sprintf("rc-bill-ready-%s-%s-%s-%s", b.m.MchID, b.day.Format("20060102"), b.bill, b.res.Type)
	if err := b.publish(ctx, events.EventBillReady, id, fmt.Sprintf("%s %s of %s ready", b.bill, b.res.Type, b.res.Date), ready); err != nil {
		b.fail(err, "publishing bill.ready")
		return
	}
	took := time.Since(start)
	b.log.Info().Int64("rows", b.res.Rows).Int64("matched", b.res.Matched).Int64("mismatches", b.res.MismatchCount()).
		Stringer("took", took.Round(time.Millisecond)).Float64("rows_per_second", math.Round(float64(b.res.Rows)/took.Seconds())).Msg("bill reconciled")
}

// fetch applies for a bill and downloads it to dir/name, through a
// temporary file renamed only once the SHA-1 matched, so that a rejected
// download leaves no file. An expired download_url is applied for again.
// It returns errEmptyDay for NO_STATEMENT_EXIST and ErrBillNotReady for
// STATEMENT_CREATING, both only from verified answers.
func (b *billRun) fetch(ctx context.Context, dir, name string, apply func(context.Context) (*wxpay.Bill, error)) (path, hash string, err error) {
	for round := 1; ; round++ {
		var bill *wxpay.Bill
		attempts := 0
		err := b.r.call(ctx, &attempts, b.log, func(ctx context.Context) (err error) {
			bill, err = apply(ctx)
			return err
		})
		switch {
		case verifiedIs(err, wxpay.ErrNoStatementExist):
			return "", "", errEmptyDay
		case verifiedIs(err, wxpay.ErrStatementCreating):
			return "", "", ErrBillNotReady
		case err != nil:
			return "", "", fmt.Errorf("applying for the bill: %w", err)
		}
		tmp, err := os.CreateTemp(dir, "."+name+".*.part")
		if err != nil {
			return "", "", fmt.Errorf("creating a temporary file (check --bill-dir / RECONCILE_BILL_DIR): %w", err)
		}
		err = b.download(ctx, bill, tmp)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			path = filepath.Join(dir, name)
			if err = os.Rename(tmp.Name(), path); err == nil {
				return path, strings.ToLower(bill.HashValue), nil
			}
		}
		os.Remove(tmp.Name())
		if errors.Is(err, wxpay.ErrInvalidRequest) && round < billApplies {
			b.log.Warn().Err(err).Msg("the download_url expired before it was used; applying again")
			continue
		}
		return "", "", err
	}
}

// download writes bill to f, starting over on a retryable failure.
func (b *billRun) download(ctx context.Context, bill *wxpay.Bill, f *os.File) error {
	attempts := 0
	return b.r.call(ctx, &attempts, b.log, func(ctx context.Context) error {
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		var w io.Writer = f
		if b.opts.Progress != nil {
			t := b.opts.Progress.Start(fmt.Sprintf("downloading %s %s %s", b.m.MchID, b.bill, b.res.Date), 0, true)
			defer t.Done()
			w = progressWriter{f, t}
		}
		if err := b.m.Client.DownloadBill(ctx, bill, w); err != nil {
			return fmt.Errorf("downloading the bill: %w", err)
		}
		return nil
	})
}

type progressWriter struct {
	w io.Writer
	t ProgressTask
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.t.Add(int64(n))
	return n, err
}

type progressReader struct {
	r io.Reader
	t ProgressTask
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.t.Add(int64(n))
	return n, err
}

// open opens a stored bill for reading, counted by the progress line;
// close must be called.
func (b *billRun) open(path, label string) (io.Reader, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = f
	done := func() { f.Close() }
	if b.opts.Progress != nil {
		var size int64
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		t := b.opts.Progress.Start(label, size, true)
		r = progressReader{f, t}
		done = func() { t.Done(); f.Close() }
	}
	return bufio.NewReaderSize(r, 256<<10), done, nil
}

func (b *billRun) readFundFlow(path string) (FundFlowTotals, error) {
	if path == "" {
		return FundFlowTotals{}, nil
	}
	r, done, err := b.open(path, fmt.Sprintf("reading %s %s %s", b.m.MchID, b.bill, b.res.Date))
	if err != nil {
		return FundFlowTotals{}, err
	}
	defer done()
	fr := wxpay.NewFundFlowReader(r)
	for {
		if _, err := fr.Next(); err == io.EOF {
			break
		} else if err != nil {
			return FundFlowTotals{}, err
		}
		b.res.Rows++
	}
	s := fr.Summary()
	return FundFlowTotals{Count: s.Count, IncomeCount: s.IncomeCount, Income: s.Income, ExpenseCount: s.ExpenseCount, Expense: s.Expense}, nil
}

// matcher matches one trade bill against the ledger.
type matcher struct {
	b     *billRun
	store *tracking.Store
	// seen holds a hash of every id of the day's ledger a bill row was
	// matched to, so that the ledger's own entries can be checked
	// against the bill afterwards without holding a million strings: 8
	// bytes an entry. Two ids sharing a 64-bit hash would hide one
	// ledger-only entry; at a million entries the odds are below 1 in
	// 10^7.
	seed maphash.Seed
	seen []uint64
}

func (b *billRun) matchTrade(ctx context.Context, path string) (BillTotals, error) {
	mt := &matcher{b: b, store: b.r.store, seed: maphash.MakeSeed()}
	var totals BillTotals
	if path != "" {
		r, done, err := b.open(path, fmt.Sprintf("matching %s %s %s", b.m.MchID, b.bill, b.res.Date))
		if err != nil {
			return totals, err
		}
		defer done()
		tr := wxpay.NewTradeBillReader(r)
		// One goroutine parses while this one looks rows up in Redis and
		// compares them: the two halves take about as long each.
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		batches := make(chan []wxpay.TradeBillRow, 2)
		var rows int64
		var parseErr error
		go func() {
			defer close(batches)
			batch := make([]wxpay.TradeBillRow, 0, matchBatch)
			for {
				row, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					parseErr = err
					return
				}
				rows++
				if batch = append(batch, row); len(batch) == matchBatch {
					select {
					case batches <- batch:
					case <-pctx.Done():
						return
					}
					batch = make([]wxpay.TradeBillRow, 0, matchBatch)
				}
			}
			select {
			case batches <- batch:
			case <-pctx.Done():
			}
		}()
		var matchErr error
		for batch := range batches {
			if matchErr == nil {
				if matchErr = mt.rows(ctx, batch); matchErr != nil {
					stop() // the parser stops; the channel is drained
				}
			}
		}
		b.res.Rows = rows
		if err := cmp.Or(matchErr, parseErr); err != nil {
			return totals, err
		}
		s := tr.Summary()
		totals = BillTotals{Count: s.Count, SettlementTotal: s.SettlementTotal, Refund: s.Refund, CouponRefund: s.CouponRefund,
			Fee: s.Fee, OrderTotal: s.OrderTotal, RequestedRefund: s.RequestedRefund}
	}
	return totals, mt.ledgerOnly(ctx)
}

func isRefundRow(row *wxpay.TradeBillRow) bool { return row.TradeState == wxpay.TradeStateRefund }

// rowID is the ledger field of a bill row: the refund_id of a refund, the
// transaction_id of a payment.
func rowID(row *wxpay.TradeBillRow) string {
	if isRefundRow(row) {
		return row.RefundID
	}
	return row.TransactionID
}

// rows matches a batch of bill rows. Payments are looked up in the ledger
// of the bill's day. Refunds appear in the bill of the day they were
// applied for but in the ledger of the day they finished, so one not in
// the day's ledger is looked up in the next day's too.
func (mt *matcher) rows(ctx context.Context, batch []wxpay.TradeBillRow) error {
	if len(batch) == 0 {
		return nil
	}
	b := mt.b
	ids := make([]string, len(batch))
	for i := range batch {
		ids[i] = rowID(&batch[i])
	}
	got, err := mt.store.LedgerGet(ctx, b.m.MchID, b.day, ids)
	if err != nil {
		return fmt.Errorf("reading the ledger: %w", err)
	}
	var later []int
	for i := range batch {
		if got[i] == nil && isRefundRow(&batch[i]) && ids[i] != "" {
			later = append(later, i)
		} else if got[i] != nil {
			mt.seen = append(mt.seen, maphash.String(mt.seed, ids[i]))
		}
	}
	if len(later) > 0 {
		next := make([]string, len(later))
		for j, i := range later {
			next[j] = ids[i]
		}
		more, err := mt.store.LedgerGet(ctx, b.m.MchID, b.day.AddDate(0, 0, 1), next)
		if err != nil {
			return fmt.Errorf("reading the next day's ledger: %w", err)
		}
		for j, i := range later {
			got[i] = more[j]
		}
	}
	for i := range batch {
		if err := mt.row(ctx, &batch[i], got[i]); err != nil {
			return err
		}
	}
	return nil
}

// row compares one bill row with its ledger entry (nil: none).
func (mt *matcher) row(ctx context.Context, row *wxpay.TradeBillRow, e *tracking.Entry) error {
	b := mt.b
	mm := Mismatch{BillDate: b.res.Date, TransactionID: row.TransactionID, OutTradeNo: row.OutTradeNo}
	side := &MismatchBill{Line: row.Line, TradeTime: row.TradeTime.In(wxpay.ChinaTime()).Format(time.RFC3339)}
	if isRefundRow(row) {
		mm.RefundID, mm.OutRefundNo = row.RefundID, row.OutRefundNo
		side.State, side.Amount = wxpay.NormalizeRefundStatus(row.RefundStatus), row.Refund
		final := side.State == wxpay.RefundStatusSuccess || side.State == wxpay.RefundStatusClosed || side.State == wxpay.RefundStatusAbnormal
		switch {
		case e == nil && !final:
			// Still processing when the bill was made: its end comes
			// by notification or by `reconciler orders`.
			b.res.RefundsProcessing++
			return nil
		case e == nil:
			mm.Kind = MismatchMissingInLedger
		case e.Amount != side.Amount:
			mm.Kind = MismatchAmount
		case final && e.State != side.State:
			// The bill is not updated after it is made: only two
			// final states can disagree.
			mm.Kind = MismatchState
		}
	} else {
		side.State, side.Amount = row.TradeState, row.OrderTotal
		if side.Amount == 0 {
			// Bills in the legacy format have no 订单金额.
			side.Amount = row.SettlementTotal
		}
		switch {
		case row.TradeState == wxpay.TradeStateRevoked:
			// A revoked payment: the ledger must not hold it as paid.
			if e != nil && e.State == wxpay.TradeStateSuccess {
				mm.Kind = MismatchState
			}
		case e == nil:
			mm.Kind = MismatchMissingInLedger
		case e.Amount != side.Amount:
			mm.Kind = MismatchAmount
		case e.State != wxpay.TradeStateSuccess:
			mm.Kind = MismatchState
		}
	}
	if mm.Kind == "" {
		if e != nil {
			b.res.Matched++
		}
		return nil
	}
	mm.Bill = side
	if e != nil {
		mm.Ledger = &MismatchLedger{State: e.State, Amount: e.Amount, EventID: e.EventID}
	}
	return mt.mismatch(ctx, mm, rowID(row))
}

// ledgerOnly finds the day's ledger entries no bill row matched. A payment
// is missing from the bill. A refund may have been applied for the day
// before and finished on this day: it is looked for in the previous day's
// refund bill before it is called missing.
func (mt *matcher) ledgerOnly(ctx context.Context) error {
	b := mt.b
	slices.Sort(mt.seen)
	mt.seen = slices.Compact(mt.seen)
	n, err := mt.store.LedgerLen(ctx, b.m.MchID, b.day)
	if err != nil {
		return fmt.Errorf("reading the ledger: %w", err)
	}
	if n == int64(len(mt.seen)) {
		return nil // every entry was matched to a row
	}
	refunds := map[string]tracking.Entry{}
	err = mt.store.ScanLedger(ctx, b.m.MchID, b.day, func(id string, e tracking.Entry) error {
		if _, ok := slices.BinarySearch(mt.seen, maphash.String(mt.seed, id)); ok {
			return nil
		}
		if e.OutRefundNo != "" {
			refunds[id] = e
			return nil
		}
		return mt.mismatch(ctx, Mismatch{Kind: MismatchMissingInBill, BillDate: b.res.Date, TransactionID: id,
			OutTradeNo: e.OutTradeNo, Ledger: &MismatchLedger{State: e.State, Amount: e.Amount, EventID: e.EventID}}, id)
	})
	if err != nil {
		return fmt.Errorf("reading the ledger: %w", err)
	}
	if len(refunds) == 0 {
		return nil
	}
	found, err := mt.previousDayRefunds(ctx, refunds)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(refunds))
	for id := range refunds {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		e := refunds[id]
		if row, ok := found[id]; ok {
			if row.Refund == e.Amount {
				b.res.Matched++
				continue
			}
			err = mt.mismatch(ctx, Mismatch{Kind: MismatchAmount, BillDate: b.res.Date, RefundID: id, OutRefundNo: e.OutRefundNo,
				TransactionID: row.TransactionID, OutTradeNo: row.OutTradeNo,
				Bill:   &MismatchBill{Line: row.Line, TradeTime: row.TradeTime.In(wxpay.ChinaTime()).Format(time.RFC3339), State: wxpay.NormalizeRefundStatus(row.RefundStatus), Amount: row.Refund},
				Ledger: &MismatchLedger{State: e.State, Amount: e.Amount, EventID: e.EventID}}, id)
		} else {
			err = mt.mismatch(ctx, Mismatch{Kind: MismatchMissingInBill, BillDate: b.res.Date, RefundID: id, OutRefundNo: e.OutRefundNo,
				Ledger: &MismatchLedger{State: e.State, Amount: e.Amount, EventID: e.EventID}}, id)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// previousDayRefunds fetches the refund bill of the day before (verified,
// read, not kept) and returns its rows of the wanted refund ids.
func (mt *matcher) previousDayRefunds(ctx context.Context, want map[string]tracking.Entry) (map[string]wxpay.TradeBillRow, error) {
	b := mt.b
	prev := b.day.AddDate(0, 0, -1)
	dir := filepath.Join(b.opts.Dir, b.m.MchID)
	name := fmt.Sprintf(".%s_%s_%s.previous-day-refunds.csv", BillTrade, wxpay.BillTypeRefund, prev.Format("2006-01-02"))
	path, _, err := b.fetch(ctx, dir, name, func(ctx context.Context) (*wxpay.Bill, error) {
		return b.m.Client.ApplyTradeBill(ctx, wxpay.TradeBillRequest{Date: prev, BillType: wxpay.BillTypeRefund, Gzip: true})
	})
	found := map[string]wxpay.TradeBillRow{}
	switch {
	case errors.Is(err, errEmptyDay):
		return found, nil
	case err != nil:
		return nil, fmt.Errorf("fetching the previous day's refund bill, to look for %d refund(s) of the ledger that are not in this day's bill: %w", len(want), err)
	}
	defer os.Remove(path)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := wxpay.NewTradeBillReader(bufio.NewReaderSize(f, 256<<10))
	for {
		row, err := tr.Next()
		if err == io.EOF {
			return found, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the previous day's refund bill: %w", err)
		}
		if _, ok := want[row.RefundID]; ok && row.RefundID != "" {
			found[row.RefundID] = row
		}
	}
}

// mismatch counts a discrepancy, logs it and publishes it as
// bill.mismatch while under MaxMismatchEvents. Its id is derived from the
// day, the kind and the id, so that a repeated run publishes the same
// event (a duplicate, suppressed).
func (mt *matcher) mismatch(ctx context.Context, mm Mismatch, id string) error {
	b := mt.b
	b.res.Mismatches[mm.Kind]++
	if b.res.Published >= int64(b.opts.MaxMismatchEvents) {
		if b.res.Published == int64(b.opts.MaxMismatchEvents) && b.res.MismatchCount() == b.res.Published+1 {
			b.log.Warn().Int("max_mismatch_events", b.opts.MaxMismatchEvents).
				Msg("more discrepancies than bill.mismatch events allowed per bill: the rest are only counted (is the tracker handler running?)")
		}
		return nil
	}
	b.log.Warn().Str("kind", mm.Kind).Str("id", id).Str("out_trade_no", mm.OutTradeNo).Str("out_refund_no", mm.OutRefundNo).Msg("bill mismatch")
	eid := fmt.Sprintf("rc-bill-mismatch-%s-%s-%s-%s", b.m.MchID, b.day.Format("20060102"), mm.Kind, id)
	if err := b.publish(ctx, events.EventBillMismatch, eid, "bill mismatch: "+mm.Kind, mm); err != nil {
		return fmt.Errorf("publishing bill.mismatch: %w", err)
	}
	b.res.Published++
	return nil
}

// publish publishes one of the reconciler's bill events with id, dedupe
// key event:<id>.
func (b *billRun) publish(ctx context.Context, eventType, id, summary string, resource any) error {
	raw, err := json.Marshal(resource)
	if err != nil {
		return err
	}
	now := b.r.cfg.Now()
	_, err = b.r.pub.Publish(ctx, events.Envelope{
		ID:           id,
		DedupeKey:    events.EventKey(id),
		EventType:    eventType,
		MchID:        b.m.MchID,
		Source:       events.SourceReconciler,
		CreateTime:   now.In(wxpay.ChinaTime()).Format(time.RFC3339),
		ReceivedAt:   now,
		Summary:      summary,
		OriginalType: "bill",
		Resource:     raw,
	})
	return err
}
