// Command signup is the user sign-up example: a UserSignedUp producer and a
// consumer sending welcome e-mails. HERALD_ENDPOINT (default
// http://127.0.0.1:50051) names the broker; topics are auto-created.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	herald "github.com/herald-broker/herald/sdks/go"
	"github.com/herald-broker/herald/sdks/go/examples/signuppb"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := herald.Dial(ctx, endpoint())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	// A topic of its own per run, so the example can run again on one broker.
	topic := herald.WithTopic(fmt.Sprintf("user.signup.example-%d", time.Now().UnixNano()))

	// Publish.
	producer := signuppb.NewUserSignedUpProducer(client, topic)
	receipt, err := producer.Publish(ctx, &signuppb.UserSignedUp{
		UserId: "u-42", Email: "ada@example.com", SignedUpAt: timestamppb.Now(),
	})
	if err != nil {
		log.Fatal(err)
	}
	producer.Close(ctx)
	fmt.Printf("published %s at partition %d offset %d\n", receipt.ID, receipt.Partition, receipt.Offset)

	// Consume: nil acks, an error nacks (redelivered with backoff).
	consumer := signuppb.NewUserSignedUpConsumer(client, "welcome-email", topic,
		herald.WithInitialPosition(herald.Earliest()))
	runCtx, stop := context.WithCancel(ctx)
	err = consumer.Run(runCtx, func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
		fmt.Printf("welcome %s <%s> (%s, key %s)\n", e.Value.GetUserId(), e.Value.GetEmail(), e.Type, e.Key)
		stop() // one is enough for the example
		return nil
	})
	if err != nil || ctx.Err() != nil {
		log.Fatalf("consumer: %v %v", err, ctx.Err())
	}
}

func endpoint() string {
	if e := os.Getenv("HERALD_ENDPOINT"); e != "" {
		return e
	}
	return "http://127.0.0.1:50051"
}
