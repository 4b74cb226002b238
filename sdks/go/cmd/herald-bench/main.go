// Command herald-bench measures the Go SDK's throughput against a running
// herald, like the Rust client's typed_bench: Producer.Publish from many
// goroutines through one batching producer, PublishBatch(100) from 64
// goroutines, and a Consumer draining the backlog with an ack per event.
// Events carry a 100-byte payload.
//
//	herald-bench ENDPOINT [SECONDS=10] [BACKLOG=1000000]
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	herald "github.com/herald-broker/herald/sdks/go"
)

const (
	publishers      = 8192
	batchPublishers = 64
	batch           = 100
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: herald-bench ENDPOINT [SECONDS] [BACKLOG]")
	}
	endpoint := os.Args[1]
	seconds := arg(2, 10)
	backlog := arg(3, 1_000_000)
	if path := os.Getenv("HERALD_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	client, err := herald.Dial(ctx, endpoint)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	topic := fmt.Sprintf("go-bench.%d", time.Now().UnixNano())
	sample := wrapperspb.Bytes(make([]byte, 100))
	et := herald.Of[*wrapperspb.BytesValue](topic)
	producer := herald.NewProducer(client, et, herald.WithMaxInFlight(16))

	// Publish from many goroutines.
	var published atomic.Uint64
	run := func(workers int, f func() (int, error)) (float64, uint64) {
		before := producer.Stats()
		published.Store(0)
		deadline := time.Now().Add(time.Duration(seconds) * time.Second)
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					n, err := f()
					if err != nil {
						log.Fatal(err)
					}
					published.Add(uint64(n))
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start).Seconds()
		after := producer.Stats()
		perRequest := (after.Events - before.Events) / max(after.Requests-before.Requests, 1)
		return float64(published.Load()) / elapsed, perRequest
	}
	rate, per := run(publishers, func() (int, error) {
		_, err := producer.Publish(ctx, sample)
		return 1, err
	})
	fmt.Printf("publish (%d goroutines):            %10.0f events/s  (%d events/request)\n", publishers, rate, per)
	samples := make([]*wrapperspb.BytesValue, batch)
	for i := range samples {
		samples[i] = sample
	}
	rate, per = run(batchPublishers, func() (int, error) {
		_, err := producer.PublishBatch(ctx, samples)
		return batch, err
	})
	fmt.Printf("publish_batch(%d) (%d goroutines):  %10.0f events/s  (%d events/request)\n", batch, batchPublishers, rate, per)
	producer.Close(ctx)

	// Drain the backlog with an ack per event.
	consumer := herald.NewConsumer(client, et, "drain", herald.WithInitialPosition(herald.Earliest()), herald.WithCredits(5000))
	runCtx, stop := context.WithCancel(ctx)
	var consumed uint64
	start := time.Now()
	err = consumer.Run(runCtx, func(_ context.Context, e *herald.Envelope[*wrapperspb.BytesValue]) error {
		if consumed++; consumed == uint64(backlog) {
			stop()
		}
		return nil
	})
	elapsed := time.Since(start).Seconds()
	if err != nil {
		log.Panic(err)
	}
	fmt.Printf("consume, ack per event:               %10.0f events/s  (%d events)\n", float64(consumed)/elapsed, consumed)
}

func arg(i, def int) int {
	if len(os.Args) > i {
		n, err := strconv.Atoi(os.Args[i])
		if err != nil {
			log.Fatalf("argument %d: %v", i, err)
		}
		return n
	}
	return def
}
