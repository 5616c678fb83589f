package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

// Keys is the key material of one benchmark merchant: what the ingress is
// configured with, plus the private half of the WeChat Pay "public key"
// that only the generator holds (it plays WeChat).
type Keys struct {
	MchID        string
	APIv3Key     string
	PublicKeyID  string
	CertSerialNo string
	// Platform signs notifications (the WeChat Pay public key's private half).
	Platform *rsa.PrivateKey
}

// Files in a keys directory.
const (
	fileMerchantKey = "apiclient_key.pem"
	filePublicKey   = "pub_key.pem"
	filePlatformKey = "platform_private_key.pem" // generator only, never given to the ingress
	fileMerchant    = "merchant.json"
	fileEnv         = "ingress.env"
)

type merchantFile struct {
	MchID        string `json:"mchid"`
	APIv3Key     string `json:"apiv3_key"`
	PublicKeyID  string `json:"public_key_id"`
	CertSerialNo string `json:"cert_serial_no"`
}

// makeKeys creates a merchant on a public-key-mode fake platform and writes
// the ingress's key files and env file into dir. An existing, complete dir
// is reused so that repeated runs keep the same merchant.
func makeKeys(dir string) (*Keys, error) {
	if k, err := loadKeys(dir); err == nil {
		return k, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	srv := wxpaytest.NewServer(nil, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	defer srv.Close() // not needed after this: public-key mode never calls the API
	m := srv.AddMerchant(wxpaytest.MerchantOptions{})
	pk := srv.PublicKey()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	mf, _ := json.MarshalIndent(merchantFile{m.MchID, m.APIv3Key, pk.ID, m.CertSerialNo}, "", "  ")
	env := strings.Join([]string{
		"WXPAY_MCHID=" + m.MchID,
		"WXPAY_APIV3_KEY=" + m.APIv3Key,
		"WXPAY_PRIVATE_KEY_FILE=" + filepath.Join(abs, fileMerchantKey),
		"WXPAY_CERT_SERIAL_NO=" + m.CertSerialNo,
		"WXPAY_PUBLIC_KEY_FILE=" + filepath.Join(abs, filePublicKey),
		"WXPAY_PUBLIC_KEY_ID=" + pk.ID,
		"WXPAY_API_BASE=http://127.0.0.1:1", // never called in public-key mode
		"",
	}, "\n")
	for _, f := range []struct {
		name string
		data []byte
	}{
		{fileMerchantKey, wxpaytest.PrivateKeyPEM(m.PrivateKey)},
		{filePublicKey, wxpaytest.PublicKeyPEM(&pk.PrivateKey.PublicKey)},
		{filePlatformKey, wxpaytest.PrivateKeyPEM(pk.PrivateKey)},
		{fileMerchant, append(mf, '\n')},
		{fileEnv, []byte(env)},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return loadKeys(dir)
}

func loadKeys(dir string) (*Keys, error) {
	b, err := os.ReadFile(filepath.Join(dir, fileMerchant))
	if err != nil {
		return nil, err
	}
	var mf merchantFile
	if err := json.Unmarshal(b, &mf); err != nil {
		return nil, fmt.Errorf("%s: %w", fileMerchant, err)
	}
	pb, err := os.ReadFile(filepath.Join(dir, filePlatformKey))
	if err != nil {
		return nil, err
	}
	priv, err := wxpay.LoadPrivateKey(pb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filePlatformKey, err)
	}
	for _, f := range []string{fileMerchantKey, filePublicKey, fileEnv} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return nil, err
		}
	}
	return &Keys{MchID: mf.MchID, APIv3Key: mf.APIv3Key, PublicKeyID: mf.PublicKeyID, CertSerialNo: mf.CertSerialNo, Platform: priv}, nil
}

// Note is one signed notification, ready to post.
type Note struct {
	Timestamp, Nonce, Signature, Serial string
	Body                                []byte
}

// Corpus is a set of distinct signed notifications for one merchant.
type Corpus struct {
	MchID string
	// Timestamp is the Wechatpay-Timestamp every note carries (unix s).
	Timestamp int64
	Notes     []Note
}

