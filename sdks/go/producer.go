package herald

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

type producerConfig struct {
	topic       string
	source      string
	linger      time.Duration
	maxBatch    int
	maxInFlight int
}

// Producer publishes T events. Each event gets a UUIDv7 id, time = now,
// type and source from the EventType, data_content_type
// "application/protobuf", data_schema = the message's full name, the key
// from the EventType's Key func, and the caller's trace context
// (traceparent/tracestate) in its attributes.
//
// Concurrent Publish calls are batched into one PublishStream request
// (until WithMaxBatch events or WithLinger after the first), with at most
// WithMaxInFlight requests unanswered. When the broker refuses one event
// of a shared request (too large, malformed), only the call that gave it
// fails. Safe for concurrent use; Close flushes and waits for answers.
type Producer[T proto.Message] struct {
	client *Client
	et     EventType[T]
	cfg    producerConfig
	schema string

	calls    chan *call
	closeReq chan struct{}
	finished chan struct{}
	mu       sync.RWMutex
	closed   bool

	requests atomic.Uint64
	events   atomic.Uint64
}

// ProducerStats counts what a producer has sent.
type ProducerStats struct {
	Requests uint64
	Events   uint64
}

// call is one Publish or PublishBatch waiting for its answer.
type call struct {
	events []*heraldpb.Event
	done   chan callResult
}

type callResult struct {
	receipts []Receipt
	err      error
}

// NewProducer starts a producer of et's events on c (a background
// goroutine; stop it with Close). The generated New<Msg>Producer helpers
// call it.
func NewProducer[T proto.Message](c *Client, et EventType[T], opts ...ProducerOption) *Producer[T] {
	cfg := producerConfig{
		topic:       et.Topic,
		source:      et.Source,
		linger:      time.Millisecond,
		maxBatch:    1000,
		maxInFlight: 8,
	}
	for _, o := range opts {
		o.applyProducer(&cfg)
	}
	p := &Producer[T]{
		client:   c,
		et:       et,
		cfg:      cfg,
		schema:   et.schema(),
		calls:    make(chan *call, max(cfg.maxBatch*2, 64)),
		closeReq: make(chan struct{}),
		finished: make(chan struct{}),
	}
	b := &batcher{
		publisher: c.publisher,
		topic:     cfg.topic,
		linger:    cfg.linger,
		maxBatch:  cfg.maxBatch,
		inFlight:  cfg.maxInFlight,
		calls:     p.calls,
		closeReq:  p.closeReq,
		finished:  p.finished,
		requests:  &p.requests,
		events:    &p.events,
	}
	go b.run()
	return p
}

// Topic is where this producer publishes.
func (p *Producer[T]) Topic() string { return p.cfg.topic }

// Stats is what the producer has sent so far.
func (p *Producer[T]) Stats() ProducerStats {
	return ProducerStats{Requests: p.requests.Load(), Events: p.events.Load()}
}

// Publish publishes one event and returns where it was stored once it is
// durable. A refusal is an *Error with the Herald code (e.g.
// ERROR_CODE_EVENT_TOO_LARGE). ctx bounds the wait (the client's request
// timeout when it has no deadline); it is also where the trace context
// comes from. An event whose wait was cut short may still be stored.
func (p *Producer[T]) Publish(ctx context.Context, msg T, opts ...PublishOption) (Receipt, error) {
	ev, err := p.envelope(ctx, msg, opts)
	if err != nil {
		return Receipt{}, err
	}
	receipts, err := p.send(ctx, []*heraldpb.Event{ev})
	if err != nil {
		return Receipt{}, err
	}
	if len(receipts) != 1 {
		return Receipt{}, &Error{GRPCCode: codes.Internal, Message: fmt.Sprintf("the broker returned %d results for 1 event", len(receipts))}
	}
	return receipts[0], nil
}

// PublishBatch publishes msgs in one request (stored whole or not at all
// per partition) and returns their receipts in order. opts apply to every
// event.
func (p *Producer[T]) PublishBatch(ctx context.Context, msgs []T, opts ...PublishOption) ([]Receipt, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	events := make([]*heraldpb.Event, len(msgs))
	for i, m := range msgs {
		ev, err := p.envelope(ctx, m, opts)
		if err != nil {
			return nil, err
		}
		events[i] = ev
	}
	receipts, err := p.send(ctx, events)
	if err == nil && len(receipts) != len(msgs) {
		return nil, &Error{GRPCCode: codes.Internal, Message: fmt.Sprintf("the broker returned %d results for %d events", len(receipts), len(msgs))}
	}
	return receipts, err
}

