package herald

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

// closeTimeout bounds how long a stopping consumer waits for the server to
// end its stream after the half-close (so the last acks are applied).
const closeTimeout = 5 * time.Second

// instrumentation is the OpenTelemetry instrumentation scope name.
const instrumentation = "github.com/herald-broker/herald/sdks/go"

type consumerConfig struct {
	attach    *heraldpb.Attach
	reconnect bool
	onActive  func(ActiveStatus)
}

// ActiveStatus is a failover consumer's role, as the server reported it.
type ActiveStatus struct {
	// This consumer is the active one (for Partitions).
	Active bool
	// The active consumer's name (of partition 0, for a standby).
	ActiveConsumer string
	// Increases on every handover.
	Epoch uint64
	// The partitions this status is about.
	Partitions []uint32
}

// Handler processes one event. Returning nil acks it (unless the handler
// already acked or nacked it); returning an error nacks it with the error's
// text as the reason (redelivered after the subscription's backoff, and
// dead-lettered after the max attempts). A panic is recovered, logged and
// nacked; the consumer goes on. ctx carries the processing span, a child of
// the producer's trace.
type Handler[T proto.Message] func(ctx context.Context, e *Envelope[T]) error

// Consumer consumes T events through one subscription over a Subscribe
// stream: it attaches (creating the subscription with the options given),
// grants credits back automatically as events are finished, decodes each
// event, runs the handler inside a processing span, and acks or nacks.
// A stream failing with UNAVAILABLE or a transport error is re-attached
// with the client's ReconnectPolicy (exponential backoff with jitter).
type Consumer[T proto.Message] struct {
	client       *Client
	et           EventType[T]
	cfg          consumerConfig
	subscription string
	attached     atomic.Pointer[heraldpb.Attached]
	running      atomic.Bool
}

// NewConsumer prepares a consumer of et's events through subscription;
// Run attaches and consumes. The generated New<Msg>Consumer helpers call
// it. Defaults: shared, 100 credits, reconnect on.
func NewConsumer[T proto.Message](c *Client, et EventType[T], subscription string, opts ...ConsumerOption) *Consumer[T] {
	cfg := consumerConfig{
		attach: &heraldpb.Attach{
			Topic:          et.Topic,
			Subscription:   subscription,
			Type:           Shared,
			InitialCredits: 100,
		},
		reconnect: true,
	}
	for _, o := range opts {
		o.applyConsumer(&cfg)
	}
	return &Consumer[T]{client: c, et: et, cfg: cfg, subscription: subscription}
}

// Topic is the topic consumed.
func (c *Consumer[T]) Topic() string { return c.cfg.attach.GetTopic() }

// Attached is the server's answer to the last attach (consumer name,
// subscription type, partitions); nil before Run has attached.
func (c *Consumer[T]) Attached() *heraldpb.Attached { return c.attached.Load() }

