package herald

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

// ContentTypeProtobuf is the data_content_type the producer sets.
const ContentTypeProtobuf = "application/protobuf"

// EventType binds a Protobuf message type to Herald: the topic its events
// go to, their CloudEvents type and source, the data_schema (the message's
// full Protobuf name) and how the ordering key is read. protoc-gen-herald
// generates one per message carrying the (herald.v1.event) option, e.g.
// signuppb.UserSignedUpEvent; it can also be written by hand.
type EventType[T proto.Message] struct {
	// Topic events are published to and consumed from (overridable per
	// producer or consumer with WithTopic).
	Topic string
	// CloudEvents type, e.g. "com.example.user.signed_up".
	Type string
	// CloudEvents source, e.g. "/services/signup".
	Source string
	// The message's full Protobuf name, e.g. "acme.signup.v1.UserSignedUp";
	// set as the event's data_schema.
	Schema string
	// A new, empty message to decode into.
	New func() T
	// The ordering key of a message; nil or "" means keyless.
	Key func(T) string
}

// Of builds an EventType for T from its descriptor: Schema is the full
// message name, Type defaults to it, and New uses the message's type.
// For messages without generated bindings.
func Of[T proto.Message](topic string) EventType[T] {
	var zero T
	mt := zero.ProtoReflect().Type()
	name := string(mt.Descriptor().FullName())
	return EventType[T]{
		Topic:  topic,
		Type:   name,
		Schema: name,
		New:    func() T { return mt.New().Interface().(T) },
	}
}

// validate catches an EventType that cannot work.
func (et EventType[T]) validate() error {
	if et.Topic == "" {
		return fmt.Errorf("herald: the EventType has no Topic")
	}
	if et.New == nil {
		return fmt.Errorf("herald: the EventType for %s has no New func", et.Schema)
	}
	return nil
}

func (et EventType[T]) schema() string {
	if et.Schema != "" {
		return et.Schema
	}
	var zero T
	return string(zero.ProtoReflect().Descriptor().FullName())
}

// Receipt says where a published event went.
type Receipt struct {
	// The event id (the producer's UUIDv7, or the one given WithID).
	ID string
	// The partition it was stored in.
	Partition uint32
	// Its offset in the partition (the original's, for a duplicate).
	Offset uint64
	// The id was seen within the topic's dedup window; nothing was stored.
	Duplicate bool
	// When the broker stored it (the original, for a duplicate).
	PublishTime time.Time
}

func receiptOf(r *heraldpb.PublishResult) Receipt {
	rc := Receipt{ID: r.GetId(), Partition: r.GetPartition(), Offset: r.GetOffset(), Duplicate: r.GetDuplicate()}
	if r.GetPublishTime() != nil {
		rc.PublishTime = r.GetPublishTime().AsTime()
	}
	return rc
}
