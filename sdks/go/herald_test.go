package herald_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	herald "github.com/herald-broker/herald/sdks/go"
	"github.com/herald-broker/herald/sdks/go/examples/signuppb"
	"github.com/herald-broker/herald/sdks/go/heraldpb"
	"github.com/herald-broker/herald/sdks/go/internal/interoppb"
)

// runConsumer runs c in the background until stop is called; stop returns
// Run's error.
func runConsumer[T proto.Message](t *testing.T, c *herald.Consumer[T], h herald.Handler[T]) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				err = errors.New("Run did not return within 15 s of the cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder keeps what a handler saw, safely.
type recorder[T proto.Message] struct {
	mu   sync.Mutex
	seen []*herald.Envelope[T]
}

func (r *recorder[T]) add(e *herald.Envelope[T]) {
	r.mu.Lock()
	r.seen = append(r.seen, e)
	r.mu.Unlock()
}

func (r *recorder[T]) all() []*herald.Envelope[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*herald.Envelope[T](nil), r.seen...)
}

func (r *recorder[T]) len() int { return len(r.all()) }

func TestTypedRoundTrip(t *testing.T) {
	srv := startServer(t, "--in-memory")
	client := srv.dial(t)
	ctx := context.Background()
	topic := herald.WithTopic(uniq(t, "signup"))

	producer := signuppb.NewUserSignedUpProducer(client, topic)
	sent := map[string]*signuppb.UserSignedUp{}
	receipts := map[string]herald.Receipt{}
	for i := range 20 {
		m := &signuppb.UserSignedUp{UserId: fmt.Sprintf("u%d", i), Email: fmt.Sprintf("u%d@example.com", i), SignedUpAt: timestamppb.New(time.Unix(1700000000+int64(i), 5))}
		r, err := producer.Publish(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if r.ID == "" || r.Duplicate || r.PublishTime.IsZero() {
			t.Fatalf("receipt %+v", r)
		}
		sent[r.ID] = m
		receipts[r.ID] = r
	}
	if err := producer.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := producer.Publish(ctx, &signuppb.UserSignedUp{}); !errors.Is(err, herald.ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}

	var rec recorder[*signuppb.UserSignedUp]
	consumer := signuppb.NewUserSignedUpConsumer(client, "round-trip", topic, herald.WithInitialPosition(herald.Earliest()))
	stop := runConsumer(t, consumer, func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
		rec.add(e)
		return nil
	})
	waitFor(t, "20 events", func() bool { return rec.len() >= 20 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if a := consumer.Attached(); a == nil || a.GetType() != herald.Shared {
		t.Fatalf("attached %v", a)
	}
	for _, e := range rec.all() {
		want, ok := sent[e.ID]
		if !ok {
			t.Fatalf("unexpected event %s", e.ID)
		}
		if !proto.Equal(e.Value, want) {
			t.Errorf("value %v, want %v", e.Value, want)
		}
		r := receipts[e.ID]
		if e.Partition != r.Partition || e.Offset != r.Offset {
			t.Errorf("stored at %d/%d, receipt said %d/%d", e.Partition, e.Offset, r.Partition, r.Offset)
		}
		if e.Type != "com.example.user.signed_up" || e.Source != "/services/signup" ||
			e.DataSchema != "acme.signup.v1.UserSignedUp" || e.DataContentType != "application/protobuf" ||
			e.Key != want.GetUserId() || e.DeliveryAttempt != 1 || e.Time.IsZero() || !e.Finished() {
			t.Errorf("envelope %+v", e)
		}
	}

	// Acked means gone: a new consumer on the subscription gets nothing more.
	var again recorder[*signuppb.UserSignedUp]
	stop = runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "round-trip", topic), func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
		again.add(e)
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	stop()
	if n := again.len(); n != 0 {
		t.Fatalf("%d acked events delivered again", n)
	}
}

func TestPublishBatchAndKeysKeepOrder(t *testing.T) {
	srv := startServer(t, "--in-memory", "--default-partitions", "4")
	client := srv.dial(t)
	ctx := context.Background()
	topic := herald.WithTopic(uniq(t, "batch"))
	producer := interoppb.NewInteropEventProducer(client, topic, herald.WithLinger(5*time.Millisecond))
	defer producer.Close(ctx)
	var msgs []*interoppb.InteropEvent
	for i := range 40 {
		msgs = append(msgs, &interoppb.InteropEvent{Seq: int64(i), Key: fmt.Sprintf("k%d", i%4)})
	}
	receipts, err := producer.PublishBatch(ctx, msgs)
	if err != nil || len(receipts) != 40 {
		t.Fatalf("%d receipts, %v", len(receipts), err)
	}
	// Same key, same partition, increasing offsets.
	byKey := map[string]herald.Receipt{}
	for i, r := range receipts {
		k := msgs[i].GetKey()
		if prev, ok := byKey[k]; ok && (prev.Partition != r.Partition || prev.Offset >= r.Offset) {
			t.Fatalf("key %s: %+v then %+v", k, prev, r)
		}
		byKey[k] = r
	}
	// Concurrent publishes are batched into fewer requests.
	before := producer.Stats()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := producer.Publish(ctx, &interoppb.InteropEvent{Seq: int64(i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	after := producer.Stats()
	if after.Events-before.Events != 200 || after.Requests-before.Requests >= 200 {
		t.Fatalf("200 publishes went in %d requests", after.Requests-before.Requests)
	}
}

func TestAttributesAndTraceContext(t *testing.T) {
	srv := startServer(t, "--in-memory")
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	client := srv.dial(t, herald.WithTracerProvider(tp))
	ctx := context.Background()
	topic := uniq(t, "traced")

	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic), herald.WithSource("/tests/go"))
	defer producer.Close(ctx)
	pctx, span := tp.Tracer("test").Start(ctx, "publish")
	span.SetAttributes()
	r, err := producer.Publish(pctx, &signuppb.UserSignedUp{UserId: "u1"},
		herald.WithAttribute("tenant", "acme"), herald.WithAttributes(map[string]string{"region": "eu"}),
		herald.WithSubject("users/u1"), herald.WithKey("custom-key"))
	span.End()
	if err != nil {
		t.Fatal(err)
	}
	producerSpan := span.SpanContext()

	var rec recorder[*signuppb.UserSignedUp]
	var handlerSpan trace.SpanContext
	stop := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "traced-sub", herald.WithTopic(topic), herald.WithInitialPosition(herald.Earliest())),
		func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
			handlerSpan = trace.SpanContextFromContext(ctx)
			rec.add(e)
			return nil
		})
	waitFor(t, "the event", func() bool { return rec.len() == 1 })
	stop()
	e := rec.all()[0]
	if e.ID != r.ID || e.Attributes["tenant"] != "acme" || e.Attributes["region"] != "eu" ||
		e.Subject != "users/u1" || e.Key != "custom-key" || e.Source != "/tests/go" {
		t.Fatalf("envelope %+v", e)
	}
	if !strings.HasPrefix(e.Attributes["traceparent"], "00-"+producerSpan.TraceID().String()+"-"+producerSpan.SpanID().String()) {
		t.Fatalf("traceparent %q, producer span %s", e.Attributes["traceparent"], producerSpan.SpanID())
	}
	if handlerSpan.TraceID() != producerSpan.TraceID() {
		t.Fatalf("consumer trace %s, producer trace %s", handlerSpan.TraceID(), producerSpan.TraceID())
	}
	var process sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.SpanContext().SpanID() == handlerSpan.SpanID() {
			process = s
		}
	}
	if process == nil {
		t.Fatal("no processing span recorded")
	}
	if process.SpanKind() != trace.SpanKindConsumer || process.Parent().SpanID() != producerSpan.SpanID() || process.Name() != "process "+topic {
		t.Fatalf("span %s kind %s parent %s", process.Name(), process.SpanKind(), process.Parent().SpanID())
	}
	want := map[attribute.Key]string{
		"messaging.system": "herald", "messaging.destination.name": topic, "messaging.operation": "process",
		"messaging.message.id": r.ID, "messaging.consumer.group.name": "traced-sub",
	}
	for _, kv := range process.Attributes() {
		if w, ok := want[kv.Key]; ok {
			if kv.Value.AsString() != w {
				t.Errorf("%s = %q, want %q", kv.Key, kv.Value.AsString(), w)
			}
			delete(want, kv.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("missing span attributes %v", want)
	}
}

func TestHandlerErrorIsRedeliveredThenDeadLettered(t *testing.T) {
	srv := startServer(t, "--in-memory")
	client := srv.dial(t)
	ctx := context.Background()
	topic := uniq(t, "failing")
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	defer producer.Close(ctx)
	r, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "bad"})
	if err != nil {
		t.Fatal(err)
	}

	var rec recorder[*signuppb.UserSignedUp]
	stop := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "worker", herald.WithTopic(topic),
		herald.WithInitialPosition(herald.Earliest()),
		herald.WithRedelivery(herald.RedeliveryPolicy{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}),
		herald.WithDeadLetter("", 3)),
		func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
			rec.add(e)
			return fmt.Errorf("mailer down (attempt %d)", e.DeliveryAttempt)
		})

	var dead recorder[*signuppb.UserSignedUp]
	stopDLQ := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "audit", herald.WithTopic(topic+".worker.dlq"),
		herald.WithInitialPosition(herald.Earliest())),
		func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
			dead.add(e)
			return nil
		})
	waitFor(t, "the dead letter", func() bool { return dead.len() == 1 })
	stop()
	stopDLQ()
	var attempts []uint32
	for _, e := range rec.all() {
		if e.ID != r.ID {
			t.Fatalf("unexpected event %s", e.ID)
		}
		attempts = append(attempts, e.DeliveryAttempt)
	}
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempts %v", attempts)
	}
	d := dead.all()[0]
	if d.Value.GetUserId() != "bad" || d.Attributes["herald_dlq_reason"] != "mailer down (attempt 3)" ||
		d.Attributes["herald_dlq_attempts"] != "3" || d.Attributes["herald_dlq_subscription"] != "worker" {
		t.Fatalf("dead letter %+v", d.Attributes)
	}
}