// Run attaches and runs handler for every event until ctx is done (then it
// half-closes the stream and waits for the server to end it, so the final
// acks land, and returns nil) or a non-transient failure (returned as an
// *Error, e.g. ERROR_CODE_SUBSCRIPTION_TYPE_MISMATCH from the first
// attach). Events are handled one at a time, in delivery order.
func (c *Consumer[T]) Run(ctx context.Context, handler Handler[T]) error {
	if err := c.et.validate(); err != nil {
		return err
	}
	if handler == nil {
		return errors.New("herald: Run needs a handler")
	}
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("herald: this consumer is already running")
	}
	defer c.running.Store(false)

	s, err := c.attach(ctx)
	if err != nil {
		return err
	}
	tracer := c.client.tracerProvider().Tracer(instrumentation)
	log := c.client.logger()
	for {
		// Handle what is queued; stop between events when asked.
		for len(s.pending) > 0 {
			if ctx.Err() != nil {
				s.shutdown()
				return nil
			}
			d := s.pending[0]
			s.pending[0] = nil
			s.pending = s.pending[1:]
			c.process(ctx, tracer, s, d, handler)
		}
		var resp *heraldpb.SubscribeResponse
		var ok bool
		select {
		case <-ctx.Done():
			s.shutdown()
			return nil
		case resp, ok = <-s.inbox:
		}
		if ok {
			c.handle(s, resp)
			continue
		}
		// The stream ended.
		err := s.readErr
		s.kill()
		if errors.Is(err, io.EOF) {
			err = &Error{GRPCCode: codes.Unavailable, Message: "the server ended the subscription stream", cause: err}
		} else {
			err = fromRPC(err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if !c.cfg.reconnect || !transient(err) {
			return err
		}
		log.Warn("herald: subscription stream failed; re-attaching", "subscription", c.subscription, "error", err)
		if s, err = c.reattach(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		log.Info("herald: re-attached", "subscription", c.subscription)
	}
}

// reattach attaches again with backoff until it works, fails for good, or
// ctx is done.
func (c *Consumer[T]) reattach(ctx context.Context) (*session, error) {
	policy := c.client.cfg.reconnect
	for attempt := 0; ; attempt++ {
		t := time.NewTimer(policy.Delay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		s, err := c.attach(ctx)
		if err == nil {
			return s, nil
		}
		if !transient(err) {
			return nil, err
		}
		c.client.logger().Debug("herald: re-attach failed; retrying", "subscription", c.subscription, "error", err)
	}
}

// handle applies one server message other than a delivery.
func (c *Consumer[T]) handle(s *session, resp *heraldpb.SubscribeResponse) {
	switch r := resp.GetResponse().(type) {
	case *heraldpb.SubscribeResponse_Events:
		s.pending = append(s.pending, r.Events.GetEvents()...)
	case *heraldpb.SubscribeResponse_ActiveStatus:
		c.activeStatus(r.ActiveStatus)
	case *heraldpb.SubscribeResponse_Error:
		c.client.logger().Warn("herald: subscription request refused", "subscription", c.subscription, "error", fromDetail(r.Error))
	case *heraldpb.SubscribeResponse_AckResult:
		c.client.logger().Debug("herald: acks not applied", "subscription", c.subscription,
			"invalid", len(r.AckResult.GetInvalidHandles()), "stale", len(r.AckResult.GetStaleHandles()))
	}
}

func (c *Consumer[T]) activeStatus(a *heraldpb.ActiveStatus) {
	if c.cfg.onActive != nil {
		c.cfg.onActive(ActiveStatus{
			Active:         a.GetActive(),
			ActiveConsumer: a.GetActiveConsumer(),
			Epoch:          a.GetEpoch(),
			Partitions:     a.GetPartitions(),
		})
	}
}

// process decodes one delivery and runs the handler in a processing span.
func (c *Consumer[T]) process(ctx context.Context, tracer trace.Tracer, s *session, d *heraldpb.DeliveredEvent, handler Handler[T]) {
	env, err := decode(c.et, s, d)
	if err != nil {
		c.client.logger().Warn("herald: nacking an event that does not decode", "subscription", c.subscription, "error", err)
		env.Nack(0, err.Error())
		return
	}
	ctx = c.client.cfg.propagator.Extract(ctx, propagation.MapCarrier(env.Attributes))
	ctx, span := tracer.Start(ctx, "process "+env.Topic,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "herald"),
			attribute.String("messaging.destination.name", env.Topic),
			attribute.String("messaging.operation", "process"),
			attribute.String("messaging.message.id", env.ID),
			attribute.String("messaging.consumer.group.name", c.subscription),
			attribute.Int("messaging.destination.partition.id", int(env.Partition)),
			attribute.Int("herald.delivery_attempt", int(env.DeliveryAttempt)),
		))
	defer span.End()
	err, panicked := runHandler(ctx, handler, env)
	switch {
	case panicked:
		c.client.logger().Error("herald: event handler panicked", "event", env.ID, "panic", err.Error())
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
		env.Nack(0, err.Error())
	case err != nil:
		span.SetStatus(otelcodes.Error, err.Error())
		env.Nack(0, err.Error())
	default:
		env.Ack()
	}
}

// runHandler calls handler, turning a panic into an error.
func runHandler[T proto.Message](ctx context.Context, handler Handler[T], env *Envelope[T]) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
			panicked = true
		}
	}()
	return handler(ctx, env), false
}

