// Package herald is the Go SDK of Herald, a durable event broker: typed
// producers and consumers of Protobuf events over Herald's gRPC API.
//
// Event types come from protoc-gen-herald (lang=go), which emits for every
// message carrying the (herald.v1.event) option an [EventType] binding and
// typed constructors beside protoc-gen-go's output:
//
//	client, err := herald.Dial(ctx, "http://127.0.0.1:50051")
//	producer := signuppb.NewUserSignedUpProducer(client)
//	receipt, err := producer.Publish(ctx, &signuppb.UserSignedUp{UserId: "u1"})
//
//	consumer := signuppb.NewUserSignedUpConsumer(client, "welcome-email",
//		herald.WithSubscriptionType(herald.Shared), herald.WithDeadLetter("", 5))
//	err = consumer.Run(ctx, func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
//		return sendWelcome(ctx, e.Value.GetEmail()) // nil: ack; error: nack with the error as reason
//	})
//
// Failures carry Herald's [heraldpb.ErrorCode]: use errors.As with [*Error].
package herald

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

// maxMessageBytes is the largest gRPC message the client sends or accepts.
const maxMessageBytes = 64 << 20

// ReconnectPolicy says how a consumer re-attaches after its stream fails
// with UNAVAILABLE or a transport error: exponential backoff from Initial,
// times Multiplier per attempt, capped at Max, each delay randomised by up
// to ±Jitter (a fraction of it, 0 to 1).
type ReconnectPolicy struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	Jitter     float64
}

// DefaultReconnectPolicy: 100 ms doubling to 10 s, ±20 % jitter.
var DefaultReconnectPolicy = ReconnectPolicy{
	Initial:    100 * time.Millisecond,
	Max:        10 * time.Second,
	Multiplier: 2,
	Jitter:     0.2,
}

// Delay is the wait before re-attach attempt number attempt (0-based),
// jitter applied; never more than Max.
func (p ReconnectPolicy) Delay(attempt int) time.Duration {
	base := float64(p.Initial) * math.Pow(math.Max(p.Multiplier, 1), float64(attempt))
	base = math.Min(base, float64(p.Max))
	jitter := math.Min(math.Max(p.Jitter, 0), 1)
	d := base * (1 + jitter*(2*rand.Float64()-1))
	return time.Duration(math.Min(d, float64(p.Max)))
}

// DefaultKeepalive is the client's HTTP/2 keepalive: a PING after 20 s
// without anything read from the server (with or without calls open),
// and the connection is dropped (streams fail with UNAVAILABLE, consumers
// re-attach, producers resend) when no answer comes within 10 s more. A
// frozen or vanished server is so noticed at most 30 s after it last sent
// anything.
var DefaultKeepalive = keepalive.ClientParameters{
	Time:                20 * time.Second,
	Timeout:             10 * time.Second,
	PermitWithoutStream: true,
}

// Defaults of the other client options.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultRequestTimeout = 30 * time.Second
)

// clientConfig is what ClientOptions set.
type clientConfig struct {
	connectTimeout time.Duration
	requestTimeout time.Duration
	waitForServer  time.Duration
	keepalive      keepalive.ClientParameters
	reconnect      ReconnectPolicy
	dialOptions    []grpc.DialOption
	logger         *slog.Logger
	tracer         trace.TracerProvider
	propagator     propagation.TextMapPropagator
}

func defaultConfig(opts []ClientOption) clientConfig {
	cfg := clientConfig{
		connectTimeout: DefaultConnectTimeout,
		requestTimeout: DefaultRequestTimeout,
		keepalive:      DefaultKeepalive,
		reconnect:      DefaultReconnectPolicy,
		propagator:     propagation.TraceContext{},
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// ClientOption configures [Dial].
type ClientOption func(*clientConfig)

// WithConnectTimeout bounds one connection attempt (TCP, TLS and HTTP/2
// handshakes), so how long [Dial] waits for a server that accepts the
// connection but does not answer. A refused connection or an unknown host
// fails Dial at once (see [WithWaitForServer]). Default 5 s.
func WithConnectTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.connectTimeout = d }
}

// WithWaitForServer makes [Dial] keep trying, with the reconnect policy's
// backoff, for up to d when the server is not reachable yet (connection
// refused, unknown host), e.g. while it starts beside the application.
// Default 0: the first refusal fails Dial with its cause.
func WithWaitForServer(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.waitForServer = max(d, 0) }
}

