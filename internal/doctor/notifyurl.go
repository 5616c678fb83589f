package doctor

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// MaxNotifyURLLength is the longest notify_url WeChat Pay accepts.
const MaxNotifyURLLength = 256

// MchIDPlaceholder in a notify URL stands for each merchant's id, so that
// one setting covers a merchants file.
const MchIDPlaceholder = "{mchid}"

// CheckNotifyURL checks the notify_url a merchant gives WeChat Pay: https
// (http only warns), a public host name, no port, no query, no fragment, no
// doubled slashes in the path, at most 256 characters, and a path ending
// in /notify/<mchid> (the route of this ingress; otherwise a warning).
// singleMerchant says whether the ingress serves exactly one merchant, for
// which it also answers on /notify. {mchid} in raw is replaced by mchid.
func CheckNotifyURL(raw, mchid string, singleMerchant bool) Result {
	r := Result{Name: "notify_url", MchID: mchid}
	if raw == "" {
		r.Status = Warn
		r.Message = "not checked: no notify_url given"
		r.Fix = "run the doctor with --notify-url (or WXPAY_NOTIFY_URL) set to the notify_url your payment code sends WeChat Pay, for example https://pay.example.com/notify/" + mchid
		return r
	}
	raw = strings.ReplaceAll(raw, MchIDPlaceholder, mchid)
	var fails, warns, failFixes, warnFixes []string
	bad := func(msg, fix string) { fails = append(fails, msg); failFixes = append(failFixes, fix) }
	warn := func(msg, fix string) { warns = append(warns, msg); warnFixes = append(warnFixes, fix) }

	u, err := url.Parse(raw)
	switch {
	case err != nil:
		bad(fmt.Sprintf("%q is not a URL", raw), "write it as https://<public host name>/notify/"+mchid)
	case u.Scheme == "http":
		warn("it uses http://: WeChat Pay wants https:// for notify_url, and notifications would cross the internet unencrypted",
			"serve the ingress behind TLS (a load balancer or reverse proxy with a certificate) and use https://")
	case u.Scheme != "https":
		bad(fmt.Sprintf("scheme %q: WeChat Pay only calls https:// URLs", u.Scheme), "use https://<public host name>/notify/"+mchid)
	}
	if err == nil {
		checkHost(u, bad)
		if u.Port() != "" {
			bad("it has a port ("+u.Port()+"): WeChat Pay only calls the default port",
				"drop the port and serve https on 443 (a load balancer or reverse proxy in front of the ingress)")
		}
		if u.User != nil {
			bad("it carries a user name or password", "remove the credentials: WeChat Pay authenticates itself by signing each notification")
		}
		if u.RawQuery != "" || u.ForceQuery {
			bad("it has a query string: WeChat Pay refuses a notify_url with parameters",
				"drop the ?…; this ingress needs none: the merchant id is in the path /notify/"+mchid)
		}
		if u.Fragment != "" || strings.Contains(raw, "#") {
			bad("it has a fragment (#…)", "drop the #… part")
		}
		if strings.Contains(u.Path, "//") {
			bad("its path "+u.Path+" has a doubled slash", "write the path with single slashes, /notify/"+mchid)
		}
	}
	if len(raw) > MaxNotifyURLLength {
		bad(fmt.Sprintf("it is %d characters long, more than the %d WeChat Pay accepts", len(raw), MaxNotifyURLLength),
			"use a shorter host name or path")
	}
	if err == nil && !strings.Contains(u.Path, "//") {
		want := "/notify/" + mchid
		switch {
		case strings.HasSuffix(u.Path, want):
		case singleMerchant && strings.HasSuffix(u.Path, "/notify"):
			warn("its path ends in /notify, which this ingress accepts only while it serves a single merchant",
				"end it in "+want+", so that adding a merchant later does not change the URL")
		default:
			warn("its path "+quotePath(u.Path)+" does not end in "+want+", the route of this ingress: unless a proxy rewrites it, notifications are answered 404",
				"end the path in "+want)
		}
	}

	shown := raw
	if err == nil && u.User != nil {
		shown = u.Redacted()
	}
	switch {
	case len(fails) > 0:
		r.Status = Fail
		r.Message = shown + ": " + strings.Join(append(fails, warns...), "; ")
	case len(warns) > 0:
		r.Status = Warn
		r.Message = shown + ": " + strings.Join(warns, "; ")
	default:
		r.Status = OK
		r.Message = raw + " is a valid notify_url for this ingress"
	}
	r.Fix = strings.Join(append(failFixes, warnFixes...), "; ")
	return r
}

// checkHost fails a host WeChat Pay cannot reach: an IP address, localhost,
// a .local or .internal name, or a name without a dot.
func checkHost(u *url.URL, bad func(msg, fix string)) {
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	const fix = "use the public DNS name of the ingress (for example pay.example.com), reachable from the internet"
	switch {
	case host == "":
		bad("it has no host name", fix)
	case net.ParseIP(host) != nil:
		bad("its host "+host+" is an IP address: WeChat Pay wants a domain name", fix)
	case host == "localhost" || strings.HasSuffix(host, ".localhost"):
		bad("its host "+host+" is this machine, which WeChat Pay cannot reach", fix)
	case strings.HasSuffix(host, ".local") || strings.HasSuffix(host, ".internal"):
		bad("its host "+host+" is a private name, which WeChat Pay cannot resolve", fix)
	case !strings.Contains(host, "."):
		bad("its host "+host+" has no dot: it is not a public domain name", fix)
	}
}

func quotePath(p string) string {
	if p == "" {
		return "(empty)"
	}
	return p
}