// attach opens a stream, sends the Attach and waits for Attached (bounded
// by the client's request timeout).
func (c *Consumer[T]) attach(ctx context.Context) (*session, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var timedOut atomic.Bool
	timeout := c.client.cfg.requestTimeout
	timer := time.AfterFunc(timeout, func() { timedOut.Store(true); cancel() })
	stop := context.AfterFunc(ctx, cancel)
	fail := func(err error) (*session, error) {
		timer.Stop()
		stop()
		cancel()
		if timedOut.Load() {
			return nil, &Error{GRPCCode: codes.DeadlineExceeded, Message: fmt.Sprintf("no answer to the attach within %s", timeout), cause: err}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fromRPC(err)
	}
	stream, err := c.client.subscriber.Subscribe(sctx)
	if err != nil {
		return fail(err)
	}
	if err := stream.Send(&heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_Attach{Attach: c.cfg.attach}}); err != nil && !errors.Is(err, io.EOF) {
		return fail(err)
	}
	var pending []*heraldpb.DeliveredEvent
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = &Error{GRPCCode: codes.Unavailable, Message: "the server ended the stream before attaching"}
			}
			return fail(err)
		}
		if a := resp.GetAttached(); a != nil {
			c.attached.Store(a)
			break
		}
		switch r := resp.GetResponse().(type) {
		case *heraldpb.SubscribeResponse_Events:
			pending = append(pending, r.Events.GetEvents()...)
		case *heraldpb.SubscribeResponse_ActiveStatus:
			c.activeStatus(r.ActiveStatus)
		}
	}
	timer.Stop()
	stop()
	credits := max(c.cfg.attach.GetInitialCredits(), 1)
	s := &session{
		stream:  stream,
		cancel:  cancel,
		ctx:     sctx,
		inbox:   make(chan *heraldpb.SubscribeResponse, 16),
		outbox:  make(chan *heraldpb.SubscribeRequest, int(credits)*2+64),
		written: make(chan struct{}),
		grantAt: max(credits/4, 1),
		pending: pending,
	}
	go s.read()
	go s.write()
	return s, nil
}

// session is one attached Subscribe stream.
type session struct {
	stream grpc.BidiStreamingClient[heraldpb.SubscribeRequest, heraldpb.SubscribeResponse]
	cancel context.CancelFunc
	ctx    context.Context

	inbox   chan *heraldpb.SubscribeResponse // from read; closed at the end
	readErr error                            // why read ended; set before inbox closes

	mu      sync.RWMutex
	closed  bool
	outbox  chan *heraldpb.SubscribeRequest // to write
	written chan struct{}                   // write has ended

	returned atomic.Uint32
	grantAt  uint32

	pending []*heraldpb.DeliveredEvent // the Run goroutine's queue
}

func (s *session) read() {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.readErr = err
			close(s.inbox)
			return
		}
		select {
		case s.inbox <- resp:
		case <-s.ctx.Done():
			s.readErr = s.ctx.Err()
			close(s.inbox)
			return
		}
	}
}

// write sends the outbox, merging consecutive acks (and credits) into one
// message, and half-closes when the outbox is closed.
func (s *session) write() {
	defer close(s.written)
	var next *heraldpb.SubscribeRequest
	for {
		m := next
		next = nil
		if m == nil {
			var ok bool
			if m, ok = <-s.outbox; !ok {
				_ = s.stream.CloseSend()
				return
			}
		}
	merge:
		for {
			select {
			case n, ok := <-s.outbox:
				if !ok {
					break merge
				}
				if !mergeInto(m, n) {
					next = n
					break merge
				}
			default:
				break merge
			}
		}
		if err := s.stream.Send(m); err != nil {
			// The stream is gone; read reports why. Drop the rest.
			for range s.outbox {
			}
			return
		}
	}
}

// mergeInto folds n into m when both are plain acks or both credits.
func mergeInto(m, n *heraldpb.SubscribeRequest) bool {
	if a, b := m.GetAck(), n.GetAck(); a != nil && b != nil && !a.GetCumulative() && !b.GetCumulative() && len(a.AckHandles) < 1000 {
		a.AckHandles = append(a.AckHandles, b.AckHandles...)
		return true
	}
	if a, b := m.GetCredit(), n.GetCredit(); a != nil && b != nil {
		a.Credits += b.Credits
		return true
	}
	return false
}

// send queues a message for the stream; false once the session is closed.
func (s *session) send(m *heraldpb.SubscribeRequest) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	select {
	case s.outbox <- m:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// finish sends an ack or nack and returns the delivery's credit, granting
// credits back a quarter of the window at a time.
func (s *session) finish(m *heraldpb.SubscribeRequest) bool {
	if !s.send(m) {
		return false
	}
	if s.returned.Add(1) >= s.grantAt {
		if n := s.returned.Swap(0); n > 0 {
			s.send(&heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_Credit{Credit: &heraldpb.Credit{Credits: n}}})
		}
	}
	return true
}

// closeOutbox stops accepting messages; write flushes and half-closes.
func (s *session) closeOutbox() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.outbox)
	}
	s.mu.Unlock()
}

