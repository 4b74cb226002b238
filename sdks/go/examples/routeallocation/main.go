// Command routeallocation is the route-allocation flow: allocations are
// recorded; a dispatcher on a shared subscription turns each into a
// DriverAlertRequested; an allocation with no driver is poison: nacked on
// every attempt and dead-lettered by the broker after 3. HERALD_ENDPOINT
// (default http://127.0.0.1:50051) names the broker.
//
// It uses the bindings' own topics (transport.route-allocations,
// transport.driver-alerts and the dead-letter topic
// transport.route-allocations.dispatch.dlq) and fixed subscriptions on
// every run, so runs do not pile up topics: each run tags its events with
// a run id (the dispatcher passes it on), and every consumer acks and skips
// events of earlier runs.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	herald "github.com/herald-broker/herald/sdks/go"
	"github.com/herald-broker/herald/sdks/go/examples/transportpb"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := herald.Dial(ctx, endpoint())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	// This run's id: events left by earlier runs are skipped.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	ours := func(attributes map[string]string) bool { return attributes["example-run"] == run }
	tag := herald.WithAttribute("example-run", run)

	// The dispatcher: shared subscription, dead letters after 3 attempts.
	alertProducer := transportpb.NewDriverAlertRequestedProducer(client)
	defer alertProducer.Close(ctx)
	dispatcher := transportpb.NewRouteAllocationRecordedConsumer(client, "dispatch",
		herald.WithInitialPosition(herald.Earliest()),
		herald.WithRedelivery(herald.RedeliveryPolicy{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}),
		herald.WithDeadLetter("", 3))
	dispatchCtx, stopDispatch := context.WithCancel(ctx)
	dispatched := make(chan error, 1)
	go func() {
		dispatched <- dispatcher.Run(dispatchCtx, func(ctx context.Context, e *herald.Envelope[*transportpb.RouteAllocationRecorded]) error {
			if !ours(e.Attributes) {
				return nil // an earlier run's: ack and skip
			}
			a := e.Value
			if a.GetDriverId() == "" {
				return fmt.Errorf("allocation of route %s has no driver", a.GetRouteId())
			}
			_, err := alertProducer.Publish(ctx, &transportpb.DriverAlertRequested{
				DriverId: a.GetDriverId(), RouteId: a.GetRouteId(),
				Message: fmt.Sprintf("route %s is yours, vehicle %s", a.GetRouteId(), a.GetVehicleId()),
			}, tag)
			return err
		})
	}()

	// Record three allocations, one of them poison.
	producer := transportpb.NewRouteAllocationRecordedProducer(client)
	for _, a := range []*transportpb.RouteAllocationRecorded{
		{RouteId: "r-1", DriverId: "d-7", VehicleId: "v-3"},
		{RouteId: "r-2", DriverId: "", VehicleId: "v-4"},
		{RouteId: "r-3", DriverId: "d-9", VehicleId: "v-5"},
	} {
		if _, err := producer.Publish(ctx, a, tag); err != nil {
			log.Fatal(err)
		}
	}
	producer.Close(ctx)

	// Two alerts arrive...
	must(consume(ctx, transportpb.NewDriverAlertRequestedConsumer(client, "notifier",
		herald.WithInitialPosition(herald.Earliest())), 2, ours,
		func(e *herald.Envelope[*transportpb.DriverAlertRequested]) {
			fmt.Printf("alert for %s: %s\n", e.Value.GetDriverId(), e.Value.GetMessage())
		}))
	// ...and the poison allocation lands in the dead-letter topic.
	must(consume(ctx, transportpb.NewRouteAllocationRecordedConsumer(client, "dlq-audit",
		herald.WithTopic(transportpb.RouteAllocationRecordedEvent.Topic+".dispatch.dlq"),
		herald.WithInitialPosition(herald.Earliest())), 1, ours,
		func(e *herald.Envelope[*transportpb.RouteAllocationRecorded]) {
			fmt.Printf("dead letter: route %s after %s attempts: %s\n", e.Value.GetRouteId(),
				e.Attributes["herald_dlq_attempts"], e.Attributes["herald_dlq_reason"])
		}))
	stopDispatch()
	must(<-dispatched)
}

// consume runs c until it has handled n events with f; events for which
// ours is false are acked and skipped.
func consume[T proto.Message](ctx context.Context, c *herald.Consumer[T], n int, ours func(map[string]string) bool, f func(*herald.Envelope[T])) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	seen := 0
	err := c.Run(ctx, func(_ context.Context, e *herald.Envelope[T]) error {
		if !ours(e.Attributes) {
			return nil
		}
		f(e)
		if seen++; seen == n {
			stop()
		}
		return nil
	})
	if err == nil && seen < n {
		err = fmt.Errorf("%s: stopped after %d of %d events", c.Topic(), seen, n)
	}
	return err
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func endpoint() string {
	if e := os.Getenv("HERALD_ENDPOINT"); e != "" {
		return e
	}
	return "http://127.0.0.1:50051"
}