func TestExplicitNackWithDelayAndExtend(t *testing.T) {
	srv := startServer(t, "--in-memory")
	client := srv.dial(t)
	ctx := context.Background()
	topic := uniq(t, "nack")
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	defer producer.Close(ctx)
	if _, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "later"}); err != nil {
		t.Fatal(err)
	}
	var rec recorder[*signuppb.UserSignedUp]
	var times []time.Time
	stop := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "nacker", herald.WithTopic(topic), herald.WithInitialPosition(herald.Earliest())),
		func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
			rec.add(e)
			times = append(times, time.Now())
			if e.DeliveryAttempt == 1 {
				if err := e.Extend(10 * time.Second); err != nil {
					return err
				}
				if err := e.Nack(400*time.Millisecond, "not yet"); err != nil {
					return err
				}
				return errors.New("ignored: already nacked")
			}
			return nil
		})
	waitFor(t, "the redelivery", func() bool { return rec.len() == 2 })
	stop()
	if gap := times[1].Sub(times[0]); gap < 350*time.Millisecond {
		t.Fatalf("redelivered after %s, asked for 400ms", gap)
	}
}

func TestUndecodableEventIsNackedAndLoopGoesOn(t *testing.T) {
	srv := startServer(t, "--in-memory")
	client := srv.dial(t)
	ctx := context.Background()
	topic := uniq(t, "garbage")
	// A payload that is not a UserSignedUp, published through the raw API.
	_, err := heraldpb.NewPublisherClient(client.Conn()).Publish(ctx, &heraldpb.PublishRequest{
		Topic: topic, Events: []*heraldpb.Event{{Id: "garbage-1", Type: "x", Data: []byte{0x0a, 0xff, 0xff, 0xff}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	defer producer.Close(ctx)
	if _, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "fine"}); err != nil {
		t.Fatal(err)
	}
	var rec recorder[*signuppb.UserSignedUp]
	stop := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "decoder", herald.WithTopic(topic),
		herald.WithInitialPosition(herald.Earliest()), herald.WithDeadLetter("", 1)),
		func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
			rec.add(e)
			return nil
		})
	// The handler only ever sees the valid event.
	waitFor(t, "the valid event", func() bool { return rec.len() == 1 })
	// The garbage was nacked with the decode error as reason: with one
	// attempt allowed it is in the dead-letter topic (read raw: it does not
	// decode as a UserSignedUp there either).
	var ev *heraldpb.Event
	waitFor(t, "the dead letter", func() bool {
		read, err := heraldpb.NewSubscriberClient(client.Conn()).Read(ctx, &heraldpb.ReadRequest{Topic: topic + ".decoder.dlq", MaxEvents: 1})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := read.Recv()
		if err != nil || len(resp.GetEvents()) == 0 {
			return false
		}
		ev = resp.GetEvents()[0].GetEvent()
		return true
	})
	stop()
	if got := rec.all()[0].Value.GetUserId(); got != "fine" || rec.len() != 1 {
		t.Fatalf("handled %q (%d events)", got, rec.len())
	}
	if ev.GetId() != "garbage-1" || !strings.Contains(ev.GetAttributes()["herald_dlq_reason"], "cannot decode event garbage-1") ||
		!strings.Contains(ev.GetAttributes()["herald_dlq_reason"], "acme.signup.v1.UserSignedUp") {
		t.Fatalf("dead letter %s: %v", ev.GetId(), ev.GetAttributes())
	}
}