// Window is when the ingress accepts the corpus's timestamps (±5 min).
func (c *Corpus) Window() (from, to time.Time) {
	t := time.Unix(c.Timestamp, 0)
	return t.Add(-wxpay.DefaultTimestampWindow), t.Add(wxpay.DefaultTimestampWindow)
}

// generate builds n distinct TRANSACTION.SUCCESS notifications signed with
// k.Platform on workers goroutines. Every note carries the timestamp ts:
// signing is the slow part, so the timestamps are set ahead of the clock and
// the whole corpus stays acceptable for ts±5 min, whenever it was signed.
func generate(k *Keys, n, workers int, ts time.Time, progress io.Writer) (*Corpus, error) {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	var run [5]byte
	rand.Read(run[:])
	runID := hex.EncodeToString(run[:]) // 10 hex digits: distinct across runs
	runNum, _ := strconv.ParseUint(runID, 16, 64)
	c := &Corpus{MchID: k.MchID, Timestamp: ts.Unix(), Notes: make([]Note, n)}
	tsStr := strconv.FormatInt(c.Timestamp, 10)
	created := time.Now().In(wxpay.ChinaTime()).Truncate(time.Second)

	var done atomic.Int64
	var firstErr error
	var errOnce sync.Once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			var buf bytes.Buffer
			for i := w; i < n; i += workers {
				note, err := buildNote(k, &buf, runID, runNum, i, tsStr, created)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				c.Notes[i] = note
				done.Add(1)
			}
		})
	}
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				el := time.Since(start)
				rate := float64(d) / el.Seconds()
				eta := time.Duration(float64(int64(n)-d) / rate * float64(time.Second))
				fmt.Fprintf(progress, "  signed %d/%d (%.0f/s, %s elapsed, about %s left)\n", d, n, rate, el.Round(time.Second), eta.Round(time.Second))
			}
		}
	}()
	wg.Wait()
	close(stop)
	if firstErr != nil {
		return nil, firstErr
	}
	el := time.Since(start)
	fmt.Fprintf(progress, "  signed %d notifications in %s (%.0f/s on %d workers, %.2f ms CPU each)\n",
		n, el.Round(100*time.Millisecond), float64(n)/el.Seconds(), workers, el.Seconds()*float64(workers)*1000/float64(max(n, 1)))
	if n > 0 {
		if err := selfCheck(k, c.Notes[0]); err != nil {
			return nil, fmt.Errorf("the generated notifications do not verify as the ingress verifies them: %w", err)
		}
	}
	return c, nil
}

// buildNote makes notification i: a realistic payment resource with its own
// out_trade_no and transaction_id (so its own dedupe_key), encrypted with
// the APIv3 key, wrapped like WeChat's body (as wxpaytest.NewNotification
// does) and signed over "timestamp\nnonce\nbody\n".
func buildNote(k *Keys, buf *bytes.Buffer, runID string, runNum uint64, i int, ts string, created time.Time) (Note, error) {
	txn := fmt.Sprintf("4200%012d%012d", runNum%1e12, i)          // 28 digits, like WeChat's
	otn := fmt.Sprintf("BENCH%s%014d", strings.ToUpper(runID), i) // 29 characters
	total := 100 + i%100000                                       // fen
	success := created.Add(-time.Duration(i%3) * time.Second).Format(time.RFC3339)
	resource := fmt.Sprintf(`{"mchid":"%s","appid":"wxd678efh567hg6787","out_trade_no":"%s","transaction_id":"%s","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"","success_time":"%s","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":%d,"payer_total":%d,"currency":"CNY","payer_currency":"CNY"}}`,
		k.MchID, otn, txn, success, total, total)
	rnonce := randomString(12)
	ct, err := wxpaytest.EncryptResource(k.APIv3Key, rnonce, "transaction", []byte(resource))
	if err != nil {
		return Note{}, err
	}
	env := wxpay.Notification{ID: uuidLike(), CreateTime: created.Format(time.RFC3339), ResourceType: wxpay.ResourceTypeEncrypted,
		EventType: wxpay.EventTransactionSuccess, Summary: "支付成功",
		Resource: wxpay.EncryptedResource{OriginalType: "transaction", Algorithm: wxpay.AlgorithmAEADAES256GCM, Ciphertext: ct, AssociatedData: "transaction", Nonce: rnonce}}
	buf.Reset()
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(env); err != nil {
		return Note{}, err
	}
	body := bytes.Clone(bytes.TrimRight(buf.Bytes(), "\n"))
	nonce := randomString(32)
	msg := make([]byte, 0, len(ts)+len(nonce)+len(body)+3)
	msg = append(append(append(append(append(append(msg, ts...), '\n'), nonce...), '\n'), body...), '\n')
	sig, err := wxpay.SignMessage(k.Platform, msg)
	if err != nil {
		return Note{}, err
	}
	return Note{Timestamp: ts, Nonce: nonce, Signature: sig, Serial: k.PublicKeyID, Body: body}, nil
}

