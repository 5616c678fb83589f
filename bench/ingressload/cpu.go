package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// cpuSampler measures the CPU time of some processes, of this one and of
// the whole machine over the send window, from Linux /proc. Elsewhere it
// reports nothing.
type cpuSampler struct {
	names        []string
	pids         []string
	start, end   []float64 // seconds of CPU per pid, "self" last
	machineStart [2]float64
	machineEnd   [2]float64 // busy, total (seconds summed over cores)
	wallStart    time.Time
	wall         time.Duration
	cores        int
	ok           bool
}

func newCPUSampler(spec string) *cpuSampler {
	s := &cpuSampler{}
	for _, kv := range strings.Split(spec, ",") {
		name, pid, found := strings.Cut(strings.TrimSpace(kv), "=")
		if !found {
			continue
		}
		s.names = append(s.names, name)
		s.pids = append(s.pids, pid)
	}
	s.names = append(s.names, "generator")
	s.pids = append(s.pids, "self")
	s.wallStart = time.Now()
	s.start = s.sample()
	s.machineStart, s.cores, s.ok = machineCPU()
	return s
}

func (s *cpuSampler) stop() {
	s.wall = time.Since(s.wallStart)
	s.end = s.sample()
	s.machineEnd, _, _ = machineCPU()
}

func (s *cpuSampler) sample() []float64 {
	out := make([]float64, len(s.pids))
	for i, pid := range s.pids {
		out[i] = procCPU(pid)
	}
	return out
}

func (s *cpuSampler) print(w io.Writer) {
	if !s.ok {
		return
	}
	var parts []string
	var ours float64
	for i, name := range s.names {
		if s.start[i] < 0 || s.end[i] < 0 {
			parts = append(parts, name+" ?")
			continue
		}
		c := (s.end[i] - s.start[i]) / s.wall.Seconds()
		ours += c
		parts = append(parts, fmt.Sprintf("%s %.2f", name, c))
	}
	busy := (s.machineEnd[0] - s.machineStart[0]) / s.wall.Seconds()
	fmt.Fprintf(w, "CPU over the measured window (%.1fs), in cores of %d: %s; whole machine %.2f (other processes %.2f)\n",
		s.wall.Seconds(), s.cores, strings.Join(parts, ", "), busy, busy-ours)
}

// procCPU is utime+stime of pid in seconds, or -1.
func procCPU(pid string) float64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return -1
	}
	// The command name may hold spaces: fields count from after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14 overall
	st, _ := strconv.ParseFloat(f[12], 64) // field 15
	return (ut + st) / clockTicks
}

// machineCPU reads /proc/stat: busy and total CPU seconds over all cores,
// and the number of cores.
func machineCPU() (busyTotal [2]float64, cores int, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return busyTotal, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.HasPrefix(f[0], "cpu") && f[0] != "cpu" {
			cores++
		}
		if f[0] != "cpu" {
			continue
		}
		var total, idle float64
		for j, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			if j >= 8 { // guest time is already in user
				break
			}
			total += x
			if j == 3 || j == 4 { // idle, iowait
				idle += x
			}
		}
		busyTotal = [2]float64{(total - idle) / clockTicks, total / clockTicks}
		ok = true
	}
	return busyTotal, cores, ok
}
