package mediaruntime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
)

// Memory limits. A worker runs every session of its node in one process, so
// it sets a soft memory limit for the Go runtime (debug.SetMemoryLimit) and
// bounds the input its sessions may buffer; a session that asks for more
// than is left is shed (ended with END_REASON_ERROR) long before the kernel
// would kill the whole process.
const (
	// AutoMemoryPercent is the share of the machine's memory (the cgroup's
	// limit when there is one, else the physical memory) that the "auto"
	// memory limit takes.
	AutoMemoryPercent = 80
	// InputBudgetDivisor: with a memory limit L, the sessions' queued
	// input may take L/InputBudgetDivisor together.
	InputBudgetDivisor = 4
	// HeapShedPercent: when the live heap passes this share of the memory
	// limit, the session holding the most input is shed.
	HeapShedPercent = 90
)

// ParseMemoryLimit reads a memory limit: "auto" (or "") for
// AutoMemoryPercent of the machine's memory, "off" or "0" for none (0), or
// a size in bytes with an optional unit ("4GiB", "512MB", "1073741824").
func ParseMemoryLimit(s string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		total, err := machineMemory()
		if err != nil {
			return 0, fmt.Errorf("memory limit auto: %w", err)
		}
		return int64(total / 100 * AutoMemoryPercent), nil
	case "off", "none", "0":
		return 0, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("memory limit %q: want auto, off, or a size such as 4GiB: %w", s, err)
	}
	if n < 64<<20 || n > 1<<50 {
		return 0, fmt.Errorf("memory limit %q: want 64MiB..1PiB", s)
	}
	return int64(n), nil
}

// machineMemory is the memory this process may use: the cgroup v2 (or v1)
// limit when there is one, else the physical memory.
func machineMemory() (uint64, error) {
	phys, err := physicalMemory()
	if err != nil {
		return 0, err
	}
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
		if err == nil && v > 0 && v < phys { // "max", or v1's huge "unlimited"
			return v, nil
		}
	}
	return phys, nil
}

func physicalMemory() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("physical memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("physical memory: MemTotal %q: %w", fields[1], err)
			}
			return kb << 10, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("physical memory: %w", err)
	}
	return 0, errors.New("physical memory: no MemTotal in /proc/meminfo")
}

// liveHeap is the heap the last GC found live, in bytes.
func liveHeap() int64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}
