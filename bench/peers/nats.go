package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	natsStream   = "bench"
	natsSubject  = "bench"
	natsConsumer = "bench"
)

// natsBroker: a JetStream stream on file storage (R1, limits retention, as
// `nats bench js` creates) and one durable pull consumer with explicit acks.
// Each producer and the consumer have their own connection.
type natsBroker struct {
	o    options
	conn []*nats.Conn
}

func newNATS(o options) (*natsBroker, error) {
	b := &natsBroker{o: o}
	nc, err := b.connect("setup")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     natsStream,
		Subjects: []string{natsSubject},
		Storage:  jetstream.FileStorage,
		Replicas: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream: %w", err)
	}
	_, err = stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       natsConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: o.fetch,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer: %w", err)
	}
	return b, nil
}

func (b *natsBroker) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(b.o.addr, nats.Name("herald-peers-"+name))
	if err != nil {
		return nil, err
	}
	b.conn = append(b.conn, nc)
	return nc, nil
}

func (b *natsBroker) close() {
	for _, nc := range b.conn {
		nc.Close()
	}
}

type pending struct {
	paf   jetstream.PubAckFuture
	stamp int64
}

// natsProducer: JetStream async publishes of one message each, at most
// `window` unacknowledged; a collector waits for the acks in order.
type natsProducer struct {
	js      jetstream.JetStream
	size    int
	slots   chan struct{}
	inbox   chan pending
	done    chan struct{}
	started bool
	acked   func(int64, error)
}

func (b *natsBroker) producer(id int) (producer, error) {
	nc, err := b.connect(fmt.Sprintf("producer-%d", id))
	if err != nil {
		return nil, err
	}
	// The library's own limit sits above ours, so it never stalls a publish.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*b.o.window+16),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	return &natsProducer{
		js:    js,
		size:  b.o.size,
		slots: make(chan struct{}, b.o.window),
		inbox: make(chan pending, b.o.window+1),
		done:  make(chan struct{}),
	}, nil
}

func (p *natsProducer) collect() {
	defer close(p.done)
	for q := range p.inbox {
		select {
		case <-q.paf.Ok():
			p.acked(q.stamp, nil)
		case err := <-q.paf.Err():
			p.acked(q.stamp, err)
		}
		<-p.slots
	}
}

func (p *natsProducer) send(stamps []int64, acked func(int64, error)) error {
	if !p.started {
		p.started, p.acked = true, acked
		go p.collect()
	}
	for _, at := range stamps {
		p.slots <- struct{}{}
		paf, err := p.js.PublishAsync(natsSubject, stamped(p.size, at))
		if err != nil {
			<-p.slots
			return err
		}
		p.inbox <- pending{paf, at}
	}
	return nil
}

func (p *natsProducer) flush() {
	if p.started {
		close(p.inbox)
		<-p.done
		p.started = false
	}
}

func (p *natsProducer) close() {}

// consume: Consume() with up to `fetch` messages buffered (pulls refilled at
// half), each message acked on its own (Ack: sent, not awaited).
func (b *natsBroker) consume(stop <-chan struct{}, got func(int64, bool)) error {
	nc, err := b.connect("consumer")
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cons, err := js.Consumer(ctx, natsStream, natsConsumer)
	cancel()
	if err != nil {
		return err
	}
	errs := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		stamp, ok := readStamp(m.Data())
		got(stamp, ok)
		if err := m.Ack(); err != nil {
			select {
			case errs <- err:
			default:
			}
		}
	}, jetstream.PullMaxMessages(b.o.fetch))
	if err != nil {
		return err
	}
	select {
	case <-stop:
		cc.Stop()
		<-cc.Closed()
		return nil
	case err := <-errs:
		cc.Stop()
		return fmt.Errorf("ack: %w", err)
	}
}
