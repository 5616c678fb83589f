// Package config turns environment variables and command-line flags into
// the settings every command shares (NATS, Redis, admin listener, logging)
// and the list of WeChat Pay merchants, validates them, and builds the
// wxpay.Config and zerolog.Logger the commands need.
//
// # Environment and flags
//
// Every setting is an environment variable and a flag of the same meaning
// (README lists them). A command builds one flag.FlagSet; the
// helpers here register each flag with its default taken from the
// environment, falling back to the documented default, and name the variable in
// the usage text, so --help lists both:
//
//	fs := flag.NewFlagSet("reconciler orders", flag.ContinueOnError)
//	common := config.RegisterCommon(fs, getenv)
//	merchants := config.RegisterMerchants(fs, getenv)
//	staleAfter := config.Duration(fs, getenv, "stale-after", "RECONCILE_STALE_AFTER", 5*time.Minute,
//		"query pending orders older than this")
//	if err := fs.Parse(args); err != nil {
//		return err // usage error
//	}
//	ms, merr := merchants.Resolve()
//	if err := errors.Join(config.Err(fs), common.Validate(), merr); err != nil {
//		return err
//	}
//
// Parsing overrides the defaults, so a flag wins over the environment. A
// getenv of nil means an empty environment; commands pass os.Getenv and
// tests pass a map lookup.
//
// Environment values are trimmed of surrounding white space (secrets
// excepted). An environment value that does not parse as the flag's type
// (RECONCILE_STALE_AFTER=abc) is not silently replaced by the default: Err
// reports it, naming the variable, unless the flag was given on the command
// line (then the environment is not used).
//
// # Secrets
//
// Secret values (WXPAY_APIV3_KEY, WXPAY_APIV2_KEY, a forwarding secret)
// never become flag defaults, because flag.PrintDefaults would print them in
// --help. They are registered with Secret and resolved after parsing, in
// this order: the flag (--apiv3-key), the file flag (--apiv3-key-file), the
// variable (WXPAY_APIV3_KEY), the file variable (WXPAY_APIV3_KEY_FILE).
// Giving both the value and the file at the same level is an error. One
// trailing newline is removed from a secret file. Prefer the variables or the
// files to the flags: a command line is visible to every local user.
//
// String and MarshalZerologObject of Common and Merchant mask secrets (keys
// show as "***(32)", passwords in NATS and Redis URLs as "xxxxx"), so the
// startup log line can carry the whole configuration. Merchant also masks in
// GoString and MarshalJSON. A command's Config that embeds Common inherits
// Common's String and MarshalZerologObject; it should define its own so
// that its other fields are shown too.
//
// # One merchant or several
//
// A single merchant is configured with the WXPAY_* variables. Several are
// listed in a file named by WXPAY_MERCHANTS_FILE (--merchants-file), in YAML
// or JSON (a file whose first non-blank character is '[' or '{' is read as
// JSON, anything else as YAML). The file is a list; each entry has the
// fields of the single-merchant variables, in snake_case:
//
//	# merchants.yaml
//	- mchid: "1230000109"                     # WXPAY_MCHID (digits)
//	  apiv3_key_file: /run/secrets/1230000109/apiv3_key   # or apiv3_key: "..." (32 bytes)
//	  previous_apiv3_keys: ["..."]            # older APIv3 keys during a rotation (optional)
//	  private_key_file: /run/secrets/1230000109/apiclient_key.pem
//	  cert_serial_no: 5157F09EFDC096DE15EBE81A47057A7232F1B8E1
//	  cert_file: /run/secrets/1230000109/apiclient_cert.pem   # optional; read only by ingress doctor
//	  public_key_file: /run/secrets/1230000109/pub_key.pem
//	  public_key_id: PUB_KEY_ID_0112300001092025010100000000000000
//	  platform_cert_dir: /var/cache/wxpay/1230000109   # optional
//	  apiv2_key_file: /run/secrets/1230000109/apiv2_key   # or apiv2_key; only for v2 XML notifications
//	  partner_mode: false                     # service provider (服务商) mode
//	  api_base: https://api.mch.weixin.qq.com # default
//	- mchid: "1900000001"
//	  apiv3_key_file: apiv3_key_1900000001    # relative: next to merchants.yaml
//	  public_key_file: pub_key_1900000001.pem
//	  public_key_id: PUB_KEY_ID_0119000000012025010100000000000000
//
// Unknown keys and duplicate mchids are errors. Relative paths are resolved
// against the directory of the merchants file. Quote keys and ids in YAML:
// an unquoted all-digit value is read as a number. The file replaces all the
// single-merchant settings, WXPAY_API_BASE and WXPAY_PARTNER_MODE included
// (write api_base and partner_mode in the file): setting both is an error
// that names them.
//
// # Verification keys
//
// A merchant verifies WeChat Pay's signatures with the WeChat Pay public key
// (WXPAY_PUBLIC_KEY_FILE and WXPAY_PUBLIC_KEY_ID, the only way for merchants
// onboarded since 2024), with platform certificates downloaded with the
// merchant private key (WXPAY_PRIVATE_KEY_FILE and WXPAY_CERT_SERIAL_NO), or
// with both during the migration. Certificates are downloaded when the
// private key is configured and either no public key is, or
// WXPAY_PLATFORM_CERT_DIR is set (the migration: configure the public key
// and keep the certificate cache). A public-key merchant that also has a
// private key, but no WXPAY_PLATFORM_CERT_DIR, does not download: such
// merchants have no platform certificates.
//
// # Wiring the parts
//
// What every command connects lives here too, so that each main (and a
// sandbox or a test) wires the same parts the same way:
//
//   - Common.ConnectNATS: the NATS connection and its JetStream context,
//     reconnecting forever;
//   - Common.ConnectRedis: the Redis client of REDIS_URL;
//   - EnsureStreams: the streams WXPAY and WXPAY_DLQ, retried while NATS is
//     not there yet, with their warnings logged;
//   - NewClients and StartCertificateRefresh: a wxpay.Client per merchant,
//     and the platform certificates of those that download them, loaded
//     and kept fresh.
//
// # Additions beyond the common settings
//
//   - WXPAY_APIV3_KEY_PREVIOUS: older APIv3 keys, comma separated, tried
//     after WXPAY_APIV3_KEY when decrypting (a key rotation). In a merchants
//     file: previous_apiv3_keys. It has no flag: it is a secret.
//   - WXPAY_CERT_FILE: the merchant API certificate (apiclient_cert.pem).
//     No command needs it; "ingress doctor" checks that the private key and
//     WXPAY_CERT_SERIAL_NO belong to it and that it has not expired. In a
//     merchants file: cert_file.
//   - Credentials inside NATS_URL and REDIS_URL are masked in logs and are
//     not shown as flag defaults.
//   - In a merchants file, relative paths are relative to the file.
package config
