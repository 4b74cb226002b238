package herald

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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
// fails.
//
// When the connection breaks (broker restart, network, GOAWAY), every
// unanswered request is sent again, in order, on a new stream once the
// broker is reachable (with the client's ReconnectPolicy backoff), until
// each call's deadline (its ctx's, else the client's request timeout).
// That is safe because the broker deduplicates event ids: an event it had
// stored before the break comes back with Receipt.Duplicate set and its
// original offset, so each successful publish is stored once. A call fails
// before its deadline only when the broker refuses it (e.g.
// INVALID_ARGUMENT). Safe for concurrent use; Close flushes and waits for
// answers.
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

	requests    atomic.Uint64
	events      atomic.Uint64
	resends     atomic.Uint64
	lastFailure atomic.Pointer[failure]
}

// ProducerStats counts what a producer has sent.
type ProducerStats struct {
	// PublishStream requests sent (resends included).
	Requests uint64
	// Events in them (resends included).
	Events uint64
	// Times the stream broke with requests unanswered, which were then
	// sent again.
	Resends uint64
}

// failure is why the publish stream last broke; nil once it works again.
type failure struct{ err error }

// call is one Publish or PublishBatch waiting for its answer.
type call struct {
	events []*heraldpb.Event
	// When the caller stops waiting: the batcher drops it then.
	deadline time.Time
	// The deadline is ctx's, not the client's request timeout.
	ctxDeadline bool

	settled atomic.Bool
	result  callResult    // set once, before ready is closed
	ready   chan struct{} // closed when result is set
}

type callResult struct {
	receipts []Receipt
	err      error
}

func newCall(events []*heraldpb.Event, deadline time.Time, ctxDeadline bool) *call {
	return &call{events: events, deadline: deadline, ctxDeadline: ctxDeadline, ready: make(chan struct{})}
}

// resolve sets the call's result unless it has one (the first of the
// batcher's answer and the caller's timeout or cancellation wins).
func (c *call) resolve(r callResult) {
	if c.settled.Swap(true) {
		return
	}
	c.result = r
	close(c.ready)
}

// giveUp is for a caller that stops waiting (deadline, cancel): the call
// gets err unless the batcher answered first; returns what it got. The
// batcher no longer sends a call given up.
func (c *call) giveUp(err error) callResult {
	c.resolve(callResult{err: err})
	<-c.ready
	return c.result
}

func (c *call) done() bool { return c.settled.Load() }

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
		publisher:   c.publisher,
		topic:       cfg.topic,
		linger:      cfg.linger,
		maxBatch:    cfg.maxBatch,
		inFlight:    cfg.maxInFlight,
		reconnect:   c.cfg.reconnect,
		calls:       p.calls,
		closeReq:    p.closeReq,
		finished:    p.finished,
		requests:    &p.requests,
		events:      &p.events,
		resends:     &p.resends,
		lastFailure: &p.lastFailure,
		timeoutErr:  p.timeoutError,
		log:         c.logger(),
	}
	go b.run()
	return p
}

// Topic is where this producer publishes.
func (p *Producer[T]) Topic() string { return p.cfg.topic }

// Stats is what the producer has sent so far.
func (p *Producer[T]) Stats() ProducerStats {
	return ProducerStats{Requests: p.requests.Load(), Events: p.events.Load(), Resends: p.resends.Load()}
}

// Publish publishes one event and returns where it was stored once it is
// durable. A refusal is an *Error with the Herald code (e.g.
// ERROR_CODE_EVENT_TOO_LARGE), returned at once. Across a broken
// connection the event is sent again until ctx's deadline (the client's
// request timeout when it has none); past it Publish fails with an *Error
// of GRPCCode DeadlineExceeded naming the last connection failure (for a
// ctx deadline it also matches context.DeadlineExceeded). ctx is also
// where the trace context comes from. An event whose wait was cut short
// (timeout, cancel) may or may not be stored: publishing it again
// WithID(its id) is safe.
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
	deadline, ctxDeadline := ctx.Deadline()
	var timeout <-chan time.Time
	if !ctxDeadline {
		deadline = time.Now().Add(p.client.cfg.requestTimeout)
		t := timerPool.Get().(*time.Timer)
		t.Reset(p.client.cfg.requestTimeout)
		defer func() {
			t.Stop()
			timerPool.Put(t)
		}()
		timeout = t.C
	}
	c := newCall(events, deadline, ctxDeadline)
	if err := p.enqueue(ctx, timeout, c); err != nil {
		return nil, err
	}
	var r callResult
	select {
	case <-c.ready:
		r = c.result
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			r = c.giveUp(p.timeoutError(c))
		} else {
			r = c.giveUp(ctx.Err())
		}
	case <-timeout:
		r = c.giveUp(p.timeoutError(c))
	}
	return r.receipts, r.err
}

