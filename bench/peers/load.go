package main

import (
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Event data starts with this magic and then the intended send time (u64 LE,
// ns after the run's base instant): the same stamp `herald bench subscribe`
// writes, so both measure latency the same way.
var stampMagic = []byte("hrldbnch")

const stampLen = 16

// maxTrackedUs is the highest latency a histogram tracks (2 min), as Herald's.
const maxTrackedUs = 120_000_000

// drainGrace is how long consumers may take, after the publishers stop, to
// receive what is still in flight (as Herald's DRAIN_GRACE).
const drainGrace = 5 * time.Second

// clock is the run's monotonic time base: stamps are ns after base.
type clock struct{ base time.Time }

func (c clock) now() int64 { return int64(time.Since(c.base)) }

// stamped returns size bytes: the magic, the stamp at (ns after base), filler.
func stamped(size int, at int64) []byte {
	data := make([]byte, size)
	if size < stampLen {
		for i := range data {
			data[i] = 'x'
		}
		return data
	}
	copy(data, stampMagic)
	binary.LittleEndian.PutUint64(data[8:], uint64(at))
	for i := stampLen; i < size; i++ {
		data[i] = 'x'
	}
	return data
}

// readStamp returns the stamp written by stamped, if data has one.
func readStamp(data []byte) (int64, bool) {
	if len(data) < stampLen || string(data[:8]) != string(stampMagic) {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(data[8:16])), true
}

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, maxTrackedUs, 3)
}

// record adds d ns to h in µs, clamped to what h tracks.
func record(h *hdrhistogram.Histogram, ns int64) {
	us := ns / 1000
	if us < 1 {
		us = 1
	}
	if us > maxTrackedUs {
		us = maxTrackedUs
	}
	_ = h.RecordValue(us)
}

// schedule hands out intended send times. Open loop (rate > 0): event i is
// due at i/rate after the start, whatever happened to earlier ones, so a
// stalled broker delays sends but not their stamps (no coordinated
// omission). Closed loop (rate 0): every event is due now, and the caller's
// window is the only brake. Both end at the run's duration.
type schedule struct {
	clk      clock
	start    int64 // ns after base
	duration int64
	period   float64 // ns between events; 0: closed loop
	mu       sync.Mutex
	next     int64
}

func newSchedule(clk clock, rate float64, duration time.Duration) *schedule {
	s := &schedule{clk: clk, start: clk.now(), duration: int64(duration)}
	if rate > 0 {
		s.period = 1e9 / rate
	}
	return s
}

func (s *schedule) due(i int64) int64 { return s.start + int64(math.Round(float64(i)*s.period)) }

// take returns up to max intended send times, waiting until the first is
// due; with an open loop it adds only those already due. Empty when the
// run is over.
func (s *schedule) take(max int) []int64 {
	if s.period == 0 {
		now := s.clk.now()
		if now-s.start >= s.duration {
			return nil
		}
		out := make([]int64, max)
		for i := range out {
			out[i] = now
		}
		return out
	}
	s.mu.Lock()
	first := s.due(s.next)
	// An open loop that fell behind stops at the end of the run too, rather
	// than sending its backlog late (`herald bench subscribe` sends it).
	if first-s.start >= s.duration || s.clk.now()-s.start >= s.duration {
		s.mu.Unlock()
		return nil
	}
	s.next++
	s.mu.Unlock()
	if wait := first - s.clk.now(); wait > 0 {
		time.Sleep(time.Duration(wait))
	}
	out := []int64{first}
	s.mu.Lock()
	now := s.clk.now()
	for len(out) < max {
		at := s.due(s.next)
		if at > now || at-s.start >= s.duration {
			break
		}
		s.next++
		out = append(out, at)
	}
	s.mu.Unlock()
	return out
}

// tally counts what every run reports; safe for concurrent use.
type tally struct {
	published  atomic.Uint64 // events the broker acknowledged
	delivered  atomic.Uint64 // events received by the consumer
	acks       atomic.Uint64 // events acked by the consumer
	errors     atomic.Uint64
	firstError atomic.Pointer[string]
}

func (t *tally) fail(err error) {
	t.errors.Add(1)
	msg := err.Error()
	t.firstError.CompareAndSwap(nil, &msg)
}

// latencies collects histograms from several goroutines; each goroutine
// records into its own and hands it in when done.
type latencies struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newLatencies() *latencies { return &latencies{h: newHistogram()} }

func (l *latencies) merge(h *hdrhistogram.Histogram) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.h.Merge(h)
}

