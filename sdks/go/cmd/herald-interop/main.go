// Command herald-interop is the Go SDK's interop agent for the
// cross-language matrix (tests/interop/README.md): produce, consume and
// bad-input with herald.interop.v1.InteropEvent through the SDK's typed,
// generated API. JSON Lines on stdout; logs on stderr.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	herald "github.com/herald-broker/herald/sdks/go"
	"github.com/herald-broker/herald/sdks/go/internal/interoppb"
)

const lang = "go"

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if len(os.Args) < 2 {
		die("usage: herald-interop produce|consume|bad-input --endpoint URL --topic T ...")
	}
	tp := sdktrace.NewTracerProvider()
	otel.SetTracerProvider(tp)
	defer tp.Shutdown(context.Background())

	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "produce":
		err = produce(args)
	case "consume":
		err = consume(args)
	case "bad-input":
		err = badInput(args)
	default:
		err = fmt.Errorf("unknown command %q: use produce, consume or bad-input", cmd)
	}
	if err != nil {
		die(err.Error())
	}
}

func die(reason string) {
	fmt.Fprintln(os.Stderr, strings.ReplaceAll(reason, "\n", " "))
	os.Exit(1)
}

var stdoutMu sync.Mutex

// emit writes one JSON line on stdout.
func emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		die("cannot encode output: " + err.Error())
	}
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func parse(fs *flag.FlagSet, args []string, required ...string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for _, name := range required {
		if fs.Lookup(name).Value.String() == "" {
			return fmt.Errorf("--%s is required", name)
		}
	}
	return nil
}

func dial(endpoint string) (*herald.Client, error) {
	return herald.Dial(context.Background(), endpoint, herald.WithConnectTimeout(10*time.Second))
}

// interopEvent is the event for seq, exactly as the contract says.
func interopEvent(runID string, seq int64, poisonSeq int64) *interoppb.InteropEvent {
	colour := interoppb.Colour_COLOUR_RED
	if seq%2 == 0 {
		colour = interoppb.Colour_COLOUR_GREEN
	}
	return &interoppb.InteropEvent{
		RunId:        runID,
		Seq:          seq,
		ProducerLang: lang,
		Key:          fmt.Sprintf("k%d", seq%4),
		Text:         fmt.Sprintf("héllo wörld ✓ %d", seq),
		Blob:         []byte{byte(seq % 256), byte((seq + 1) % 256), 0, 255},
		Amount:       float64(seq) * 1.5,
		Tags:         []string{lang, fmt.Sprintf("seq-%d", seq)},
		Labels:       map[string]string{"run": runID, "lang": lang},
		Nested:       &interoppb.Nested{Name: fmt.Sprintf("n%d", seq), Value: -seq},
		OccurredAt:   timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Second)),
		Colour:       colour,
		Big:          math.MaxUint64 - uint64(seq),
		Poison:       poisonSeq >= 0 && seq == poisonSeq,
	}
}

func produce(args []string) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "")
	topic := fs.String("topic", "", "")
	runID := fs.String("run-id", "", "")
	count := fs.Int64("count", -1, "")
	fs.String("lang-tag", "", "")
	poisonSeq := fs.Int64("poison-seq", -1, "")
	if err := parse(fs, args, "endpoint", "topic", "run-id"); err != nil {
		return err
	}
	if *count < 0 {
		return errors.New("--count is required")
	}
	client, err := dial(*endpoint)
	if err != nil {
		return err
	}
	defer client.Close()
	producer := interoppb.NewInteropEventProducer(client, herald.WithTopic(*topic))
	tracer := otel.Tracer("herald-interop")
	type inFlight struct {
		seq     int64
		traceID string
		pending *herald.Pending
	}
	ctx := context.Background()
	queue := make(chan inFlight, 1024)
	errs := make(chan error, 1)
	// Queue in order from this goroutine; print answers in order from another.
	go func() {
		defer close(errs)
		for f := range queue {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			r, err := f.pending.Wait(wctx)
			cancel()
			if err != nil {
				errs <- fmt.Errorf("publish seq %d: %w", f.seq, err)
				for range queue {
				}
				return
			}
			emit(map[string]any{"seq": f.seq, "partition": r.Partition, "offset": r.Offset, "trace_id": f.traceID, "id": r.ID})
		}
	}()
	for seq := int64(0); seq < *count; seq++ {
		sctx, span := tracer.Start(ctx, "interop produce")
		pending, err := producer.PublishAsync(sctx, interopEvent(*runID, seq, *poisonSeq), herald.WithAttribute("interop-producer", lang))
		span.End()
		if err != nil {
			close(queue)
			return fmt.Errorf("publish seq %d: %w", seq, err)
		}
		queue <- inFlight{seq: seq, traceID: span.SpanContext().TraceID().String(), pending: pending}
	}
	close(queue)
	if err := <-errs; err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return producer.Close(cctx)
}

