// Command loadgen offers unary gRPC calls at a fixed rate and reports their latencies.
//
// It is the benchmarks' client: requests are pre-serialised by the Python side (a file of
// 4-byte big-endian length-prefixed messages, sent round-robin), so a call costs the client
// no message encoding and little CPU, leaving the 2-core machine to the server under test.
// Calls are open-loop: a dispatcher schedules one every 1/rate seconds and a fixed pool of
// workers, all on one HTTP/2 connection as KEDA uses, sends them.
//
// With -serve it is instead the reference server: grpc-go answering every unary call with
// a fixed message, the floor a gRPC server can reach on the same machine.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// rawCodec passes already-serialised messages through untouched.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type result struct {
	Calls          int            `json:"calls"`
	Seconds        float64        `json:"seconds"`
	CallsPerSecond float64        `json:"calls_per_second"`
	Codes          map[string]int `json:"codes"`
	P50Ms          float64        `json:"p50_ms"`
	P90Ms          float64        `json:"p90_ms"`
	P99Ms          float64        `json:"p99_ms"`
	P999Ms         float64        `json:"p999_ms"`
	MaxMs          float64        `json:"max_ms"`
	// Latency from the moment a call was due, so time spent waiting for a free worker counts.
	ScheduledP99Ms float64 `json:"scheduled_p99_ms"`
}

type sample struct {
	service, scheduled time.Duration
	code               string
}

func readRequests(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var requests [][]byte
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, fmt.Errorf("%s: truncated length prefix", path)
		}
		size := binary.BigEndian.Uint32(data)
		if uint32(len(data)-4) < size {
			return nil, fmt.Errorf("%s: truncated message", path)
		}
		requests = append(requests, data[4:4+size])
		data = data[4+size:]
	}
	if len(requests) == 0 {
		return nil, fmt.Errorf("%s: no requests", path)
	}
	return requests, nil
}

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(q * float64(len(sorted)-1))
	return float64(sorted[index].Microseconds()) / 1000
}

// serve answers every unary call with `reply` until the process is killed; it prints the port.
func serve(reply []byte) error {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	server := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var request []byte
			if err := stream.RecvMsg(&request); err != nil {
				return err
			}
			return stream.SendMsg(&reply)
		}))
	return server.Serve(listener)
}

func main() {
	serveReply := flag.String("serve", "", "be the reference server, answering with this file's message")
	address := flag.String("addr", "127.0.0.1:9100", "server address")
	method := flag.String("method", "/externalscaler.ExternalScaler/GetMetrics", "full method name")
	requestsFile := flag.String("requests", "", "file of length-prefixed serialised requests")
	rate := flag.Float64("rate", 2000, "calls per second offered")
	duration := flag.Duration("duration", 10*time.Second, "how long to offer calls")
	workers := flag.Int("concurrency", 64, "concurrent callers")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each call")
	flag.Parse()

	if *serveReply != "" {
		reply, err := os.ReadFile(*serveReply)
		if err == nil {
			err = serve(reply)
		}
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	requests, err := readRequests(*requestsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	conn, err := grpc.NewClient(*address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	defer conn.Close()
	conn.Connect()

	total := int(*rate * duration.Seconds())
	due := make(chan time.Time, total)
	samples := make([]sample, total)
	var next sync.Mutex
	taken := 0
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reply []byte
			for scheduled := range due {
				next.Lock()
				index := taken
				taken++
				next.Unlock()
				request := requests[index%len(requests)]
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				started := time.Now()
				err := conn.Invoke(ctx, *method, &request, &reply)
				finished := time.Now()
				cancel()
				samples[index] = sample{finished.Sub(started), finished.Sub(scheduled), status.Code(err).String()}
			}
		}()
	}
	interval := time.Duration(float64(time.Second) / *rate)
	begin := time.Now()
	for i := 0; i < total; i++ {
		at := begin.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		due <- at
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(begin).Seconds()

	service := make([]time.Duration, 0, total)
	scheduled := make([]time.Duration, 0, total)
	codes := map[string]int{}
	for _, s := range samples {
		service = append(service, s.service)
		scheduled = append(scheduled, s.scheduled)
		codes[s.code]++
	}
	sort.Slice(service, func(i, j int) bool { return service[i] < service[j] })
	sort.Slice(scheduled, func(i, j int) bool { return scheduled[i] < scheduled[j] })
	out := result{
		Calls: total, Seconds: elapsed, CallsPerSecond: float64(total) / elapsed, Codes: codes,
		P50Ms: percentile(service, 0.50), P90Ms: percentile(service, 0.90), P99Ms: percentile(service, 0.99),
		P999Ms: percentile(service, 0.999), MaxMs: percentile(service, 1), ScheduledP99Ms: percentile(scheduled, 0.99),
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
}