// Close flushes what is queued, waits for the answers (or ctx), and stops
// the producer; later publishes fail with ErrClosed. Half-closes the
// stream so the server ends it cleanly.
func (p *Producer[T]) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closeReq)
	}
	p.mu.Unlock()
	select {
	case <-p.finished:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// envelope is the wire event for msg.
func (p *Producer[T]) envelope(ctx context.Context, msg T, opts []PublishOption) (*heraldpb.Event, error) {
	var pc publishConfig
	for _, o := range opts {
		o(&pc)
	}
	data, err := proto.MarshalOptions{}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("herald: cannot encode %s: %w", p.schema, err)
	}
	attrs := lazyCarrier{m: pc.attributes}
	p.client.cfg.propagator.Inject(ctx, &attrs)
	ev := &heraldpb.Event{
		Id:              pc.id,
		Source:          p.cfg.source,
		Type:            p.et.Type,
		Subject:         pc.subject,
		DataContentType: ContentTypeProtobuf,
		DataSchema:      p.schema,
		Attributes:      attrs.m,
		Data:            data,
	}
	if ev.Id == "" {
		r := randPool.Get().(*bufio.Reader)
		id, err := uuid.NewV7FromReader(r)
		randPool.Put(r)
		if err != nil {
			return nil, fmt.Errorf("herald: cannot make an event id: %w", err)
		}
		ev.Id = id.String()
	}
	if pc.time != nil {
		ev.Time = timestamppb.New(*pc.time)
	} else {
		ev.Time = timestamppb.Now()
	}
	switch {
	case pc.key != nil:
		ev.Key = *pc.key
	case p.et.Key != nil:
		ev.Key = p.et.Key(msg)
	}
	return ev, nil
}

func (p *Producer[T]) send(ctx context.Context, events []*heraldpb.Event) ([]Receipt, error) {
	// The client's request timeout applies when ctx has no deadline (a
	// pooled timer: cheaper than a derived context per call).
	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := timerPool.Get().(*time.Timer)
		t.Reset(p.client.cfg.requestTimeout)
		defer func() {
			t.Stop()
			timerPool.Put(t)
		}()
		timeout = t.C
	}
	c, err := p.enqueue(ctx, timeout, events)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-c.done:
		return r.receipts, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timeout:
		return nil, p.timeoutError()
	}
}

func (p *Producer[T]) timeoutError() error {
	return &Error{GRPCCode: codes.DeadlineExceeded, Message: fmt.Sprintf("no answer within the request timeout (%s); the event may still be stored", p.client.cfg.requestTimeout)}
}

// timerPool holds stopped timers for send.
var timerPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// enqueue hands events to the batcher (blocking while its queue is full).
func (p *Producer[T]) enqueue(ctx context.Context, timeout <-chan time.Time, events []*heraldpb.Event) (*call, error) {
	c := &call{events: events, done: make(chan callResult, 1)}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, ErrClosed
	}
	select {
	case p.calls <- c:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timeout:
		return nil, p.timeoutError()
	}
}

// PublishAsync queues one event and returns at once with a Pending to wait
// on. Events queued by one goroutine are sent in the order queued, so a
// single goroutine can keep many publishes in flight and still keep their
// order. ctx is used for the trace context and for waiting for room in the
// queue; bound the wait for the answer with Pending.Wait's ctx.
func (p *Producer[T]) PublishAsync(ctx context.Context, msg T, opts ...PublishOption) (*Pending, error) {
	ev, err := p.envelope(ctx, msg, opts)
	if err != nil {
		return nil, err
	}
	c, err := p.enqueue(ctx, nil, []*heraldpb.Event{ev})
	if err != nil {
		return nil, err
	}
	return &Pending{c: c}, nil
}

// Pending is a publish queued with PublishAsync.
type Pending struct {
	c    *call
	once sync.Once
	r    callResult
}