func TestPanickingHandlerIsNackedAndLoopSurvives(t *testing.T) {
	srv := startServer(t, "--in-memory")
	client := srv.dial(t)
	ctx := context.Background()
	topic := uniq(t, "panic")
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	defer producer.Close(ctx)
	for _, u := range []string{"boom", "ok1", "ok2"} {
		if _, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: u}); err != nil {
			t.Fatal(err)
		}
	}
	var rec recorder[*signuppb.UserSignedUp]
	stop := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "panicky", herald.WithTopic(topic),
		herald.WithInitialPosition(herald.Earliest()),
		herald.WithRedelivery(herald.RedeliveryPolicy{MinBackoff: 50 * time.Millisecond})),
		func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
			rec.add(e)
			if e.Value.GetUserId() == "boom" && e.DeliveryAttempt == 1 {
				var m map[string]int
				m["nil map"]++ // a real runtime panic
			}
			return nil
		})
	waitFor(t, "4 deliveries", func() bool { return rec.len() >= 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range rec.all() {
		got = append(got, fmt.Sprintf("%s#%d", e.Value.GetUserId(), e.DeliveryAttempt))
	}
	joined := strings.Join(got, " ")
	for _, want := range []string{"boom#1", "ok1#1", "ok2#1", "boom#2"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("deliveries %s, missing %s", joined, want)
		}
	}
}

