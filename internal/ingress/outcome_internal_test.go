package ingress

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Every outcome answered 5xx answers a fixed message, never the error's
// text: what a dependency or the configuration says (internal addresses,
// dial errors, file names) stays in the log line.
func TestServerErrorAnswersAreFixed(t *testing.T) {
	const detail = `Get "http://10.0.0.1:8080/v3/certificates": dial tcp 10.0.0.1:8080: connect: connection refused`
	all := append([]*outcome{outOK, outDuplicate, outBusy, outTooLarge, outSlowUpload, outPublishFailed, outInternal}, classes...)
	for _, o := range all {
		err := fmt.Errorf("%s: %s", o.label, detail)
		if o.err != nil {
			err = fmt.Errorf("%w: %s", o.err, detail)
		}
		res := result{}.fail(o, err)
		if res.status < http.StatusInternalServerError {
			continue
		}
		if strings.Contains(res.message, "http://") || strings.Contains(res.message, "dial") || res.message == "" {
			t.Errorf("outcome %s (%d) answers %q", o.label, res.status, res.message)
		}
		if res.err != err {
			t.Errorf("outcome %s: the error for the log line is lost", o.label)
		}
	}
}
