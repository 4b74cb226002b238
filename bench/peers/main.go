// Command peers is the load generator of bench/compare.sh for the systems
// Herald is compared with: publishers and one consumer on NATS JetStream or
// Redis Streams, measured the way `herald bench subscribe` measures Herald
// (same stamp in the event data, same report fields).
//
//	peers nats-pubsub  --addr nats://127.0.0.1:4222 --size 100 --duration 10s --rate 0 --json
//	peers redis-pubsub --addr 127.0.0.1:6379 --size 1024 --duration 10s --rate 10000 --json
//
// --rate 0 is a closed loop: every producer publishes as fast as its window
// of unacknowledged events allows. A positive rate is an open loop over all
// producers: event i is due at i/rate, and its latency counts from then.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

func usage() {
	fmt.Fprintf(os.Stderr, "usage: peers nats-pubsub|redis-pubsub [flags] (-h for flags)\n")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	var o options
	defAddr := map[string]string{"nats-pubsub": "nats://127.0.0.1:4222", "redis-pubsub": "127.0.0.1:6379"}[cmd]
	if defAddr == "" {
		usage()
	}
	fs.StringVar(&o.addr, "addr", defAddr, "server address")
	fs.IntVar(&o.size, "size", 100, "payload bytes per event")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to publish")
	fs.Float64Var(&o.rate, "rate", 0, "open-loop publish rate in events/s over all producers; 0: closed loop, as fast as the window allows")
	fs.IntVar(&o.producers, "producers", 4, "publisher connections")
	fs.IntVar(&o.window, "window", 100, "events in flight per producer: unacknowledged async publishes (NATS), XADDs per pipeline (Redis)")
	fs.IntVar(&o.fetch, "fetch", 1000, "consumer: max ack pending and pull batch (NATS), XREADGROUP COUNT (Redis)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	_ = fs.Parse(os.Args[2:])
	if o.size < 0 || o.producers < 1 || o.window < 1 || o.fetch < 1 || o.rate < 0 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "peers: size, producers, window, fetch, rate and duration must be positive (rate may be 0)")
		os.Exit(2)
	}

	var b broker
	var err error
	system := map[string]string{"nats-pubsub": "nats", "redis-pubsub": "redis"}[cmd]
	switch system {
	case "nats":
		b, err = newNATS(o)
	case "redis":
		b, err = newRedis(o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "peers %s: %v\n", cmd, err)
		os.Exit(1)
	}
	r := run(o, system, b)
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		fmt.Printf("%s: %d B events, %d producers x %d in flight, rate %v, %.1fs window\n",
			system, o.size, o.producers, o.window, o.rate, r.WindowSecs)
		fmt.Printf("published %d (%.0f/s), delivered %d (%.0f/s), acked %.0f/s, undelivered %d, errors %d\n",
			r.Published, r.PublishedPerSec, r.Delivered, r.DeliveredPerSec, r.AcksPerSec, r.Undelivered, r.Errors)
		l := r.Latency
		fmt.Printf("publish->deliver µs: p50 %d p90 %d p99 %d p99.9 %d max %d (n=%d)\n",
			l.P50Us, l.P90Us, l.P99Us, l.P999Us, l.MaxUs, l.Count)
		if r.FirstError != nil {
			fmt.Printf("first error: %s\n", *r.FirstError)
		}
	}
	if r.Errors > 0 {
		os.Exit(1)
	}
}
