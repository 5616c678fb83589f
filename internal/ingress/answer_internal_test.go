package ingress

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// However long the message of a refusal, the answer carries a bounded
// part of it, in either format.
func TestWriteAnswerBoundsTheMessage(t *testing.T) {
	long := "refused: " + strings.Repeat("x", 900<<10)
	for _, format := range []string{"v3", "v2"} {
		rec := httptest.NewRecorder()
		writeAnswer(rec, result{format: format, status: http.StatusBadRequest, message: long})
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", format, rec.Code)
		}
		if n := rec.Body.Len(); n > 1<<10 {
			t.Errorf("%s: answer of %d bytes", format, n)
		}
		if !strings.Contains(rec.Body.String(), "refused: xxx") {
			t.Errorf("%s: the answer lost the message's start: %.200s", format, rec.Body)
		}
	}
}
