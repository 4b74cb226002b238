// Command signup is the user sign-up example: a UserSignedUp producer and a
// consumer sending welcome e-mails. HERALD_ENDPOINT (default
// http://127.0.0.1:50051) names the broker; topics are auto-created.
//
// It uses the binding's own topic (user.signup) and a fixed subscription on
// every run, so runs do not pile up topics: each run tags its event with a
// run id, and the consumer acks and skips events of earlier runs.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
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
	// This run's id: events left by earlier runs on the topic are skipped.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)

	// Publish.
	producer := signuppb.NewUserSignedUpProducer(client)
	receipt, err := producer.Publish(ctx, &signuppb.UserSignedUp{
		UserId: "u-42", Email: "ada@example.com", SignedUpAt: timestamppb.Now(),
	}, herald.WithAttribute("example-run", run))
	if err != nil {
		log.Fatal(err)
	}
	producer.Close(ctx)
	fmt.Printf("published %s at partition %d offset %d\n", receipt.ID, receipt.Partition, receipt.Offset)

	// Consume: nil acks, an error nacks (redelivered with backoff). A new
	// subscription starts at the earliest event; later runs go on where
	// the last one stopped.
	consumer := signuppb.NewUserSignedUpConsumer(client, "welcome-email",
		herald.WithInitialPosition(herald.Earliest()))
	runCtx, stop := context.WithCancel(ctx)
	err = consumer.Run(runCtx, func(ctx context.Context, e *herald.Envelope[*signuppb.UserSignedUp]) error {
		if e.Attributes["example-run"] != run {
			return nil // an earlier run's: ack and skip
		}
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
