// Command routeallocation is the route-allocation flow: allocations are
// recorded; a dispatcher on a shared subscription turns each into a
// DriverAlertRequested; an allocation with no driver is poison: nacked on
// every attempt and dead-lettered by the broker after 3. HERALD_ENDPOINT
// (default http://127.0.0.1:50051) names the broker.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
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
	run := time.Now().UnixNano() // topics of their own per run
	allocations := fmt.Sprintf("transport.route-allocations.example-%d", run)
	alerts := fmt.Sprintf("transport.driver-alerts.example-%d", run)

	// The dispatcher: shared subscription, dead letters after 3 attempts.
	alertProducer := transportpb.NewDriverAlertRequestedProducer(client, herald.WithTopic(alerts))
	defer alertProducer.Close(ctx)
	dispatcher := transportpb.NewRouteAllocationRecordedConsumer(client, "dispatch",
		herald.WithTopic(allocations),
		herald.WithInitialPosition(herald.Earliest()),
		herald.WithRedelivery(herald.RedeliveryPolicy{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}),
		herald.WithDeadLetter("", 3))
	dispatchCtx, stopDispatch := context.WithCancel(ctx)
	dispatched := make(chan error, 1)
	go func() {
		dispatched <- dispatcher.Run(dispatchCtx, func(ctx context.Context, e *herald.Envelope[*transportpb.RouteAllocationRecorded]) error {
			a := e.Value
			if a.GetDriverId() == "" {
				return fmt.Errorf("allocation of route %s has no driver", a.GetRouteId())
			}
			_, err := alertProducer.Publish(ctx, &transportpb.DriverAlertRequested{
				DriverId: a.GetDriverId(), RouteId: a.GetRouteId(),
				Message: fmt.Sprintf("route %s is yours, vehicle %s", a.GetRouteId(), a.GetVehicleId()),
			})
			return err
		})
	}()

	// Record three allocations, one of them poison.
	producer := transportpb.NewRouteAllocationRecordedProducer(client, herald.WithTopic(allocations))
	for _, a := range []*transportpb.RouteAllocationRecorded{
		{RouteId: "r-1", DriverId: "d-7", VehicleId: "v-3"},
		{RouteId: "r-2", DriverId: "", VehicleId: "v-4"},
		{RouteId: "r-3", DriverId: "d-9", VehicleId: "v-5"},
	} {
		if _, err := producer.Publish(ctx, a); err != nil {
			log.Fatal(err)
		}
	}
	producer.Close(ctx)

	// Two alerts arrive...
	must(consume(ctx, transportpb.NewDriverAlertRequestedConsumer(client, "notifier",
		herald.WithTopic(alerts), herald.WithInitialPosition(herald.Earliest())), 2,
		func(e *herald.Envelope[*transportpb.DriverAlertRequested]) {
			fmt.Printf("alert for %s: %s\n", e.Value.GetDriverId(), e.Value.GetMessage())
		}))
	// ...and the poison allocation lands in the dead-letter topic.
	must(consume(ctx, transportpb.NewRouteAllocationRecordedConsumer(client, "dlq-audit",
		herald.WithTopic(allocations+".dispatch.dlq"), herald.WithInitialPosition(herald.Earliest())), 1,
		func(e *herald.Envelope[*transportpb.RouteAllocationRecorded]) {
			fmt.Printf("dead letter: route %s after %s attempts: %s\n", e.Value.GetRouteId(),
				e.Attributes["herald_dlq_attempts"], e.Attributes["herald_dlq_reason"])
		}))
	stopDispatch()
	must(<-dispatched)
}

// consume runs c until it has handled n events with f.
func consume[T proto.Message](ctx context.Context, c *herald.Consumer[T], n int, f func(*herald.Envelope[T])) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	seen := 0
	err := c.Run(ctx, func(_ context.Context, e *herald.Envelope[T]) error {
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