// selfCheck parses one note with a client configured as the ingress's
// (public-key mode), so a corpus that the ingress would reject fails here,
// before a long run.
func selfCheck(k *Keys, n Note) error {
	c, err := wxpay.NewClient(wxpay.Config{MchID: k.MchID, APIv3Key: k.APIv3Key, PublicKey: &k.Platform.PublicKey,
		PublicKeyID: k.PublicKeyID, BaseURL: "http://127.0.0.1:1", TimestampWindow: 24 * time.Hour})
	if err != nil {
		return err
	}
	_, err = c.ParseNotification(context.Background(), n.header(), n.Body)
	return err
}

// header is the header set WeChat sends with a notification.
func (n *Note) header() http.Header {
	return http.Header{
		"Content-Type":             {"application/json"},
		"User-Agent":               {"Mozilla/4.0"},
		"Wechatpay-Timestamp":      {n.Timestamp},
		"Wechatpay-Nonce":          {n.Nonce},
		"Wechatpay-Signature":      {n.Signature},
		"Wechatpay-Serial":         {n.Serial},
		"Wechatpay-Signature-Type": {wxpay.SignatureTypeRSA},
	}
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

func uuidLike() string {
	var b [16]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Corpus file: the magic line, then uvarint-length-prefixed fields: mchid,
// the decimal timestamp, the decimal count, then per note its timestamp,
// nonce, signature, serial and body.
const corpusMagic = "wxpay-ingressload corpus v1\n"

func writeCorpus(path string, c *Corpus) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(corpusMagic)
	put := func(b []byte) {
		var l [binary.MaxVarintLen64]byte
		w.Write(l[:binary.PutUvarint(l[:], uint64(len(b)))])
		w.Write(b)
	}
	put([]byte(c.MchID))
	put([]byte(strconv.FormatInt(c.Timestamp, 10)))
	put([]byte(strconv.Itoa(len(c.Notes))))
	for i := range c.Notes {
		n := &c.Notes[i]
		put([]byte(n.Timestamp))
		put([]byte(n.Nonce))
		put([]byte(n.Signature))
		put([]byte(n.Serial))
		put(n.Body)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readCorpus(path string) (*Corpus, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	magic := make([]byte, len(corpusMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != corpusMagic {
		return nil, fmt.Errorf("%s is not an ingressload corpus", path)
	}
	get := func() ([]byte, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, err
		}
		if l > 1<<20 {
			return nil, errors.New("field over 1 MiB")
		}
		b := make([]byte, l)
		_, err = io.ReadFull(r, b)
		return b, err
	}
	var head [3][]byte
	for i := range head {
		if head[i], err = get(); err != nil {
			return nil, fmt.Errorf("%s: header: %w", path, err)
		}
	}
	c := &Corpus{MchID: string(head[0])}
	if c.Timestamp, err = strconv.ParseInt(string(head[1]), 10, 64); err != nil {
		return nil, fmt.Errorf("%s: timestamp: %w", path, err)
	}
	n, err := strconv.Atoi(string(head[2]))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s: bad count", path)
	}
	c.Notes = make([]Note, n)
	for i := range c.Notes {
		var fields [5][]byte
		for j := range fields {
			if fields[j], err = get(); err != nil {
				return nil, fmt.Errorf("%s: note %d: %w", path, i, err)
			}
		}
		c.Notes[i] = Note{string(fields[0]), string(fields[1]), string(fields[2]), string(fields[3]), fields[4]}
	}
	return c, nil
}