func TestTypedErrors(t *testing.T) {
	srv := startServer(t, "--in-memory", "--auto-create-topics", "false")
	client := srv.dial(t)
	ctx := context.Background()

	t.Run("unknown topic", func(t *testing.T) {
		producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic("no.such.topic"))
		defer producer.Close(ctx)
		_, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "u"})
		var herr *herald.Error
		if !errors.As(err, &herr) || herr.Code != heraldpb.ErrorCode_ERROR_CODE_TOPIC_NOT_FOUND || herr.GRPCCode != codes.NotFound {
			t.Fatalf("%#v", err)
		}
		if !strings.Contains(herr.Message, "no.such.topic") || herald.CodeOf(err) != herr.Code {
			t.Fatalf("message %q", herr.Message)
		}
	})

	topic := uniq(t, "errors")
	if _, err := client.Admin().CreateTopic(ctx, &heraldpb.CreateTopicRequest{Name: topic}); err != nil {
		t.Fatal(err)
	}

	t.Run("oversize event fails only its own call", func(t *testing.T) {
		producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic), herald.WithLinger(50*time.Millisecond))
		defer producer.Close(ctx)
		var wg sync.WaitGroup
		errs := make([]error, 5)
		for i := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := &signuppb.UserSignedUp{UserId: fmt.Sprint(i)}
				if i == 2 {
					m.Email = strings.Repeat("x", 2<<20)
				}
				_, errs[i] = producer.Publish(ctx, m)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if i == 2 {
				var herr *herald.Error
				if !errors.As(err, &herr) || herr.Code != heraldpb.ErrorCode_ERROR_CODE_EVENT_TOO_LARGE || herr.GRPCCode != codes.InvalidArgument {
					t.Fatalf("oversize: %v", err)
				}
			} else if err != nil {
				t.Fatalf("call %d failed with the oversize one: %v", i, err)
			}
		}
		if s := producer.Stats(); s.Requests < 2 {
			t.Fatalf("stats %+v: the calls were not batched then retried", s)
		}
	})

	t.Run("wrong subscription type", func(t *testing.T) {
		stop := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "shared-sub", herald.WithTopic(topic)),
			func(context.Context, *herald.Envelope[*signuppb.UserSignedUp]) error { return nil })
		time.Sleep(200 * time.Millisecond)
		stop()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := signuppb.NewUserSignedUpConsumer(client, "shared-sub", herald.WithTopic(topic), herald.WithSubscriptionType(herald.Exclusive)).
			Run(rctx, func(context.Context, *herald.Envelope[*signuppb.UserSignedUp]) error { return nil })
		var herr *herald.Error
		if !errors.As(err, &herr) || herr.Code != heraldpb.ErrorCode_ERROR_CODE_SUBSCRIPTION_TYPE_MISMATCH || herr.GRPCCode != codes.FailedPrecondition {
			t.Fatalf("%v", err)
		}
	})

	t.Run("request timeout", func(t *testing.T) {
		impatient := srv.dial(t, herald.WithRequestTimeout(time.Nanosecond))
		producer := signuppb.NewUserSignedUpProducer(impatient, herald.WithTopic(topic))
		defer producer.Close(ctx)
		_, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "u"})
		var herr *herald.Error
		if !errors.As(err, &herr) || herr.GRPCCode != codes.DeadlineExceeded || !strings.Contains(herr.Message, "request timeout") {
			t.Fatalf("%v", err)
		}
		// A deadline on ctx wins over the client's timeout.
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := producer.Publish(dctx, &signuppb.UserSignedUp{UserId: "u"}); err != nil {
			t.Fatalf("with a deadline: %v", err)
		}
	})

	t.Run("unreachable server", func(t *testing.T) {
		start := time.Now()
		_, err := herald.Dial(ctx, "http://127.0.0.1:1", herald.WithConnectTimeout(300*time.Millisecond))
		if err == nil || !strings.Contains(err.Error(), "cannot connect") || time.Since(start) > 5*time.Second {
			t.Fatalf("%v after %s", err, time.Since(start))
		}
		if _, err := herald.Dial(ctx, "ftp://x"); err == nil || !strings.Contains(err.Error(), "http or https") {
			t.Fatalf("%v", err)
		}
	})
}

