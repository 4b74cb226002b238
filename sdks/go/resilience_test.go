package herald_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/emptypb"

	herald "github.com/herald-broker/herald/sdks/go"
	"github.com/herald-broker/herald/sdks/go/examples/signuppb"
	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

// readTopic reads every event of topic from the earliest, without a
// subscription.
func readTopic(t *testing.T, c *herald.Client, topic string) []*heraldpb.DeliveredEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := heraldpb.NewSubscriberClient(c.Conn()).Read(ctx, &heraldpb.ReadRequest{
		Topic:    topic,
		Position: &heraldpb.Position{Kind: &heraldpb.Position_Earliest{Earliest: &emptypb.Empty{}}},
	})
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	var events []*heraldpb.DeliveredEvent
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return events
		}
		if err != nil {
			t.Fatalf("read %s: %v", topic, err)
		}
		events = append(events, resp.GetEvents()...)
	}
}

// published is the outcome of one Publish call.
type published struct {
	receipt herald.Receipt
	err     error
	took    time.Duration
}

// publishLoop runs n goroutines publishing one event at a time until stop
// is closed; wait returns every outcome.
func publishLoop(p *herald.Producer[*signuppb.UserSignedUp], n int, stop <-chan struct{}) (wait func() []published) {
	var mu sync.Mutex
	var out []published
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				r, err := p.Publish(context.Background(), &signuppb.UserSignedUp{UserId: fmt.Sprintf("g%d-%d", g, i)})
				mu.Lock()
				out = append(out, published{r, err, time.Since(start)})
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	return func() []published {
		wg.Wait()
		return out
	}
}

// checkStoredOnce fails unless every call succeeded and its event is in
// the log exactly once, where its receipt says.
func checkStoredOnce(t *testing.T, outcomes []published, log []*heraldpb.DeliveredEvent, timeout time.Duration) {
	t.Helper()
	stored := map[string][]*heraldpb.DeliveredEvent{}
	for _, e := range log {
		stored[e.GetEvent().GetId()] = append(stored[e.GetEvent().GetId()], e)
	}
	for id, copies := range stored {
		if len(copies) != 1 {
			t.Errorf("event %s stored %d times (offsets %d and %d)", id, len(copies), copies[0].GetOffset(), copies[1].GetOffset())
		}
	}
	for _, o := range outcomes {
		if o.err != nil {
			t.Errorf("a publish failed after %s, before its %s timeout: %v", o.took.Round(time.Millisecond), timeout, o.err)
			continue
		}
		copies := stored[o.receipt.ID]
		if len(copies) == 0 {
			t.Errorf("event %s: receipt %+v but not in the log", o.receipt.ID, o.receipt)
			continue
		}
		if e := copies[0]; e.GetPartition() != o.receipt.Partition || e.GetOffset() != o.receipt.Offset {
			t.Errorf("event %s stored at %d/%d, receipt said %d/%d", o.receipt.ID, e.GetPartition(), e.GetOffset(), o.receipt.Partition, o.receipt.Offset)
		}
	}
	if len(stored) != len(outcomes) {
		t.Errorf("%d events in the log, %d publishes", len(stored), len(outcomes))
	}
}

// tcpProxy forwards connections to a server and can cut them all.
type tcpProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	paused bool // hold what the server sends
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		l.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(server, client, false)
		go p.pipe(client, server, true)
	}
}

// pipe copies src to dst; downstream (server to client) data waits while
// the proxy is paused.
func (p *tcpProxy) pipe(dst, src net.Conn, downstream bool) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for downstream && n > 0 && p.isPaused() {
			time.Sleep(2 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *tcpProxy) isPaused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// pause holds the server's answers (requests still reach it).
func (p *tcpProxy) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// cut closes every connection at once (and unpauses).
func (p *tcpProxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, as a crashed peer or middlebox would
		}
		c.Close()
	}
	p.paused = false
	p.mu.Unlock()
}