// Wait returns the publish's receipt once the event is durable, or its
// error; ctx bounds the wait (the publish itself goes on). Wait may be
// called more than once.
func (pd *Pending) Wait(ctx context.Context) (Receipt, error) {
	select {
	case r, ok := <-pd.c.done:
		pd.once.Do(func() {
			if ok {
				pd.r = r
				close(pd.c.done)
			}
		})
	case <-ctx.Done():
		return Receipt{}, ctx.Err()
	}
	if pd.r.err != nil {
		return Receipt{}, pd.r.err
	}
	if len(pd.r.receipts) != 1 {
		return Receipt{}, &Error{GRPCCode: codes.Internal, Message: fmt.Sprintf("the broker returned %d results for 1 event", len(pd.r.receipts))}
	}
	return pd.r.receipts[0], nil
}

// batcher is a producer's background goroutine.
type batcher struct {
	publisher heraldpb.PublisherClient
	topic     string
	linger    time.Duration
	maxBatch  int
	inFlight  int
	calls     chan *call
	closeReq  chan struct{}
	finished  chan struct{}
	requests  *atomic.Uint64
	events    *atomic.Uint64
}

// pubStream is an open PublishStream with its receiving goroutine.
type pubStream struct {
	stream    grpc.BidiStreamingClient[heraldpb.PublishStreamRequest, heraldpb.PublishStreamResponse]
	cancel    context.CancelFunc
	responses chan streamMsg
	done      chan struct{}
}

type streamMsg struct {
	resp *heraldpb.PublishStreamResponse
	err  error
}

func (b *batcher) run() {
	defer close(b.finished)
	var (
		queue    []*call
		queued   int
		deadline time.Time
		nextSeq  uint64
		st       *pubStream
		closing  bool
	)
	inFlight := map[uint64][]*call{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	failAll := func(err error) {
		for seq, callers := range inFlight {
			fail(callers, err)
			delete(inFlight, seq)
		}
	}
	dropStream := func() {
		if st != nil {
			st.cancel()
			st = nil
		}
	}
	enqueue := func(c *call) {
		if len(queue) == 0 {
			deadline = time.Now().Add(b.linger)
		}
		queue = append(queue, c)
		queued += len(c.events)
	}
	drainCalls := func() {
		for queued < b.maxBatch || closing {
			select {
			case c := <-b.calls:
				enqueue(c)
			default:
				return
			}
		}
	}

	for {
		if closing && len(queue) == 0 && len(inFlight) == 0 {
			break
		}
		canSend := len(inFlight) < b.inFlight && len(queue) > 0
		if canSend && (queued >= b.maxBatch || closing || !time.Now().Before(deadline)) {
			var callers []*call
			var events []*heraldpb.Event
			callers, events, queue = b.take(queue)
			for _, c := range callers {
				queued -= len(c.events)
			}
			if len(queue) > 0 {
				deadline = time.Now().Add(b.linger)
			}
			seq := nextSeq
			nextSeq++
			b.requests.Add(1)
			b.events.Add(uint64(len(events)))
			req := &heraldpb.PublishStreamRequest{Sequence: seq, Topic: b.topic, Events: events}
			if st == nil {
				var err error
				if st, err = b.open(); err != nil {
					fail(callers, err)
					continue
				}
			}
			if err := st.stream.Send(req); err != nil {
				// The stream is broken; its receiver reports why, but the
				// requests on it are lost either way.
				e := &Error{GRPCCode: codes.Unavailable, Message: "the publish stream closed: " + err.Error(), cause: err}
				fail(callers, e)
				failAll(e)
				dropStream()
				continue
			}
			inFlight[seq] = callers
			continue
		}

		var callsCh chan *call
		if !closing && queued < b.maxBatch {
			callsCh = b.calls
		}
		var timerCh <-chan time.Time
		if canSend {
			timer.Reset(time.Until(deadline))
			timerCh = timer.C
		}
		var respCh chan streamMsg
		if st != nil {
			respCh = st.responses
		}
		closeReq := b.closeReq
		if closing {
			closeReq = nil
		}
		select {
		case c := <-callsCh:
			enqueue(c)
			drainCalls()
		case <-timerCh:
		case m := <-respCh:
			if m.err != nil {
				failAll(fromRPC(m.err))
				dropStream()
				continue
			}
			retry := answer(inFlight, m.resp)
			if len(retry) > 0 {
				if len(queue) == 0 {
					deadline = time.Now()
				}
				for _, c := range retry {
					queued += len(c.events)
				}
				queue = append(retry, queue...)
			}
		case <-closeReq:
			closing = true
			drainCalls()
		}
		timer.Stop()
	}
	if st != nil {
		// Half-close and let the server end the stream.
		_ = st.stream.CloseSend()
		select {
		case <-st.done:
		case <-time.After(5 * time.Second):
		}
		st.cancel()
	}
	// Calls that raced with Close are refused.
	for {
		select {
		case c := <-b.calls:
			c.done <- callResult{err: ErrClosed}
		default:
			return
		}
	}
}

// take removes up to maxBatch events' worth of calls (at least one) from
// the queue.
func (b *batcher) take(queue []*call) (callers []*call, events []*heraldpb.Event, rest []*call) {
	n := 0
	i := 0
	for ; i < len(queue); i++ {
		if n > 0 && n+len(queue[i].events) > b.maxBatch {
			break
		}
		n += len(queue[i].events)
	}
	callers = queue[:i:i]
	if i == 1 {
		events = queue[0].events
	} else {
		events = make([]*heraldpb.Event, 0, n)
		for _, c := range callers {
			events = append(events, c.events...)
		}
	}
	rest = queue[i:]
	if len(rest) == 0 {
		rest = nil
	}
	return callers, events, rest
}

func (b *batcher) open() (*pubStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := b.publisher.PublishStream(ctx)
	if err != nil {
		cancel()
		return nil, fromRPC(err)
	}
	st := &pubStream{
		stream:    stream,
		cancel:    cancel,
		responses: make(chan streamMsg, b.inFlight+1),
		done:      make(chan struct{}),
	}
	go func() {
		defer close(st.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				st.responses <- streamMsg{err: err}
				return
			}
			st.responses <- streamMsg{resp: resp}
		}
	}()
	return st, nil
}

