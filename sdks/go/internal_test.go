package herald

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

func TestParseEndpoint(t *testing.T) {
	for _, c := range []struct {
		in, target string
		tls        bool
		err        string
	}{
		{"http://127.0.0.1:50051", "passthrough:///127.0.0.1:50051", false, ""},
		{"https://herald.example.com", "passthrough:///herald.example.com:443", true, ""},
		{"https://herald.example.com:8443/", "passthrough:///herald.example.com:8443", true, ""},
		{"http://herald.example.com", "passthrough:///herald.example.com:80", false, ""},
		{"localhost:50051", "passthrough:///localhost:50051", false, ""},
		{" 127.0.0.1:1 ", "passthrough:///127.0.0.1:1", false, ""},
		{"[::1]:50051", "passthrough:///[::1]:50051", false, ""},
		{"", "", false, "no endpoint given"},
		{"grpc://x:1", "", false, "scheme must be http or https"},
		{"http://x:1/some/path", "", false, "expected host:port, http://host:port or https://host:port"},
		{"http://:1", "", false, "expected host:port"},
	} {
		target, tls, err := parseEndpoint(c.in)
		if c.err != "" {
			if err == nil || !contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || target != c.target || tls != c.tls {
			t.Errorf("%q: %q %v %v", c.in, target, tls, err)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestReconnectDelayGrowsWithJitterAndIsCapped(t *testing.T) {
	p := ReconnectPolicy{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.2}
	for attempt, base := range []time.Duration{100, 200, 400, 800} {
		base *= time.Millisecond
		seen := map[time.Duration]bool{}
		for range 50 {
			d := p.Delay(attempt)
			if d < base*8/10 || d > base*12/10 {
				t.Fatalf("attempt %d: %s outside %s ±20%%", attempt, d, base)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Fatalf("attempt %d: no jitter", attempt)
		}
	}
	for range 50 {
		if d := p.Delay(30); d > time.Second || d < 800*time.Millisecond {
			t.Fatalf("capped delay %s", d)
		}
	}
}

func TestErrorFromStatusDetails(t *testing.T) {
	st, err := status.New(codes.NotFound, "topic \"x\" does not exist").WithDetails(&heraldpb.ErrorDetail{
		GrpcCode: int32(codes.NotFound), Code: heraldpb.ErrorCode_ERROR_CODE_TOPIC_NOT_FOUND,
		Message: "topic \"x\" does not exist", Metadata: map[string]string{"topic": "x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := fromRPC(fmt.Errorf("wrapped: %w", st.Err()))
	var herr *Error
	if !errors.As(e, &herr) || herr.Code != heraldpb.ErrorCode_ERROR_CODE_TOPIC_NOT_FOUND || herr.GRPCCode != codes.NotFound ||
		herr.Metadata["topic"] != "x" || herr.Transient() || status.Code(e) != codes.NotFound {
		t.Fatalf("%#v", e)
	}
	if got := herr.Error(); got != "herald: ERROR_CODE_TOPIC_NOT_FOUND (NotFound): topic \"x\" does not exist" {
		t.Fatalf("%s", got)
	}
	// No details: a transport failure, transient.
	e = fromRPC(status.Error(codes.Unavailable, "connection refused"))
	if CodeOf(e) != heraldpb.ErrorCode_ERROR_CODE_UNSPECIFIED || !transient(e) {
		t.Fatalf("%#v", e)
	}
	// A deleted subscription is not retried.
	closed := &Error{GRPCCode: codes.Unavailable, Code: heraldpb.ErrorCode_ERROR_CODE_SUBSCRIPTION_CLOSED}
	if closed.Transient() {
		t.Fatal("SUBSCRIPTION_CLOSED must not be transient")
	}
}

func TestCulpritIsTheCallHoldingTheRefusedEvent(t *testing.T) {
	calls := []*call{{events: make([]*heraldpb.Event, 2)}, {events: make([]*heraldpb.Event, 3)}, {events: make([]*heraldpb.Event, 1)}}
	detail := func(code heraldpb.ErrorCode, index string) *heraldpb.ErrorDetail {
		return &heraldpb.ErrorDetail{Code: code, Metadata: map[string]string{"index": index}}
	}
	tooLarge := heraldpb.ErrorCode_ERROR_CODE_EVENT_TOO_LARGE
	for index, want := range map[string]int{"0": 0, "1": 0, "2": 1, "4": 1, "5": 2, "6": -1, "x": -1} {
		if got := culpritOf(detail(tooLarge, index), calls); got != want {
			t.Errorf("index %s: call %d, want %d", index, got, want)
		}
	}
	if got := culpritOf(detail(heraldpb.ErrorCode_ERROR_CODE_TOPIC_NOT_FOUND, "0"), calls); got != -1 {
		t.Errorf("a whole-request error has no culprit, got %d", got)
	}
	if got := culpritOf(detail(tooLarge, "0"), calls[:1]); got != -1 {
		t.Errorf("a lone call has no culprit, got %d", got)
	}
}

func TestAcksAndCreditsAreMerged(t *testing.T) {
	ack := func(h ...string) *heraldpb.SubscribeRequest {
		return &heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_Ack{Ack: &heraldpb.Ack{AckHandles: h}}}
	}
	credit := func(n uint32) *heraldpb.SubscribeRequest {
		return &heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_Credit{Credit: &heraldpb.Credit{Credits: n}}}
	}
	m := ack("a")
	if !mergeInto(m, ack("b", "c")) || fmt.Sprint(m.GetAck().GetAckHandles()) != "[a b c]" {
		t.Fatalf("%v", m)
	}
	if mergeInto(m, credit(1)) {
		t.Fatal("an ack and a credit merged")
	}
	c := credit(2)
	if !mergeInto(c, credit(3)) || c.GetCredit().GetCredits() != 5 {
		t.Fatalf("%v", c)
	}
	nack := &heraldpb.SubscribeRequest{Request: &heraldpb.SubscribeRequest_Nack{Nack: &heraldpb.Nack{AckHandles: []string{"x"}}}}
	if mergeInto(nack, ack("y")) || mergeInto(ack("y"), nack) {
		t.Fatal("a nack merged with an ack")
	}
}