// While several goroutines publish through a proxy that cuts every
// connection three times (each time after holding the broker's answers
// for a while, so requests the broker stored go unanswered), no publish
// fails, and each event is stored exactly once at the offset its receipt
// names: the unanswered ones were sent again and came back as duplicates.
func TestProducerResendsAcrossConnectionCuts(t *testing.T) {
	srv := startServer(t, "--in-memory")
	proxy := startProxy(t, srv.addr)
	const timeout = 20 * time.Second
	client := dialEndpoint(t, proxy.addr(), herald.WithRequestTimeout(timeout))
	topic := uniq(t, "cuts")
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	defer producer.Close(context.Background())

	stop := make(chan struct{})
	wait := publishLoop(producer, 4, stop)
	time.Sleep(300 * time.Millisecond)
	for range 3 {
		proxy.pause()
		time.Sleep(150 * time.Millisecond)
		proxy.cut()
		time.Sleep(400 * time.Millisecond)
	}
	close(stop)
	outcomes := wait()

	duplicates := 0
	for _, o := range outcomes {
		if o.err == nil && o.receipt.Duplicate {
			duplicates++
		}
	}
	stats := producer.Stats()
	t.Logf("%d publishes, %d answered as duplicates of a stored event, stats %+v", len(outcomes), duplicates, stats)
	checkStoredOnce(t, outcomes, readTopic(t, srv.dial(t), topic), timeout)
	if stats.Resends < 3 || duplicates == 0 {
		t.Errorf("3 cuts with answers held back, but %d resends and %d duplicates: the cuts were not exercised", stats.Resends, duplicates)
	}

	// A refusal by the broker is not retried: it fails at once.
	start := time.Now()
	_, err := producer.Publish(context.Background(), &signuppb.UserSignedUp{UserId: "big", Email: strings.Repeat("x", 2<<20)})
	var herr *herald.Error
	if !errors.As(err, &herr) || herr.GRPCCode != codes.InvalidArgument || time.Since(start) > 2*time.Second {
		t.Fatalf("oversize event: %v after %s, want INVALID_ARGUMENT at once", err, time.Since(start))
	}
}

// kill -9 of the broker in the middle of a publish loop, restarted 2 s
// later on the same port and data dir: every call succeeds (its timeout
// is longer than the outage) and every event is stored once.
func TestProducerSurvivesBrokerRestart(t *testing.T) {
	srv := startServer(t)
	const timeout = 20 * time.Second
	client := srv.dial(t, herald.WithRequestTimeout(timeout))
	topic := uniq(t, "crash")
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	defer producer.Close(context.Background())

	stop := make(chan struct{})
	wait := publishLoop(producer, 3, stop)
	time.Sleep(400 * time.Millisecond)
	srv.kill()
	killed := time.Now()
	time.Sleep(2 * time.Second)
	srv.restart()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	outcomes := wait()

	waited := 0
	for _, o := range outcomes {
		if o.err == nil && o.took > time.Since(killed)/2 {
			waited++
		}
	}
	t.Logf("%d publishes, %d waited out the outage, stats %+v", len(outcomes), waited, producer.Stats())
	checkStoredOnce(t, outcomes, readTopic(t, client, topic), timeout)
	if waited == 0 || producer.Stats().Resends == 0 {
		t.Errorf("no publish was in flight across the outage (stats %+v)", producer.Stats())
	}
}

// A publish whose timeout passes while the broker is down fails then (not
// before), with DeadlineExceeded and the connection failure in the
// message.
func TestPublishTimesOutWhileBrokerIsDown(t *testing.T) {
	srv := startServer(t, "--in-memory")
	client := srv.dial(t)
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(uniq(t, "down")))
	defer producer.Close(context.Background())
	if _, err := producer.Publish(context.Background(), &signuppb.UserSignedUp{UserId: "before"}); err != nil {
		t.Fatal(err)
	}
	srv.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "during"})
	took := time.Since(start)
	var herr *herald.Error
	if !errors.As(err, &herr) || herr.GRPCCode != codes.DeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want DeadlineExceeded", err)
	}
	if took < 750*time.Millisecond || took > 3*time.Second {
		t.Fatalf("failed after %s, want at its 800ms deadline", took)
	}
	if !strings.Contains(herr.Message, "connection refused") || herr.Metadata["id"] == "" {
		t.Fatalf("message %q metadata %v: should name the cause and the event id", herr.Message, herr.Metadata)
	}
}

