package herald

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

// ProducerOption configures [NewProducer].
type ProducerOption interface{ applyProducer(*producerConfig) }

// ConsumerOption configures [NewConsumer].
type ConsumerOption interface{ applyConsumer(*consumerConfig) }

type producerOptionFunc func(*producerConfig)

func (f producerOptionFunc) applyProducer(c *producerConfig) { f(c) }

type consumerOptionFunc func(*consumerConfig)

func (f consumerOptionFunc) applyConsumer(c *consumerConfig) { f(c) }

// topicOption is both a ProducerOption and a ConsumerOption.
type topicOption string

func (t topicOption) applyProducer(c *producerConfig) { c.topic = string(t) }
func (t topicOption) applyConsumer(c *consumerConfig) { c.attach.Topic = string(t) }

// WithTopic publishes to or consumes from topic instead of the
// EventType's. For producers and consumers.
func WithTopic(topic string) interface {
	ProducerOption
	ConsumerOption
} {
	return topicOption(topic)
}

// WithLinger is how long the first queued event of a batch waits for more
// before the batch is sent. Default 1 ms; 0 sends whatever is queued at
// once.
func WithLinger(d time.Duration) ProducerOption {
	return producerOptionFunc(func(c *producerConfig) { c.linger = max(d, 0) })
}

// WithMaxBatch is the most events in one request (a single PublishBatch
// larger than this still goes whole). Default 1000.
func WithMaxBatch(n int) ProducerOption {
	return producerOptionFunc(func(c *producerConfig) { c.maxBatch = max(n, 1) })
}

// WithMaxInFlight is the most requests sent and not yet answered; further
// batches wait. Default 8.
func WithMaxInFlight(n int) ProducerOption {
	return producerOptionFunc(func(c *producerConfig) { c.maxInFlight = max(n, 1) })
}

// WithSource sets the CloudEvents source instead of the EventType's.
func WithSource(source string) ProducerOption {
	return producerOptionFunc(func(c *producerConfig) { c.source = source })
}

// PublishOption sets envelope fields of one Publish call.
type PublishOption func(*publishConfig)

type publishConfig struct {
	attributes map[string]string
	subject    string
	id         string
	key        *string
	time       *time.Time
}

// WithAttribute adds the CloudEvents extension attribute name=value.
func WithAttribute(name, value string) PublishOption {
	return func(c *publishConfig) {
		if c.attributes == nil {
			c.attributes = map[string]string{}
		}
		c.attributes[name] = value
	}
}

// WithAttributes adds attributes.
func WithAttributes(attributes map[string]string) PublishOption {
	return func(c *publishConfig) {
		if c.attributes == nil {
			c.attributes = make(map[string]string, len(attributes))
		}
		for k, v := range attributes {
			c.attributes[k] = v
		}
	}
}

// WithSubject sets the CloudEvents subject.
func WithSubject(subject string) PublishOption {
	return func(c *publishConfig) { c.subject = subject }
}

// WithID sets the event id instead of a fresh UUIDv7; the broker
// deduplicates ids it has seen within the topic's dedup window.
func WithID(id string) PublishOption {
	return func(c *publishConfig) { c.id = id }
}

// WithKey sets the ordering key instead of the EventType's Key func.
func WithKey(key string) PublishOption {
	return func(c *publishConfig) { c.key = &key }
}

// WithTime sets the CloudEvents time instead of now.
func WithTime(t time.Time) PublishOption {
	return func(c *publishConfig) { c.time = &t }
}

// SubscriptionType says how a subscription's events are shared among its
// consumers; fixed when the subscription is created.
type SubscriptionType = heraldpb.SubscriptionType

const (
	// Exclusive: one consumer; a second attach is refused.
	Exclusive = heraldpb.SubscriptionType_SUBSCRIPTION_TYPE_EXCLUSIVE
	// Shared: round-robin over consumers with free credits; no ordering.
	Shared = heraldpb.SubscriptionType_SUBSCRIPTION_TYPE_SHARED
	// Failover: one active consumer per partition, the rest stand by.
	Failover = heraldpb.SubscriptionType_SUBSCRIPTION_TYPE_FAILOVER
	// KeyShared: events of one key always go to the same consumer, in order.
	KeyShared = heraldpb.SubscriptionType_SUBSCRIPTION_TYPE_KEY_SHARED
)

// Position is where a new subscription starts.
type Position struct{ pb *heraldpb.Position }

