package config

import (
	"flag"
	"net/url"
)

// URL registers a string flag for a URL that may hold credentials in its
// user info or its query (a receiver's token, as FORWARD_URL often has). It
// is String, except that --help shows the default from env with the user
// info and the query masked.
func URL(fs *flag.FlagSet, getenv func(string) string, name, env, def, usage string) *string {
	p := new(string)
	*p = lookup(getenv, env, def)
	fs.Var((*maskedURLValue)(p), name, withEnv(usage, env))
	return p
}

// maskedURLValue is a string flag.Value shown with maskURL.
type maskedURLValue string

func (v *maskedURLValue) String() string {
	if v == nil {
		return ""
	}
	return maskURL(string(*v))
}

func (v *maskedURLValue) Set(s string) error { *v = maskedURLValue(s); return nil }

// maskURL replaces the user info and the query of a URL with xxxxx and
// drops its fragment.
func maskURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = "xxxxx", false
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}