// answer splits a response back to the calls of its request. When the
// broker refused one event of a request shared by several calls, only the
// call that gave it fails; the others are returned to be sent again.
func answer(inFlight map[uint64][]*call, resp *heraldpb.PublishStreamResponse) []*call {
	callers, ok := inFlight[resp.GetSequence()]
	if !ok {
		return nil
	}
	delete(inFlight, resp.GetSequence())
	if d := resp.GetError(); d != nil {
		err := fromDetail(d)
		culprit := culpritOf(d, callers)
		if culprit < 0 {
			fail(callers, err)
			return nil
		}
		var retry []*call
		for i, c := range callers {
			if i == culprit {
				c.done <- callResult{err: err}
			} else {
				retry = append(retry, c)
			}
		}
		return retry
	}
	results := resp.GetResults()
	for _, c := range callers {
		n := min(len(c.events), len(results))
		receipts := make([]Receipt, n)
		for i := range n {
			receipts[i] = receiptOf(results[i])
		}
		results = results[n:]
		c.done <- callResult{receipts: receipts}
	}
	return nil
}

// culpritOf is the index of the call that gave the one event the broker
// refused (named by the "index" metadata), or -1.
func culpritOf(d *heraldpb.ErrorDetail, callers []*call) int {
	if len(callers) < 2 {
		return -1
	}
	switch d.GetCode() {
	case heraldpb.ErrorCode_ERROR_CODE_EVENT_TOO_LARGE, heraldpb.ErrorCode_ERROR_CODE_INVALID_EVENT:
	default:
		return -1
	}
	index, err := strconv.Atoi(d.GetMetadata()["index"])
	if err != nil {
		return -1
	}
	end := 0
	for i, c := range callers {
		end += len(c.events)
		if index < end {
			return i
		}
	}
	return -1
}

func fail(callers []*call, err error) {
	for _, c := range callers {
		c.done <- callResult{err: err}
	}
}

// lazyCarrier is a TextMapCarrier over the event's attributes that only
// allocates the map when something is set (no trace, no attributes: no
// map).
type lazyCarrier struct{ m map[string]string }

var _ propagation.TextMapCarrier = (*lazyCarrier)(nil)

func (c *lazyCarrier) Get(key string) string { return c.m[key] }

func (c *lazyCarrier) Set(key, value string) {
	if c.m == nil {
		c.m = make(map[string]string, 2)
	}
	c.m[key] = value
}

func (c *lazyCarrier) Keys() []string {
	keys := make([]string, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	return keys
}

// randPool buffers crypto/rand for event ids (one read per 4 KiB instead of
// one per id), without touching the uuid package's global settings.
var randPool = sync.Pool{New: func() any { return bufio.NewReaderSize(rand.Reader, 4096) }}