// WithRequestTimeout bounds a publish whose context has no deadline
// (including the resends after a connection loss), and a consumer's
// attach. Default 30 s.
func WithRequestTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.requestTimeout = d }
}

// WithReconnectPolicy sets the backoff of reconnecting: the connection's
// own, producers' resends and consumers' re-attaches.
func WithReconnectPolicy(p ReconnectPolicy) ClientOption {
	return func(c *clientConfig) { c.reconnect = p }
}

// WithKeepalive sets the connection's HTTP/2 keepalive (default
// [DefaultKeepalive]: 20 s, 10 s, with or without calls open). A zero
// Time turns it off. gRPC-Go does not ping more often than every 10 s: a
// smaller Time counts as 10 s.
func WithKeepalive(p keepalive.ClientParameters) ClientOption {
	return func(c *clientConfig) { c.keepalive = p }
}

// WithDialOptions adds gRPC dial options (TLS credentials, interceptors...).
// By default the connection is plaintext.
func WithDialOptions(opts ...grpc.DialOption) ClientOption {
	return func(c *clientConfig) { c.dialOptions = append(c.dialOptions, opts...) }
}

// WithLogger sets where the SDK logs (handler panics, re-attaches,
// refused acks). Default slog.Default().
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) { c.logger = l }
}

// WithTracerProvider sets the tracer provider of consumers' processing
// spans. Default otel.GetTracerProvider() at the time of use.
func WithTracerProvider(tp trace.TracerProvider) ClientOption {
	return func(c *clientConfig) { c.tracer = tp }
}

// WithPropagator sets how trace context is written to and read from event
// attributes. Default the W3C TraceContext propagator (traceparent,
// tracestate), whatever the global propagator is.
func WithPropagator(p propagation.TextMapPropagator) ClientOption {
	return func(c *clientConfig) { c.propagator = p }
}

// Client is a connection to a Herald server, shared by any number of
// producers and consumers. Safe for concurrent use.
type Client struct {
	conn       *grpc.ClientConn
	publisher  heraldpb.PublisherClient
	subscriber heraldpb.SubscriberClient
	admin      heraldpb.AdminClient
	cfg        clientConfig
}

// Dial connects to the Herald server at endpoint: "host:port" or
// "http://host:port" (plaintext), or "https://host:port" (TLS, verified
// with the system's roots). It returns once the connection is ready.
// A refused connection, an unknown host or a failed TLS handshake fails it
// at once with the cause in the message (e.g. "connection refused", "no
// such host"), unless [WithWaitForServer] asks to wait; a server that
// accepts the connection but does not answer fails it after the connect
// timeout. Once connected, the connection reconnects by itself.
func Dial(ctx context.Context, endpoint string, opts ...ClientOption) (*Client, error) {
	cfg := defaultConfig(opts)
	target, useTLS, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	p := cfg.reconnect
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  max(p.Initial, time.Millisecond),
				Multiplier: math.Max(p.Multiplier, 1),
				Jitter:     math.Min(math.Max(p.Jitter, 0), 1),
				MaxDelay:   max(p.Max, p.Initial, time.Millisecond),
			},
			MinConnectTimeout: max(cfg.connectTimeout, time.Millisecond),
		}),
	}
	if cfg.keepalive.Time > 0 {
		dial = append(dial, grpc.WithKeepaliveParams(cfg.keepalive))
	}
	if useTLS {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	dial = append(dial, cfg.dialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("herald: invalid endpoint %q: %w", endpoint, err)
	}
	if err := waitReady(ctx, conn, cfg.connectTimeout, cfg.waitForServer); err != nil {
		conn.Close()
		return nil, fmt.Errorf("herald: cannot connect to %s: %w", endpoint, err)
	}
	return newClient(conn, cfg), nil
}

// NewClientFromConn wraps an existing gRPC connection (dial options in opts
// are ignored). Close closes conn.
func NewClientFromConn(conn *grpc.ClientConn, opts ...ClientOption) *Client {
	return newClient(conn, defaultConfig(opts))
}