// Earliest: the oldest retained event.
func Earliest() Position {
	return Position{&heraldpb.Position{Kind: &heraldpb.Position_Earliest{Earliest: &emptypb.Empty{}}}}
}

// Latest: only events published from now on (the server's default).
func Latest() Position {
	return Position{&heraldpb.Position{Kind: &heraldpb.Position_Latest{Latest: &emptypb.Empty{}}}}
}

// AtOffsets: explicit per-partition offsets; partitions not listed start at
// the earliest event.
func AtOffsets(offsets map[uint32]uint64) Position {
	return Position{&heraldpb.Position{Kind: &heraldpb.Position_Offsets{Offsets: &heraldpb.PartitionOffsets{Offsets: offsets}}}}
}

// AtTime: the first event published at or after t.
func AtTime(t time.Time) Position {
	return Position{&heraldpb.Position{Kind: &heraldpb.Position_Timestamp{Timestamp: timestamppb.New(t)}}}
}

// RedeliveryPolicy is a new subscription's redelivery with exponential
// backoff, and dead-lettering. Zero fields take the server's defaults
// (1 s, 60 s, ×2, never dead-letter, "<topic>.<subscription>.dlq").
type RedeliveryPolicy struct {
	MinBackoff time.Duration
	MaxBackoff time.Duration
	Multiplier float64
	// Past this many deliveries the event goes to the dead-letter topic;
	// 0: never.
	MaxDeliveryAttempts uint32
	DeadLetterTopic     string
}

func (p RedeliveryPolicy) proto() *heraldpb.RedeliveryPolicy {
	pb := &heraldpb.RedeliveryPolicy{
		Multiplier:          p.Multiplier,
		MaxDeliveryAttempts: p.MaxDeliveryAttempts,
		DeadLetterTopic:     p.DeadLetterTopic,
	}
	if p.MinBackoff > 0 {
		pb.MinBackoff = durationpb.New(p.MinBackoff)
	}
	if p.MaxBackoff > 0 {
		pb.MaxBackoff = durationpb.New(p.MaxBackoff)
	}
	return pb
}

// WithSubscriptionType sets the subscription's type. Default Shared.
func WithSubscriptionType(t SubscriptionType) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.attach.Type = t })
}

// WithConsumerName names this consumer (unique in the subscription; shown
// to failover standbys). Default: the server makes one up.
func WithConsumerName(name string) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.attach.ConsumerName = name })
}

// WithPriority: failover consumers with lower values are preferred for the
// active role.
func WithPriority(p int32) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.attach.Priority = p })
}

// WithInitialPosition sets where a new subscription starts. Default (the
// server's): Latest.
func WithInitialPosition(p Position) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.attach.InitialPosition = p.pb })
}

// WithCredits is the most deliveries outstanding (unfinished) on this
// consumer; credits are granted back automatically as events are acked or
// nacked. Default 100, at most 10,000.
func WithCredits(n uint32) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.attach.InitialCredits = min(max(n, 1), 10_000) })
}

// WithAckDeadline: an event not acked within d is redelivered. Default
// (the server's) 30 s.
func WithAckDeadline(d time.Duration) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.attach.AckDeadline = durationpb.New(d) })
}

// WithRedelivery sets a new subscription's redelivery policy.
func WithRedelivery(p RedeliveryPolicy) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.attach.Redelivery = p.proto() })
}

// WithDeadLetter is the dead-letter shorthand: an event nacked (handler
// error, panic, undecodable payload) or left unacked maxAttempts times is
// moved by the broker to deadLetterTopic ("" = "<topic>.<subscription>.dlq")
// with the last nack reason in its herald_dlq_reason attribute. It keeps
// any backoff set with WithRedelivery. Applies when the subscription is
// created.
func WithDeadLetter(deadLetterTopic string, maxAttempts uint32) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) {
		if c.attach.Redelivery == nil {
			c.attach.Redelivery = &heraldpb.RedeliveryPolicy{}
		}
		c.attach.Redelivery.DeadLetterTopic = deadLetterTopic
		c.attach.Redelivery.MaxDeliveryAttempts = maxAttempts
	})
}

// WithReconnect turns re-attaching after a transient failure on or off.
// Default on, with the client's ReconnectPolicy.
func WithReconnect(on bool) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.reconnect = on })
}

// WithActiveStatus calls f whenever the server reports this consumer's
// failover role (on attach and on every handover). f runs on the
// consumer's goroutine; keep it short.
func WithActiveStatus(f func(ActiveStatus)) ConsumerOption {
	return consumerOptionFunc(func(c *consumerConfig) { c.onActive = f })
}