// timeoutError is what a call gets when its deadline passes unanswered.
func (p *Producer[T]) timeoutError(c *call) error {
	bound := fmt.Sprintf("the request timeout (%s)", p.client.cfg.requestTimeout)
	var cause error
	if c.ctxDeadline {
		bound, cause = "the deadline of its context", context.DeadlineExceeded
	}
	msg := "no answer from the broker within " + bound
	if f := p.lastFailure.Load(); f != nil {
		msg += "; it has not been reachable (last failure: " + f.err.Error() + ")"
		if cause == nil {
			cause = f.err
		}
	}
	e := &Error{GRPCCode: codes.DeadlineExceeded, cause: cause}
	if len(c.events) == 1 {
		e.Metadata = map[string]string{"id": c.events[0].GetId()}
		msg += fmt.Sprintf("; event %s may or may not be stored: publishing it again WithID(%q) is safe (the broker drops duplicate ids)", c.events[0].GetId(), c.events[0].GetId())
	} else {
		msg += fmt.Sprintf("; the %d events may or may not be stored: publishing them again with the same ids (WithID) is safe (the broker drops duplicate ids)", len(c.events))
	}
	e.Message = msg
	return e
}

// timerPool holds stopped timers for send.
var timerPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// enqueue hands c to the batcher (blocking while its queue is full).
func (p *Producer[T]) enqueue(ctx context.Context, timeout <-chan time.Time, c *call) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.calls <- c:
		return nil
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return p.timeoutError(c)
		}
		return ctx.Err()
	case <-timeout:
		return p.timeoutError(c)
	}
}

// PublishAsync queues one event and returns at once with a Pending to wait
// on. Events queued by one goroutine are sent in the order queued, so a
// single goroutine can keep many publishes in flight and still keep their
// order. ctx is used for the trace context and for waiting for room in the
// queue; the publish (with its resends) is bounded by the client's request
// timeout, and Pending.Wait's ctx bounds waiting for the answer.
func (p *Producer[T]) PublishAsync(ctx context.Context, msg T, opts ...PublishOption) (*Pending, error) {
	ev, err := p.envelope(ctx, msg, opts)
	if err != nil {
		return nil, err
	}
	c := newCall([]*heraldpb.Event{ev}, time.Now().Add(p.client.cfg.requestTimeout), false)
	if err := p.enqueue(ctx, nil, c); err != nil {
		return nil, err
	}
	return &Pending{c: c, timeoutErr: p.timeoutError}, nil
}

// Pending is a publish queued with PublishAsync.
type Pending struct {
	c          *call
	timeoutErr func(*call) error
}

// Wait returns the publish's receipt once the event is durable, or its
// error (a refusal, or the request timeout passing as for Publish); ctx
// bounds the wait (the publish itself goes on). Wait may be called more
// than once.
func (pd *Pending) Wait(ctx context.Context) (Receipt, error) {
	var r callResult
	select {
	case <-pd.c.ready:
		r = pd.c.result
	default:
		t := time.NewTimer(time.Until(pd.c.deadline))
		defer t.Stop()
		select {
		case <-pd.c.ready:
			r = pd.c.result
		case <-t.C:
			r = pd.c.giveUp(pd.timeoutErr(pd.c))
		case <-ctx.Done():
			return Receipt{}, ctx.Err()
		}
	}
	if r.err != nil {
		return Receipt{}, r.err
	}
	if len(r.receipts) != 1 {
		return Receipt{}, &Error{GRPCCode: codes.Internal, Message: fmt.Sprintf("the broker returned %d results for 1 event", len(r.receipts))}
	}
	return r.receipts[0], nil
}

