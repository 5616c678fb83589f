package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a loopback TCP port nobody listens on right now, chosen
// below the kernel's ephemeral range: a port from that range (what a :0
// listener gets) can be taken by any outgoing connection on the machine
// before the process meant to listen on it starts (seen in CI: a
// nats-server failing with "address already in use"). No port is handed
// out twice in one test binary.
func FreePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	ports.Lock()
	defer ports.Unlock()
	for range 1000 {
		p := MinPort + rand.IntN(low-MinPort)
		if ports.used[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		ports.used[p] = true
		return p
	}
	t.Fatalf("no free loopback port between %d and %d", MinPort, low)
	return 0
}

// MinPort is the lowest port FreePort picks: above the well-known and
// registered ports of common services.
const MinPort = 10000

// ports is what FreePort handed out.
var ports = struct {
	sync.Mutex
	used map[int]bool
}{used: map[int]bool{}}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// ip_local_port_range; 32768 where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > MinPort+1000 {
				return n
			}
		}
	}
	return 32768
}