// LatencySummary has the shape and field names of Herald's.
type LatencySummary struct {
	Count  int64   `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  int64   `json:"p50_us"`
	P90Us  int64   `json:"p90_us"`
	P99Us  int64   `json:"p99_us"`
	P999Us int64   `json:"p999_us"`
	MaxUs  int64   `json:"max_us"`
}

func summarize(h *hdrhistogram.Histogram) LatencySummary {
	if h.TotalCount() == 0 {
		return LatencySummary{}
	}
	return LatencySummary{
		Count:  h.TotalCount(),
		MeanUs: h.Mean(),
		P50Us:  h.ValueAtQuantile(50),
		P90Us:  h.ValueAtQuantile(90),
		P99Us:  h.ValueAtQuantile(99),
		P999Us: h.ValueAtQuantile(99.9),
		MaxUs:  h.Max(),
	}
}

// Report uses the field names of `herald bench subscribe --json` where they
// mean the same thing.
type Report struct {
	System          string         `json:"system"`
	EventSize       int            `json:"event_size"`
	Rate            float64        `json:"rate"` // open-loop target, events/s; 0: closed loop
	Producers       int            `json:"producers"`
	Window          int            `json:"window"` // in flight per producer
	Fetch           int            `json:"fetch"`  // consumer batch / pending limit
	WindowSecs      float64        `json:"window_secs"`
	Published       uint64         `json:"published"`
	PublishedPerSec float64        `json:"published_per_sec"`
	Delivered       uint64         `json:"delivered"`
	DeliveredPerSec float64        `json:"delivered_per_sec"`
	Acks            uint64         `json:"acks"`
	AcksPerSec      float64        `json:"acks_per_sec"`
	DeliveredTotal  uint64         `json:"delivered_total"`
	Undelivered     uint64         `json:"undelivered"`
	Latency         LatencySummary `json:"latency"`
	PublishLatency  LatencySummary `json:"publish_latency"`
	Errors          uint64         `json:"errors"`
	FirstError      *string        `json:"first_error"`
}

// options are the flags every subcommand shares.
type options struct {
	addr      string
	size      int
	duration  time.Duration
	rate      float64
	producers int
	window    int
	fetch     int
	jsonOut   bool
}

// broker is what a run needs from one system.
type broker interface {
	// producer opens publisher connection number id.
	producer(id int) (producer, error)
	// consume receives until stop is closed, calling got for every event
	// (with its stamp, if any) and acking each.
	consume(stop <-chan struct{}, got func(stamp int64, ok bool)) error
	close()
}

type producer interface {
	// send publishes one event per stamp; acked is called once per
	// acknowledged event with its stamp. Returns when the events are sent
	// (not necessarily acknowledged), blocking while the window is full.
	send(stamps []int64, acked func(stamp int64, err error)) error
	// flush waits until everything sent is acknowledged.
	flush()
	close()
}

// run drives one pub/sub measurement against b and returns its report.
func run(o options, system string, b broker) Report {
	clk := clock{base: time.Now()}
	var t tally
	deliver := newLatencies()
	pubLat := newLatencies()

	producers := make([]producer, o.producers)
	for i := range producers {
		p, err := b.producer(i)
		if err != nil {
			t.fail(err)
			return report(o, system, &t, 0, deliver, pubLat)
		}
		producers[i] = p
	}

	stop := make(chan struct{})
	consumerDone := make(chan struct{})
	consumerHist := newHistogram()
	var consumerMu sync.Mutex // uncontended; a client library may call back after it stops
	go func() {
		defer close(consumerDone)
		err := b.consume(stop, func(stamp int64, ok bool) {
			t.delivered.Add(1)
			t.acks.Add(1)
			if ok {
				consumerMu.Lock()
				record(consumerHist, clk.now()-stamp)
				consumerMu.Unlock()
			}
		})
		if err != nil {
			t.fail(err)
		}
	}()

	sched := newSchedule(clk, o.rate, o.duration)
	batch := 1
	if system == "redis" {
		batch = o.window // a pipeline carries up to a window of XADDs
	}
	var wg sync.WaitGroup
	for _, p := range producers {
		wg.Add(1)
		go func(p producer) {
			defer wg.Done()
			h := newHistogram()
			var mu sync.Mutex
			acked := func(stamp int64, err error) {
				if err != nil {
					t.fail(err)
					return
				}
				t.published.Add(1)
				mu.Lock()
				record(h, clk.now()-stamp)
				mu.Unlock()
			}
			for {
				stamps := sched.take(batch)
				if len(stamps) == 0 {
					break
				}
				if err := p.send(stamps, acked); err != nil {
					t.fail(err)
					time.Sleep(10 * time.Millisecond)
				}
			}
			p.flush()
			mu.Lock()
			pubLat.merge(h)
			mu.Unlock()
		}(p)
	}

	windowStart := time.Now()
	startDelivered, startAcks := t.delivered.Load(), t.acks.Load()
	time.Sleep(time.Until(windowStart.Add(o.duration)))
	window := time.Since(windowStart)
	endDelivered, endAcks := t.delivered.Load(), t.acks.Load()
	wg.Wait()
	for _, p := range producers {
		p.close()
	}
	// Let the consumer receive what is still in flight, so late events count
	// in the latency tail.
	allIn := time.Now().Add(drainGrace)
	for t.delivered.Load() < t.published.Load() && time.Now().Before(allIn) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	<-consumerDone
	consumerMu.Lock()
	deliver.merge(consumerHist)
	consumerMu.Unlock()
	b.close()

	r := report(o, system, &t, window.Seconds(), deliver, pubLat)
	r.Delivered = endDelivered - startDelivered
	r.Acks = endAcks - startAcks
	if r.WindowSecs > 0 {
		r.DeliveredPerSec = float64(r.Delivered) / r.WindowSecs
		r.AcksPerSec = float64(r.Acks) / r.WindowSecs
	}
	return r
}

func report(o options, system string, t *tally, windowSecs float64, deliver, pubLat *latencies) Report {
	r := Report{
		System:         system,
		EventSize:      o.size,
		Rate:           o.rate,
		Producers:      o.producers,
		Window:         o.window,
		Fetch:          o.fetch,
		WindowSecs:     windowSecs,
		Published:      t.published.Load(),
		DeliveredTotal: t.delivered.Load(),
		Latency:        summarize(deliver.h),
		PublishLatency: summarize(pubLat.h),
		Errors:         t.errors.Load(),
		FirstError:     t.firstError.Load(),
	}
	if windowSecs > 0 {
		r.PublishedPerSec = float64(r.Published) / windowSecs
	}
	if r.Published > r.DeliveredTotal {
		r.Undelivered = r.Published - r.DeliveredTotal
	}
	return r
}
