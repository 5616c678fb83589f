package config

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/internal/testenv"
	"github.com/wxpay-notify/wxpay-notify/pkg/events"
	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay/wxpaytest"
)

func TestConnectRedis(t *testing.T) {
	t.Parallel()
	rdb, err := Common{RedisURL: "redis://:secret@127.0.0.1:6390/3"}.ConnectRedis()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if o := rdb.(*redis.Client).Options(); o.Addr != "127.0.0.1:6390" || o.DB != 3 || o.Password != "secret" {
		t.Fatalf("got addr %s db %d, want 127.0.0.1:6390 db 3 with the password", o.Addr, o.DB)
	}
	// Sentinel: master_name; Cluster: further nodes as addr parameters.
	sentinel, err := Common{RedisURL: "redis://:pw@127.0.0.1:26379/2?master_name=mymaster&addr=127.0.0.1:26380"}.ConnectRedis()
	if err != nil {
		t.Fatal(err)
	}
	defer sentinel.Close()
	if _, ok := sentinel.(*redis.Client); !ok || RedisMode("redis://h:26379?master_name=m") != RedisSentinel {
		t.Fatalf("a master_name URL gave %T, want a failover *redis.Client", sentinel)
	}
	cluster, err := Common{RedisURL: "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002"}.ConnectRedis()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cc, ok := cluster.(*redis.ClusterClient)
	if !ok || len(cc.Options().Addrs) != 3 || RedisMode("redis://h:6379/0") != RedisSingle {
		t.Fatalf("an addr URL gave %T, want a *redis.ClusterClient of 3 seeds", cluster)
	}
	if _, err := (Common{RedisURL: "redis://h:7000?addr=h:7001&bogus=1"}).ConnectRedis(); err == nil || !strings.Contains(err.Error(), "Cluster") {
		t.Fatalf("got %v, want an error naming the Cluster form", err)
	}
	if _, err := (Common{RedisURL: "http://x"}).ConnectRedis(); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("got %v, want an error naming REDIS_URL", err)
	}
}

// A merchant that downloads platform certificates has them once
// StartCertificateRefresh returned; a public-key merchant asks for none.
func TestNewClientsAndCertificateRefresh(t *testing.T) {
	t.Parallel()
	certSrv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModeCertificate})
	cm := certSrv.AddMerchant(wxpaytest.MerchantOptions{})
	pubSrv := wxpaytest.NewServer(t, wxpaytest.Options{Mode: wxpaytest.ModePublicKey})
	pm := pubSrv.AddMerchant(wxpaytest.MerchantOptions{})
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	merchants := []Merchant{
		{MchID: cm.MchID, APIv3Key: cm.APIv3Key, PrivateKeyFile: write("cert_key.pem", wxpaytest.PrivateKeyPEM(cm.PrivateKey)),
			CertSerialNo: cm.CertSerialNo, APIBase: certSrv.URL()},
		{MchID: pm.MchID, APIv3Key: pm.APIv3Key, PublicKeyFile: write("pub_key.pem", wxpaytest.PublicKeyPEM(&pubSrv.PublicKey().PrivateKey.PublicKey)),
			PublicKeyID: pubSrv.PublicKey().ID, APIBase: pubSrv.URL()},
	}
	clients, err := NewClients(merchants)
	if err != nil {
		t.Fatal(err)
	}
	if len(clients) != 2 || clients[0].Client.MchID() != cm.MchID || clients[1].Merchant.MchID != pm.MchID {
		t.Fatalf("got %d clients, want one per merchant in order", len(clients))
	}
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	StartCertificateRefresh(ctx, clients, zerolog.New(zerolog.SyncWriter(&logs)))
	if got := clients[0].Client.KeyIDs(); len(got) == 0 {
		t.Fatalf("certificate merchant: no platform certificate loaded\n%s", logs.String())
	}
	if n := pubSrv.Requests("GET /v3/certificates"); n != 0 {
		t.Fatalf("public-key merchant: %d certificate downloads, want none", n)
	}
	if !strings.Contains(logs.String(), "platform certificates loaded") || strings.Count(logs.String(), "\n") != 1 {
		t.Fatalf("want one line, for the certificate merchant:\n%s", logs.String())
	}

	bad := merchants[1]
	bad.PublicKeyFile = filepath.Join(dir, "missing.pem")
	if _, err := NewClients([]Merchant{merchants[0], bad}); err == nil || !strings.Contains(err.Error(), "merchant "+pm.MchID) {
		t.Fatalf("got %v, want an error naming merchant %s", err, pm.MchID)
	}
}

func TestEnsureStreams(t *testing.T) {
	nt := testenv.StartNATS(t)
	_, js := testenv.Connect(t, nt.URL)
	var logs bytes.Buffer
	log := zerolog.New(zerolog.SyncWriter(&logs))
	if err := EnsureStreams(context.Background(), js, events.StreamConfig{}, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "streams WXPAY and WXPAY_DLQ ready") {
		t.Fatalf("no ready line:\n%s", logs.String())
	}
	logs.Reset()
	if err := EnsureStreams(context.Background(), js, events.StreamConfig{Replicas: -1}, log); err == nil {
		t.Fatal("a refused configuration: got nil, want its error")
	}
	if !strings.Contains(logs.String(), "STREAM_REPLICAS") {
		t.Fatalf("the refusal's line does not name the settings:\n%s", logs.String())
	}
}
