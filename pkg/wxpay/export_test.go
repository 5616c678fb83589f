package wxpay

// SetRefreshWaitHook makes c call f each time a caller starts waiting for a
// certificate download that is already running, so that tests can tell
// when every caller has reached that point.
func SetRefreshWaitHook(c *Client, f func()) {
	c.certs.mu.Lock()
	c.certs.waitHook = f
	c.certs.mu.Unlock()
}