func consume(args []string) error {
	fs := flag.NewFlagSet("consume", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "")
	topic := fs.String("topic", "", "")
	subscription := fs.String("subscription", "", "")
	kind := fs.String("type", "", "")
	count := fs.Int("count", -1, "")
	consumerName := fs.String("consumer-name", "", "")
	priority := fs.Int("priority", 0, "")
	position := fs.String("position", "earliest", "")
	timeoutS := fs.Float64("timeout-s", 60, "")
	delayMS := fs.Int("delay-ms", 0, "")
	failPoison := fs.Bool("fail-poison", false, "")
	maxAttempts := fs.Uint("max-attempts", 0, "")
	dlq := fs.String("dead-letter-topic", "", "")
	exitAfter := fs.Int("exit-after", -1, "")
	if err := parse(fs, args, "endpoint", "topic", "subscription", "type"); err != nil {
		return err
	}
	if *count < 0 {
		return errors.New("--count is required")
	}
	types := map[string]herald.SubscriptionType{
		"exclusive": herald.Exclusive, "shared": herald.Shared,
		"failover": herald.Failover, "key_shared": herald.KeyShared,
	}
	subType, ok := types[*kind]
	if !ok {
		return fmt.Errorf("--type %q: use exclusive, shared, failover or key_shared", *kind)
	}
	var pos herald.Position
	switch *position {
	case "earliest":
		pos = herald.Earliest()
	case "latest":
		pos = herald.Latest()
	default:
		return fmt.Errorf("--position %q: use earliest or latest", *position)
	}
	client, err := dial(*endpoint)
	if err != nil {
		return err
	}
	defer client.Close()

	lastRole := ""
	opts := []herald.ConsumerOption{
		herald.WithTopic(*topic),
		herald.WithSubscriptionType(subType),
		herald.WithConsumerName(*consumerName),
		herald.WithPriority(int32(*priority)),
		herald.WithInitialPosition(pos),
		herald.WithActiveStatus(func(s herald.ActiveStatus) {
			role := "standby"
			if s.Active {
				role = "active"
			}
			if subType == herald.Failover && role != lastRole {
				lastRole = role
				emit(map[string]string{"role": role})
			}
		}),
	}
	if *maxAttempts > 0 || *dlq != "" {
		opts = append(opts, herald.WithDeadLetter(*dlq, uint32(*maxAttempts)))
	}
	consumer := interoppb.NewInteropEventConsumer(client, *subscription, opts...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(time.Duration(*timeoutS*float64(time.Second)), func() { timedOut.Store(true); cancel() })
	defer timer.Stop()

	seen := map[int64]bool{}
	printed := 0
	err = consumer.Run(ctx, func(ctx context.Context, e *herald.Envelope[*interoppb.InteropEvent]) error {
		raw, err := protojson.Marshal(e.Value)
		if err != nil {
			return err
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return err
		}
		name := *consumerName
		if a := consumer.Attached(); name == "" && a != nil {
			name = a.GetConsumerName()
		}
		emit(map[string]any{
			"event":       json.RawMessage(compact.Bytes()),
			"id":          e.ID,
			"type":        e.Type,
			"source":      e.Source,
			"data_schema": e.DataSchema,
			"key":         e.Key,
			"attributes":  e.Attributes,
			"trace_id":    trace.SpanFromContext(ctx).SpanContext().TraceID().String(),
			"partition":   e.Partition,
			"offset":      e.Offset,
			"attempt":     e.DeliveryAttempt,
			"consumer":    name,
		})
		printed++
		if *exitAfter >= 0 && printed >= *exitAfter {
			os.Exit(0)
		}
		if *delayMS > 0 {
			time.Sleep(time.Duration(*delayMS) * time.Millisecond)
		}
		if *failPoison && e.Value.GetPoison() {
			return fmt.Errorf("poison event %d", e.Value.GetSeq())
		}
		if err := e.Ack(); err != nil {
			return err
		}
		seen[e.Value.GetSeq()] = true
		if len(seen) >= *count {
			cancel() // Run flushes the acks, half-closes and returns
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(seen) < *count {
		if timedOut.Load() {
			return fmt.Errorf("timed out after %gs with %d of %d events acked", *timeoutS, len(seen), *count)
		}
		return fmt.Errorf("the consumer stopped with %d of %d events acked", len(seen), *count)
	}
	return nil
}

func badInput(args []string) error {
	fs := flag.NewFlagSet("bad-input", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "")
	topic := fs.String("topic", "", "")
	kase := fs.String("case", "", "")
	if err := parse(fs, args, "endpoint", "topic", "case"); err != nil {
		return err
	}
	client, err := dial(*endpoint)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch *kase {
	case "unknown-topic", "oversize":
		producer := interoppb.NewInteropEventProducer(client, herald.WithTopic(*topic))
		defer producer.Close(ctx)
		ev := interopEvent("bad-input", 0, -1)
		if *kase == "oversize" {
			ev.Text = strings.Repeat("x", 2<<20)
		}
		_, err = producer.Publish(ctx, ev)
	case "wrong-type":
		consumer := interoppb.NewInteropEventConsumer(client, "interop-shared",
			herald.WithTopic(*topic), herald.WithSubscriptionType(herald.Exclusive), herald.WithReconnect(false))
		err = consumer.Run(ctx, func(context.Context, *herald.Envelope[*interoppb.InteropEvent]) error { return nil })
	default:
		return fmt.Errorf("--case %q: use unknown-topic, oversize or wrong-type", *kase)
	}
	if err == nil {
		return fmt.Errorf("case %s: the call succeeded", *kase)
	}
	var herr *herald.Error
	if !errors.As(err, &herr) {
		return fmt.Errorf("case %s: not a typed Herald error: %w", *kase, err)
	}
	emit(map[string]any{"case": *kase, "error_code": herr.Code.String(), "grpc_code": int(herr.GRPCCode), "message": herr.Message})
	return nil
}
