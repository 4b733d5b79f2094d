//go:build linux

package sfu

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// BenchmarkUDPBaseline is the machine's limit for BenchmarkFanout: the same
// packets (a 10 kB frame as 9 datagrams of ~1,150 bytes, the size of an
// SRTP-protected VP8 packet) to N loopback receivers, from a bare socket,
// with one sendto per datagram, with sendmmsg (DefaultSendBatch per call),
// and with sendmmsg of one UDP GSO message per receiver (its 9 datagrams). One op is one frame to every receiver. The CPU is the sending
// thread's own (RUSAGE_THREAD), which on loopback includes the kernel's
// delivery into the receivers' sockets; the receivers read on other threads.
func BenchmarkUDPBaseline(b *testing.B) {
	for _, n := range []int{10, 50, 100, 250} {
		for _, mode := range []string{"sendto", "sendmmsg", "gso"} {
			b.Run(fmt.Sprintf("dests=%d/%s", n, mode), func(b *testing.B) { benchUDP(b, n, mode) })
		}
	}
}

func benchUDP(b *testing.B, n int, mode string) {
	const perFrame, size = 9, 1150
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tx.Close() }()
	_ = tx.SetWriteBuffer(udpSocketBuffer)
	dests := make([]netip.AddrPort, n)
	var wg sync.WaitGroup
	rxs := make([]*net.UDPConn, n)
	for i := range rxs {
		rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		_ = rx.SetReadBuffer(1 << 20)
		rxs[i], dests[i] = rx, rx.LocalAddr().(*net.UDPAddr).AddrPort()
		wg.Add(1)
		go func() { // drain, like a viewer
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		for _, rx := range rxs {
			_ = rx.Close()
		}
		wg.Wait()
	}()
	payload := make([]byte, size)
	pc := ipv4.NewPacketConn(tx)
	msgs := make([]ipv4.Message, 0, perFrame*n)
	if mode == "gso" {
		if !gsoAvailable(tx) {
			b.Fatal("no UDP GSO in this kernel")
		}
		segs := make([][]byte, perFrame)
		for i := range segs {
			segs[i] = payload
		}
		for _, d := range dests {
			msgs = append(msgs, ipv4.Message{Buffers: segs, OOB: gsoControl(nil, size), Addr: net.UDPAddrFromAddrPort(d)})
		}
	} else {
		for p := 0; p < perFrame; p++ {
			for _, d := range dests {
				msgs = append(msgs, ipv4.Message{Buffers: [][]byte{payload}, Addr: net.UDPAddrFromAddrPort(d)})
			}
		}
	}
	frame := func() {
		if mode == "sendto" {
			for p := 0; p < perFrame; p++ {
				for _, d := range dests {
					if _, err := tx.WriteToUDPAddrPort(payload, d); err != nil {
						b.Fatal(err)
					}
				}
			}
			return
		}
		for i := 0; i < len(msgs); {
			k, err := pc.WriteBatch(msgs[i:min(i+DefaultSendBatch, len(msgs))], 0)
			if err != nil {
				b.Fatal(err)
			}
			i += k
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	frame() // warm up
	cpu0 := threadCPU()
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		frame()
	}
	b.StopTimer()
	cpu, wall := threadCPU()-cpu0, time.Since(start)
	pkts := float64(b.N * perFrame * n)
	usPerPkt := cpu.Seconds() * 1e6 / pkts
	mbitPerCore := pkts * size * 8 / 1e6 / cpu.Seconds()
	b.ReportMetric(usPerPkt, "µs-cpu/pkt")
	b.ReportMetric(mbitPerCore, "Mbit/s/core")
	b.Logf("%3d dests, %-8s: %8.0f pkts/s, %5.2f µs CPU/pkt, %7.1f Mbit/s per core", n, mode, pkts/wall.Seconds(), usPerPkt, mbitPerCore)
}

// threadCPU is the calling OS thread's user + system CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
