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
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

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

// clientConfig is what ClientOptions set.
type clientConfig struct {
	connectTimeout time.Duration
	requestTimeout time.Duration
	reconnect      ReconnectPolicy
	dialOptions    []grpc.DialOption
	logger         *slog.Logger
	tracer         trace.TracerProvider
	propagator     propagation.TextMapPropagator
}

// ClientOption configures [Dial].
type ClientOption func(*clientConfig)

// WithConnectTimeout bounds how long [Dial] waits for the connection to be
// ready. Default 5 s.
func WithConnectTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.connectTimeout = d }
}

// WithRequestTimeout bounds a publish whose context has no deadline, and a
// consumer's attach. Default 30 s.
func WithRequestTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.requestTimeout = d }
}

// WithReconnectPolicy sets how consumers re-attach after a failure.
func WithReconnectPolicy(p ReconnectPolicy) ClientOption {
	return func(c *clientConfig) { c.reconnect = p }
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

// Dial connects to the Herald server at endpoint ("http://host:port" or
// "host:port") and waits up to the connect timeout for the connection to be
// ready.
func Dial(ctx context.Context, endpoint string, opts ...ClientOption) (*Client, error) {
	cfg := clientConfig{
		connectTimeout: 5 * time.Second,
		requestTimeout: 30 * time.Second,
		reconnect:      DefaultReconnectPolicy,
		propagator:     propagation.TraceContext{},
	}
	for _, o := range opts {
		o(&cfg)
	}
	target, useTLS, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
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
	if err := waitReady(ctx, conn, cfg.connectTimeout); err != nil {
		conn.Close()
		return nil, fmt.Errorf("herald: cannot connect to %s (connect timeout %s): %w", endpoint, cfg.connectTimeout, err)
	}
	return NewClientFromConn(conn, opts...), nil
}

// NewClientFromConn wraps an existing gRPC connection (dial options in opts
// are ignored). Close closes conn.
func NewClientFromConn(conn *grpc.ClientConn, opts ...ClientOption) *Client {
	cfg := clientConfig{
		connectTimeout: 5 * time.Second,
		requestTimeout: 30 * time.Second,
		reconnect:      DefaultReconnectPolicy,
		propagator:     propagation.TraceContext{},
	}
	for _, o := range opts {
		o(&cfg)
	}
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
// target and whether it needs TLS.
func parseEndpoint(endpoint string) (target string, useTLS bool, err error) {
	if endpoint == "" {
		return "", false, fmt.Errorf("herald: no endpoint given: pass e.g. \"http://127.0.0.1:50051\"")
	}
	if !strings.Contains(endpoint, "://") {
		return endpoint, false, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("herald: invalid endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "http":
	case "https":
		useTLS = true
	default:
		return "", false, fmt.Errorf("herald: invalid endpoint %q: the scheme must be http or https", endpoint)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", false, fmt.Errorf("herald: invalid endpoint %q: expected http://host:port", endpoint)
	}
	host := u.Host
	if u.Port() == "" {
		if useTLS {
			host += ":443"
		} else {
			host += ":80"
		}
	}
	return "dns:///" + host, useTLS, nil
}

// waitReady connects conn and waits for READY.
func waitReady(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, s) {
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("not ready within %s (last state %s)", timeout, s)
			}
			return ctx.Err()
		}
	}
}
