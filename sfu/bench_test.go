package sfu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// receiversEnv makes the test binary a process of N bare Pion viewers (see
// runReceivers): the benchmark keeps them out of its own CPU time.
const receiversEnv = "SFU_BENCH_RECEIVERS"

// BenchmarkFanout measures the SFU's CPU per forwarded packet: one room, N
// viewers, a 2 Mbit/s VP8-like stream (25 fps × 10 kB frames, packetised to
// ~1,100-byte packets) written in real time; one op is one frame. The
// viewers are real Pion peers in a child process (read and discard), so the
// process CPU time (getrusage) is the SFU's own: packetising, interceptors,
// SRTP, the socket writes, and the RTCP and ICE traffic of N peers. Each
// size runs with send batching off (one sendto per packet), with sendmmsg,
// and with sendmmsg + UDP GSO; BenchmarkUDPBaseline measures the bare
// socket the same ways.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{10, 50, 100, 250} {
		for _, mode := range []string{"sendto", "sendmmsg", "gso"} {
			b.Run(fmt.Sprintf("viewers=%d/%s", n, mode), func(b *testing.B) {
				benchFanout(b, n, mode, Config{DisableSendBatching: mode == "sendto", DisableGSO: mode != "gso"})
			})
		}
	}
}

func benchFanout(b *testing.B, n int, mode string, cfg Config) {
	cfg.MaxViewersPerRoom, cfg.MaxPendingViewers, cfg.MaxPendingPerToken = n, n, n
	s := newTestSFU(b, cfg)
	room, err := s.OpenRoom("bench", RoomOptions{})
	if err != nil {
		b.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), receiversEnv+"="+strconv.Itoa(n))
	child.Stderr = os.Stderr
	toChild, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	fromChild, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = toChild.Close() // the receivers close and exit
		_ = child.Wait()
	}()
	dec, enc := json.NewDecoder(fromChild), json.NewEncoder(toChild)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < n; i++ {
		var offer string
		if err := dec.Decode(&offer); err != nil {
			b.Fatalf("offer %d from the receivers: %v", i, err)
		}
		_, answer, err := room.AddViewer(ctx, offer)
		if err != nil {
			b.Fatal(err)
		}
		if err := enc.Encode(answer); err != nil {
			b.Fatal(err)
		}
	}
	// The frames are made before the clock starts: making a frame is the
	// encoder's work, not the SFU's (10 kB each: it would be counted).
	const frameBytes = 10_000 // 25 fps → 2 Mbit/s
	frames := make([]Sample, 50)
	for i := range frames {
		key := i == 0 // a keyframe every 2 s
		frames[i] = Sample{Data: vp8Frame(frameBytes, key, i), Duration: 40 * time.Millisecond, Keyframe: key}
	}
	// Warm up until every viewer gets packets.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		_ = room.WriteVideo(frames[0])
		time.Sleep(40 * time.Millisecond)
		ready := 0
		for _, v := range room.Stats().Viewers {
			if v.PacketsSent > 0 {
				ready++
			}
		}
		if ready == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d viewers connected", ready, n)
		}
	}
	sent := func() (pkts, bytes uint64) {
		for _, v := range room.Stats().Viewers {
			pkts += v.PacketsSent
			bytes += v.BytesSent
		}
		return pkts, bytes
	}
	pkts0, bytes0 := sent()
	cpu0 := processCPU()
	start := time.Now()
	tick := time.NewTicker(40 * time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = room.WriteVideo(frames[i%len(frames)])
		<-tick.C
	}
	b.StopTimer()
	cpu := processCPU() - cpu0
	wall := time.Since(start)
	pkts1, bytes1 := sent()
	pkts, bits := float64(pkts1-pkts0), float64(bytes1-bytes0)*8
	if pkts == 0 {
		b.Fatal("nothing forwarded")
	}
	usPerPkt := cpu.Seconds() * 1e6 / pkts
	mbitPerCore := bits / 1e6 / cpu.Seconds()
	b.ReportMetric(usPerPkt, "µs-cpu/pkt")
	b.ReportMetric(mbitPerCore, "Mbit/s/core")
	b.ReportMetric(cpu.Seconds()/wall.Seconds()*100, "%cpu")
	b.Logf("%3d viewers, %-8s: %7.0f pkts/s out, %6.1f Mbit/s out, CPU %5.1f%% of a core, %5.2f µs CPU/pkt, %6.1f Mbit/s per core, %5.2f µs CPU per Mbit forwarded",
		n, mode, pkts/wall.Seconds(), bits/1e6/wall.Seconds(), cpu.Seconds()/wall.Seconds()*100, usPerPkt, mbitPerCore, cpu.Seconds()*1e6/(bits/1e6))
}

// processCPU is this process's user + system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runReceivers is the child side of BenchmarkFanout: n bare Pion viewers
// (no interceptors), offers out on stdout, answers in on stdin, media read
// and discarded until stdin closes.
func runReceivers(n int) error {
	enc, in := json.NewEncoder(os.Stdout), json.NewDecoder(bufio.NewReader(os.Stdin))
	pcs := make([]*webrtc.PeerConnection, 0, n)
	defer func() {
		for _, pc := range pcs {
			_ = pc.Close()
		}
	}()
	for i := 0; i < n; i++ {
		api, _, _, err := newClientAPI(clientOptions{bare: true})
		if err != nil {
			return err
		}
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			return err
		}
		pcs = append(pcs, pc)
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return err
		}
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			buf := make([]byte, 1500)
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
			}
		})
		offer, err := pc.CreateOffer(nil)
		if err != nil {
			return err
		}
		gathered := webrtc.GatheringCompletePromise(pc)
		if err := pc.SetLocalDescription(offer); err != nil {
			return err
		}
		<-gathered
		if err := enc.Encode(pc.LocalDescription().SDP); err != nil {
			return err
		}
		var answer string
		if err := in.Decode(&answer); err != nil {
			return err
		}
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
			return err
		}
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark is done
	return nil
}
