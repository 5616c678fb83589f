package config

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/wxpay-notify/wxpay-notify/pkg/wxpay"
)

// MerchantClient is a configured merchant and its WeChat Pay client.
type MerchantClient struct {
	Merchant Merchant
	Client   *wxpay.Client
	// downloads: the client downloads platform certificates, which
	// StartCertificateRefresh loads and keeps fresh.
	downloads bool
}

// NewClients builds the WeChat Pay client of each merchant, in order:
// WxpayConfig (which reads the key files), then wxpay.NewClient. Nothing
// is fetched yet (see StartCertificateRefresh). An error names the
// merchant.
func NewClients(merchants []Merchant) ([]MerchantClient, error) {
	out := make([]MerchantClient, 0, len(merchants))
	for _, m := range merchants {
		cfg, err := m.WxpayConfig()
		if err != nil {
			return nil, fmt.Errorf("merchant %s: %w", m.MchID, err)
		}
		c, err := wxpay.NewClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("merchant %s: %w", m.MchID, err)
		}
		out = append(out, MerchantClient{Merchant: m, Client: c, downloads: cfg.DownloadCertificates})
	}
	return out, nil
}

// StartCertificateRefresh downloads the platform certificates of every
// client that uses them, one merchant after the other, and then keeps them
// fresh in the background until ctx ends. A failed download is logged, not
// returned: the refresher retries, and notifications signed by a serial
// not yet known are answered 503 meanwhile.
func StartCertificateRefresh(ctx context.Context, clients []MerchantClient, log zerolog.Logger) {
	for _, mc := range clients {
		if !mc.downloads {
			continue
		}
		c, mlog := mc.Client, log.With().Str("mchid", mc.Merchant.MchID).Logger()
		if err := c.RefreshCertificates(ctx); err != nil {
			mlog.Error().Err(err).Str("check", "the merchant key and serial, outbound HTTPS to the WeChat Pay API, or configure the WeChat Pay public key").Msg("platform certificate download failed")
		} else {
			mlog.Info().Strs("keys", c.KeyIDs()).Msg("platform certificates loaded")
		}
		go c.RunCertificateRefresh(ctx, func(err error) {
			mlog.Error().Err(err).Msg("platform certificate refresh failed; keeping the certificates held")
		})
	}
}