func TestConsumerReattachesAfterServerRestart(t *testing.T) {
	srv := startServer(t)
	client := srv.dial(t)
	ctx := context.Background()
	topic := uniq(t, "restart")
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: fmt.Sprint(i)}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	publish(0, 5)
	var mu sync.Mutex
	seen := map[string]bool{}
	stop := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "survivor", herald.WithTopic(topic), herald.WithInitialPosition(herald.Earliest())),
		func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
			mu.Lock()
			seen[e.Value.GetUserId()] = true
			mu.Unlock()
			return nil
		})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	waitFor(t, "the first 5", func() bool { return count() == 5 })
	srv.kill()
	time.Sleep(300 * time.Millisecond)
	srv.restart()
	// The producer's stream broke with the server; its next batch reopens it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "5"}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("publish after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	publish(6, 10)
	waitFor(t, "all 10 after the restart", func() bool { return count() == 10 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	producer.Close(ctx)
}

func TestFailoverActiveAndStandby(t *testing.T) {
	srv := startServer(t, "--in-memory")
	client := srv.dial(t)
	topic := uniq(t, "failover")
	if _, err := client.Admin().CreateTopic(context.Background(), &heraldpb.CreateTopicRequest{Name: topic}); err != nil {
		t.Fatal(err)
	}
	type role struct {
		mu     sync.Mutex
		active bool
		seen   int
	}
	watch := func(r *role) herald.ConsumerOption {
		return herald.WithActiveStatus(func(s herald.ActiveStatus) {
			r.mu.Lock()
			r.active, r.seen = s.Active, r.seen+1
			r.mu.Unlock()
		})
	}
	isActive := func(r *role) func() bool {
		return func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.seen > 0 && r.active }
	}
	isStandby := func(r *role) func() bool {
		return func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.seen > 0 && !r.active }
	}
	noop := func(context.Context, *herald.Envelope[*signuppb.UserSignedUp]) error { return nil }
	var a, b role
	stopA := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "pair", herald.WithTopic(topic),
		herald.WithSubscriptionType(herald.Failover), herald.WithConsumerName("a"), herald.WithPriority(0), watch(&a)), noop)
	waitFor(t, "a active", isActive(&a))
	stopB := runConsumer(t, signuppb.NewUserSignedUpConsumer(client, "pair", herald.WithTopic(topic),
		herald.WithSubscriptionType(herald.Failover), herald.WithConsumerName("b"), herald.WithPriority(1), watch(&b)), noop)
	waitFor(t, "b standby", isStandby(&b))
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b active after a left", isActive(&b))
	stopB()
}