func TestDialEndpointsAndConnectFailures(t *testing.T) {
	srv := startServer(t, "--in-memory")
	ctx := context.Background()

	t.Run("bare host:port", func(t *testing.T) {
		c := dialEndpoint(t, srv.addr)
		p := signuppb.NewUserSignedUpProducer(c, herald.WithTopic(uniq(t, "bare")))
		defer p.Close(ctx)
		if _, err := p.Publish(ctx, &signuppb.UserSignedUp{UserId: "u"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("https means TLS", func(t *testing.T) {
		// The test server is plaintext: a TLS handshake with it fails, at
		// once, and says so.
		start := time.Now()
		_, err := herald.Dial(ctx, "https://"+srv.addr)
		if err == nil || !strings.Contains(err.Error(), "tls") || time.Since(start) > time.Second {
			t.Fatalf("%v after %s", err, time.Since(start))
		}
	})

	t.Run("refused fails fast with the cause", func(t *testing.T) {
		addr := freeAddr(t)
		for _, ep := range []string{addr, "http://" + addr} {
			start := time.Now()
			_, err := herald.Dial(ctx, ep)
			if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "cannot connect") || time.Since(start) > 500*time.Millisecond {
				t.Fatalf("%s: %v after %s", ep, err, time.Since(start))
			}
		}
	})

	t.Run("unknown host fails fast with the cause", func(t *testing.T) {
		// .onion names are never looked up (RFC 7686): a name that cannot
		// resolve, without asking a DNS server.
		start := time.Now()
		_, err := herald.Dial(ctx, "http://herald-no-such-host.onion:50051")
		if err == nil || !strings.Contains(err.Error(), "herald-no-such-host.onion") || !strings.Contains(err.Error(), "dial") ||
			strings.Contains(err.Error(), "not ready") || time.Since(start) > 500*time.Millisecond {
			t.Fatalf("%v after %s", err, time.Since(start))
		}
	})

	t.Run("wait for a server that starts during the wait", func(t *testing.T) {
		late := newServer(t, freeAddr(t), "--in-memory")
		spawned := make(chan error, 1)
		go func() {
			time.Sleep(700 * time.Millisecond)
			spawned <- late.spawn()
		}()
		t.Cleanup(func() {
			if <-spawned == nil {
				late.stop()
			}
		})
		start := time.Now()
		c, err := herald.Dial(ctx, late.addr, herald.WithWaitForServer(15*time.Second), herald.WithReconnectPolicy(fastReconnect))
		if err != nil {
			t.Fatalf("after %s: %v", time.Since(start), err)
		}
		defer c.Close()
		if time.Since(start) < 700*time.Millisecond {
			t.Fatalf("connected after %s, before the server started", time.Since(start))
		}
		p := signuppb.NewUserSignedUpProducer(c, herald.WithTopic(uniq(t, "late")))
		defer p.Close(ctx)
		if _, err := p.Publish(ctx, &signuppb.UserSignedUp{UserId: "u"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("wait for server gives up with the cause", func(t *testing.T) {
		start := time.Now()
		_, err := herald.Dial(ctx, freeAddr(t), herald.WithWaitForServer(600*time.Millisecond), herald.WithReconnectPolicy(fastReconnect))
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "connection refused") || took < 600*time.Millisecond || took > 3*time.Second {
			t.Fatalf("%v after %s", err, took)
		}
	})
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A frozen broker (SIGSTOP: the kernel still accepts and acknowledges, the
// process answers nothing) is noticed by keepalive: the consumer's stream
// breaks and it re-attaches, and a publish in flight is sent again, both
// once the broker runs again. The test asks for keepalive 1 s / 1 s;
// gRPC-Go pings at most every 10 s, so the freeze is noticed about 11 s
// after the last bytes read (without keepalive: never).
func TestKeepaliveDetectsFrozenServer(t *testing.T) {
	srv := startServer(t, "--in-memory")
	var logs syncBuffer
	client := srv.dial(t,
		herald.WithKeepalive(keepalive.ClientParameters{Time: time.Second, Timeout: time.Second, PermitWithoutStream: true}),
		herald.WithRequestTimeout(30*time.Second),
		herald.WithConnectTimeout(2*time.Second),
		herald.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	topic := uniq(t, "frozen")
	producer := signuppb.NewUserSignedUpProducer(client, herald.WithTopic(topic))
	defer producer.Close(context.Background())
	if _, err := producer.Publish(context.Background(), &signuppb.UserSignedUp{UserId: "before"}); err != nil {
		t.Fatal(err)
	}
	var rec recorder[*signuppb.UserSignedUp]
	consumer := signuppb.NewUserSignedUpConsumer(client, "frozen-sub", herald.WithTopic(topic), herald.WithInitialPosition(herald.Earliest()))
	stop := runConsumer(t, consumer, func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
		rec.add(e)
		return nil
	})
	waitFor(t, "the first event", func() bool { return rec.len() == 1 })

	srv.signal(syscall.SIGSTOP)
	t.Cleanup(func() { srv.signal(syscall.SIGCONT) })
	frozen := time.Now()
	publishing := make(chan published, 1)
	go func() {
		start := time.Now()
		r, err := producer.Publish(context.Background(), &signuppb.UserSignedUp{UserId: "during"})
		publishing <- published{r, err, time.Since(start)}
	}()
	deadline := frozen.Add(16 * time.Second)
	for !strings.Contains(logs.String(), "re-attaching") {
		if time.Now().After(deadline) {
			t.Fatalf("the consumer did not notice the frozen server within 16 s; log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	noticed := time.Since(frozen)
	if !strings.Contains(logs.String(), "keepalive") {
		t.Errorf("the stream broke, but not by keepalive; log:\n%s", logs.String())
	}
	t.Logf("frozen server noticed after %s", noticed.Round(time.Millisecond))

	srv.signal(syscall.SIGCONT)
	select {
	case p := <-publishing:
		if p.err != nil {
			t.Fatalf("the publish in flight during the freeze: %v", p.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the publish in flight during the freeze did not complete within 10 s of the server resuming")
	}
	waitFor(t, "the event published during the freeze, after re-attaching", func() bool { return rec.len() >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stored := readTopic(t, client, topic)
	if len(stored) != 2 {
		t.Fatalf("%d events stored, want 2", len(stored))
	}
}