func newClient(conn *grpc.ClientConn, cfg clientConfig) *Client {
	return &Client{
		conn:       conn,
		publisher:  heraldpb.NewPublisherClient(conn),
		subscriber: heraldpb.NewSubscriberClient(conn),
		admin:      heraldpb.NewAdminClient(conn),
		cfg:        cfg,
	}
}

// Conn is the underlying gRPC connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Admin is a raw stub of Herald's Admin service on this connection.
func (c *Client) Admin() heraldpb.AdminClient { return c.admin }

// Close closes the connection. Close producers and stop consumers first.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) logger() *slog.Logger {
	if c.cfg.logger != nil {
		return c.cfg.logger
	}
	return slog.Default()
}

func (c *Client) tracerProvider() trace.TracerProvider {
	if c.cfg.tracer != nil {
		return c.cfg.tracer
	}
	return otel.GetTracerProvider()
}

// parseEndpoint turns "http://h:p", "https://h:p" or "h:p" into a gRPC
// target and whether it needs TLS. The target is resolved by the dialer on
// every connection attempt, so a DNS failure is reported like a refused
// connection and a changed address is picked up on reconnect.
func parseEndpoint(endpoint string) (target string, useTLS bool, err error) {
	endpoint = strings.TrimSpace(endpoint)
	if endpoint == "" {
		return "", false, fmt.Errorf("herald: no endpoint given: pass e.g. \"http://127.0.0.1:50051\" or \"127.0.0.1:50051\"")
	}
	raw := endpoint
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("herald: invalid endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "http":
	case "https":
		useTLS = true
	default:
		return "", false, fmt.Errorf("herald: invalid endpoint %q: the scheme must be http or https (or none: host:port)", endpoint)
	}
	if u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("herald: invalid endpoint %q: expected host:port, http://host:port or https://host:port", endpoint)
	}
	host := u.Host
	if u.Port() == "" {
		if useTLS {
			host = net.JoinHostPort(u.Hostname(), "443")
		} else {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	return "passthrough:///" + host, useTLS, nil
}

// waitReady connects conn and waits for READY. A connection attempt that
// fails (refused, unknown host, TLS) fails it at once with the cause,
// unless waitForServer > 0: then attempts go on (with the connection's
// backoff) until waitForServer has passed. An attempt in progress is
// bounded by connectTimeout.
func waitReady(ctx context.Context, conn *grpc.ClientConn, connectTimeout, waitForServer time.Duration) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, max(connectTimeout, waitForServer))
	defer cancel()
	conn.Connect()
	var lastErr error
	for {
		s := conn.GetState()
		wait, stop := ctx, context.CancelFunc(func() {})
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure:
			lastErr = connectError(ctx, conn)
			if conn.GetState() == connectivity.Ready {
				return nil // came up meanwhile
			}
			if waitForServer == 0 {
				return lastErr
			}
			if time.Since(start) >= waitForServer {
				return fmt.Errorf("not reachable within %s (WithWaitForServer); last failure: %w", waitForServer, lastErr)
			}
			// gRPC-Go reports TRANSIENT_FAILURE until it is READY again,
			// trying in the background: look again now and then.
			wait, stop = context.WithTimeout(ctx, min(250*time.Millisecond, waitForServer-time.Since(start)))
		case connectivity.Idle:
			conn.Connect()
		case connectivity.Shutdown:
			return errors.New("the connection was closed")
		}
		changed := conn.WaitForStateChange(wait, s)
		stop()
		if !changed && ctx.Err() != nil {
			switch {
			case ctx.Err() != context.DeadlineExceeded:
				return ctx.Err()
			case lastErr != nil:
				return fmt.Errorf("not reachable within %s (WithWaitForServer); last failure: %w", time.Since(start).Round(time.Millisecond), lastErr)
			default:
				return fmt.Errorf("no answer within the connect timeout (%s; last state %s): is a Herald server listening there, and plaintext vs TLS (http:// vs https://) right?", connectTimeout, s)
			}
		}
	}
}

// connectError is why the connection is in TRANSIENT_FAILURE: gRPC-Go
// keeps the last connection error in what a call on it fails with, so ask
// with a call that fails at once (not wait-for-ready) without reaching a
// server (or reaches one that just came up, and is answered).
func connectError(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		return errors.New("the connection failed, then came back")
	}
	if st, ok := status.FromError(err); ok {
		return errors.New(st.Message())
	}
	return err
}