// batcher is a producer's background goroutine.
type batcher struct {
	publisher   heraldpb.PublisherClient
	topic       string
	linger      time.Duration
	maxBatch    int
	inFlight    int
	reconnect   ReconnectPolicy
	calls       chan *call
	closeReq    chan struct{}
	finished    chan struct{}
	requests    *atomic.Uint64
	events      *atomic.Uint64
	resends     *atomic.Uint64
	lastFailure *atomic.Pointer[failure]
	timeoutErr  func(*call) error
	log         *slog.Logger
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

// batcherState is the batcher goroutine's own.
type batcherState struct {
	queue    []*call // waiting to be sent, in order
	queued   int     // events in queue
	deadline time.Time
	nextSeq  uint64
	st       *pubStream
	inFlight map[uint64][]*call // sent, unanswered, by sequence
	// After a failure: no sending before retryAt; attempt counts the
	// failures in a row (for the backoff).
	retryAt time.Time
	attempt int
}

func (s *batcherState) pushBack(c *call, linger time.Duration) {
	if len(s.queue) == 0 {
		s.deadline = time.Now().Add(linger)
	}
	s.queue = append(s.queue, c)
	s.queued += len(c.events)
}

// pushFront puts calls (in order) ahead of everything queued, to go at
// once.
func (s *batcherState) pushFront(calls []*call) {
	if len(calls) == 0 {
		return
	}
	for _, c := range calls {
		s.queued += len(c.events)
	}
	s.queue = append(append(make([]*call, 0, len(calls)+len(s.queue)), calls...), s.queue...)
	s.deadline = time.Now()
}

// takeInFlight removes every unanswered request's calls, in the order sent.
func (s *batcherState) takeInFlight() []*call {
	seqs := make([]uint64, 0, len(s.inFlight))
	for seq := range s.inFlight {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	var calls []*call
	for _, seq := range seqs {
		calls = append(calls, s.inFlight[seq]...)
		delete(s.inFlight, seq)
	}
	return calls
}

func (s *batcherState) dropStream() {
	if s.st != nil {
		s.st.cancel()
		s.st = nil
	}
}

// broken handles a failure that may pass (the stream or the connection
// broke): drop the stream, put first (before whatever else is queued)
// the calls given and then every unanswered request's, and wait the
// reconnect delay before sending again.
func (b *batcher) broken(s *batcherState, err error, first []*call) {
	s.dropStream()
	again := append(first, s.takeInFlight()...)
	if len(again) > 0 {
		b.resends.Add(1)
	}
	s.pushFront(again)
	b.lastFailure.Store(&failure{err: err})
	delay := b.reconnect.Delay(s.attempt)
	s.attempt++
	s.retryAt = time.Now().Add(delay)
	b.log.Debug("herald: publish stream broke; sending the unanswered events again", "topic", b.topic, "error", err, "retry_in", delay, "calls", len(again))
}

func (b *batcher) run() {
	defer close(b.finished)
	s := &batcherState{inFlight: map[uint64][]*call{}}
	closing := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	drainCalls := func() {
		for s.queued < b.maxBatch || closing {
			select {
			case c := <-b.calls:
				s.pushBack(c, b.linger)
			default:
				return
			}
		}
	}

	for {
		if closing && len(s.queue) == 0 && len(s.inFlight) == 0 {
			break
		}
		backingOff := time.Now().Before(s.retryAt)
		canSend := !backingOff && len(s.inFlight) < b.inFlight && len(s.queue) > 0
		if canSend && (s.queued >= b.maxBatch || closing || !time.Now().Before(s.deadline)) {
			b.sendBatch(s)
			continue
		}

		var callsCh chan *call
		if !closing && s.queued < b.maxBatch {
			callsCh = b.calls
		}
		var timerCh <-chan time.Time
		switch {
		case canSend:
			timer.Reset(time.Until(s.deadline))
			timerCh = timer.C
		case backingOff && len(s.queue) > 0:
			timer.Reset(time.Until(s.retryAt))
			timerCh = timer.C
		}
		var respCh chan streamMsg
		if s.st != nil {
			respCh = s.st.responses
		}
		closeReq := b.closeReq
		if closing {
			closeReq = nil
		}
		select {
		case c := <-callsCh:
			s.pushBack(c, b.linger)
			drainCalls()
		case <-timerCh:
		case m := <-respCh:
			if m.err != nil {
				err := fromRPC(m.err)
				if transient(err) {
					b.broken(s, err, nil)
					continue
				}
				s.dropStream()
				for _, c := range s.takeInFlight() {
					c.resolve(callResult{err: err})
				}
				continue
			}
			if d := m.resp.GetError(); d != nil && codes.Code(d.GetGrpcCode()) == codes.Unavailable {
				// Refused for now (the broker is shutting down): nothing of
				// it was stored; like a broken stream.
				callers := s.inFlight[m.resp.GetSequence()]
				delete(s.inFlight, m.resp.GetSequence())
				b.broken(s, fromDetail(d), callers)
				continue
			}
			s.attempt = 0
			b.lastFailure.Store(nil)
			s.pushFront(answer(s.inFlight, m.resp))
		case <-closeReq:
			closing = true
			drainCalls()
		}
		timer.Stop()
	}
	if s.st != nil {
		// Half-close and let the server end the stream.
		_ = s.st.stream.CloseSend()
		select {
		case <-s.st.done:
		case <-time.After(5 * time.Second):
		}
		s.st.cancel()
	}
	// Calls that raced with Close are refused.
	for {
		select {
		case c := <-b.calls:
			c.resolve(callResult{err: ErrClosed})
		default:
			return
		}
	}
}

// sendBatch takes up to maxBatch events' worth of calls off the queue and
// sends them as one request, opening the stream first if there is none.
func (b *batcher) sendBatch(s *batcherState) {
	var callers []*call
	var events []*heraldpb.Event
	callers, events, s.queue = b.take(s.queue)
	for _, c := range callers {
		s.queued -= len(c.events)
	}
	callers, events = b.live(callers, events)
	if len(s.queue) > 0 {
		s.deadline = time.Now().Add(b.linger)
	}
	if len(callers) == 0 {
		return
	}
	if s.st == nil {
		st, err := b.open()
		if err != nil {
			if transient(err) {
				b.broken(s, err, callers)
			} else {
				fail(callers, err)
			}
			return
		}
		s.st = st
	}
	seq := s.nextSeq
	s.nextSeq++
	b.requests.Add(1)
	b.events.Add(uint64(len(events)))
	req := &heraldpb.PublishStreamRequest{Sequence: seq, Topic: b.topic, Events: events}
	if err := s.st.stream.Send(req); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream has ended; its receiver is about to say why, which
			// decides whether this request goes again.
			s.inFlight[seq] = callers
			return
		}
		// Refused by the client side (e.g. over the message size limit),
		// which ends the stream.
		err = fromRPC(err)
		if transient(err) {
			b.broken(s, err, callers)
			return
		}
		fail(callers, err)
		s.dropStream()
		if again := s.takeInFlight(); len(again) > 0 {
			b.resends.Add(1)
			s.pushFront(again)
		}
		return
	}
	s.inFlight[seq] = callers
}

// live drops from a batch the calls whose caller no longer waits (timed
// out, cancelled), or whose deadline has passed.
func (b *batcher) live(callers []*call, events []*heraldpb.Event) ([]*call, []*heraldpb.Event) {
	now := time.Now()
	keep := 0
	for _, c := range callers {
		if !c.done() && now.After(c.deadline) {
			c.resolve(callResult{err: b.timeoutErr(c)})
		}
		if !c.done() {
			keep++
		}
	}
	if keep == len(callers) {
		return callers, events
	}
	live := make([]*call, 0, keep)
	events = make([]*heraldpb.Event, 0, len(events))
	for _, c := range callers {
		if !c.done() {
			live = append(live, c)
			events = append(events, c.events...)
		}
	}
	return live, events
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
			select {
			case st.responses <- streamMsg{resp: resp, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
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
				c.resolve(callResult{err: err})
			} else if !c.done() {
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
		c.resolve(callResult{receipts: receipts})
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
		c.resolve(callResult{err: err})
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