// shutdown half-closes after the queued acks and waits (bounded) for the
// server to end the stream, so the final acks are applied.
func (s *session) shutdown() {
	s.closeOutbox()
	deadline := time.NewTimer(closeTimeout)
	defer deadline.Stop()
	for {
		select {
		case _, ok := <-s.inbox:
			if !ok {
				s.cancel()
				return
			}
		case <-deadline.C:
			s.cancel()
			return
		}
	}
}

// kill drops a failed session.
func (s *session) kill() {
	s.cancel()
	s.closeOutbox()
}

// Envelope is one delivered event: the decoded Value, the CloudEvents
// envelope and where it was stored. Finish it with Ack, Nack or (by
// returning from the handler) implicitly; Extend asks for more time.
type Envelope[T proto.Message] struct {
	// The decoded message.
	Value T
	// CloudEvents id, type, source, subject, time.
	ID      string
	Type    string
	Source  string
	Subject string
	Time    time.Time
	// data_content_type and data_schema (the message's full name).
	DataContentType string
	DataSchema      string
	// The ordering key ("" when keyless).
	Key string
	// Extension attributes, traceparent/tracestate included.
	Attributes map[string]string
	// Where it was stored.
	Topic     string
	Partition uint32
	Offset    uint64
	// When the broker stored it.
	PublishTime time.Time
	// 1 on first delivery.
	DeliveryAttempt uint32

	handle   string
	session  *session
	finished atomic.Bool
}

// decode builds the envelope of d; on a decode failure the envelope
// (without Value) is still returned so it can be nacked.
func decode[T proto.Message](et EventType[T], s *session, d *heraldpb.DeliveredEvent) (*Envelope[T], error) {
	ev := d.GetEvent()
	e := &Envelope[T]{
		ID:              ev.GetId(),
		Type:            ev.GetType(),
		Source:          ev.GetSource(),
		Subject:         ev.GetSubject(),
		DataContentType: ev.GetDataContentType(),
		DataSchema:      ev.GetDataSchema(),
		Key:             ev.GetKey(),
		Attributes:      ev.GetAttributes(),
		Topic:           d.GetTopic(),
		Partition:       d.GetPartition(),
		Offset:          d.GetOffset(),
		DeliveryAttempt: d.GetDeliveryAttempt(),
		handle:          d.GetAckHandle(),
		session:         s,
	}
	if e.Attributes == nil {
		e.Attributes = map[string]string{}
	}
	if ev.GetTime() != nil {
		e.Time = ev.GetTime().AsTime()
	}
	if d.GetPublishTime() != nil {
		e.PublishTime = d.GetPublishTime().AsTime()
	}
	v := et.New()
	if err := proto.Unmarshal(ev.GetData(), v); err != nil {
		return e, fmt.Errorf("cannot decode event %s (partition %d, offset %d) as %s: %w", e.ID, e.Partition, e.Offset, et.schema(), err)
	}
	e.Value = v
	return e, nil
}

// Ack acknowledges the event. Only the first Ack or Nack counts; later ones
// return nil and do nothing. ErrClosed: the stream is gone and the event
// will be redelivered.
func (e *Envelope[T]) Ack() error {
	if e.finished.Swap(true) {
		return nil
	}
	if !e.session.finish(&heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_Ack{Ack: &heraldpb.Ack{AckHandles: []string{e.handle}}}}) {
		return ErrClosed
	}
	return nil
}

// Nack refuses the event: it is redelivered after delay (0: the
// subscription's backoff), and reason is recorded (in the dead-letter
// event's herald_dlq_reason once the max attempts are used up).
func (e *Envelope[T]) Nack(delay time.Duration, reason string) error {
	if e.finished.Swap(true) {
		return nil
	}
	n := &heraldpb.Nack{AckHandles: []string{e.handle}, Reason: reason}
	if delay > 0 {
		n.Delay = durationpb.New(delay)
	}
	if !e.session.finish(&heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_Nack{Nack: n}}) {
		return ErrClosed
	}
	return nil
}

// Extend asks for d more time before the ack deadline redelivers the
// event. No-op once the event is finished.
func (e *Envelope[T]) Extend(d time.Duration) error {
	if e.finished.Load() {
		return nil
	}
	if !e.session.send(&heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_ExtendDeadline{
		ExtendDeadline: &heraldpb.ExtendDeadline{AckHandles: []string{e.handle}, Extension: durationpb.New(d)},
	}}) {
		return ErrClosed
	}
	return nil
}

// Finished reports whether Ack or Nack was called.
func (e *Envelope[T]) Finished() bool { return e.finished.Load() }
