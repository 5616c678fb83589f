package ingress

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// refuse answers as soon as the request's head has ended, also when
// "\r\n\r\n" arrives split across reads, rather than after refuseTimeout.
func TestRefuseFindsHeadEndAcrossReads(t *testing.T) {
	head := "POST /notify/1230000109 HTTP/1.1\r\nHost: ingress\r\nX-Padding: " + string(bytes.Repeat([]byte("p"), 2000)) + "\r\n\r\n"
	for split := len(head) - 4; split < len(head); split++ {
		server, client := net.Pipe()
		go refuse(server)
		start := time.Now()
		client.SetDeadline(start.Add(5 * time.Second))
		if _, err := client.Write([]byte(head[:split])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the two parts come in two reads
		if _, err := client.Write([]byte(head[split:])); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(busyAnswer))
		if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, busyAnswer) {
			t.Fatalf("split at %d: got %q, %v", split, got, err)
		}
		if took := time.Since(start); took > refuseTimeout/2 {
			t.Fatalf("split at %d: answered after %s: the end of the head was missed", split, took)
		}
		client.Close()
	}
}
