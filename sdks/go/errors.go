package herald

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herald-broker/herald/sdks/go/heraldpb"
)

// ErrClosed is returned by calls on a closed producer, and by Ack, Nack and
// Extend once the consumer's stream is gone (the event is redelivered).
var ErrClosed = errors.New("herald: closed")

// Error is a failure reported by the Herald server: Code says which one
// (read from the ErrorDetail in the status details, or from an inline
// stream error), GRPCCode what kind. Branch on Code:
//
//	var herr *herald.Error
//	if errors.As(err, &herr) && herr.Code == heraldpb.ErrorCode_ERROR_CODE_TOPIC_NOT_FOUND { ... }
type Error struct {
	// Which Herald error it is; ERROR_CODE_UNSPECIFIED when the server sent
	// no detail (e.g. a transport failure).
	Code heraldpb.ErrorCode
	// The gRPC status code.
	GRPCCode codes.Code
	// A sentence a person can act on.
	Message string
	// Facts about the failure, e.g. {"topic": "orders", "limit": "1048576"}.
	Metadata map[string]string
	// The gRPC status error, when the failure ended a call.
	cause error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Code == heraldpb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return fmt.Sprintf("herald: %s: %s", e.GRPCCode, e.Message)
	}
	return fmt.Sprintf("herald: %s (%s): %s", e.Code, e.GRPCCode, e.Message)
}

// Unwrap returns the underlying gRPC status error, if any.
func (e *Error) Unwrap() error { return e.cause }

// GRPCStatus lets status.FromError and status.Code see through the Error.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.GRPCCode, e.Message) }

// Transient reports whether retrying later (after a reconnect) may
// succeed: UNAVAILABLE (connection refused or lost, GOAWAY, keepalive
// timeout, broker shutting down), UNKNOWN, CANCELED from the transport, a
// stream reset (RST_STREAM), except a subscription deleted under its
// consumer (re-attaching would silently recreate it).
func (e *Error) Transient() bool {
	if e.Code == heraldpb.ErrorCode_ERROR_CODE_SUBSCRIPTION_CLOSED {
		return false
	}
	switch e.GRPCCode {
	case codes.Unavailable, codes.Unknown, codes.Canceled:
		return true
	case codes.Internal:
		// gRPC-Go's status for a stream reset by the peer or a proxy.
		return e.Code == heraldpb.ErrorCode_ERROR_CODE_UNSPECIFIED && strings.Contains(e.Message, "RST_STREAM")
	}
	return false
}

// CodeOf is the Herald error code behind err (ERROR_CODE_UNSPECIFIED when
// it is not a Herald error).
func CodeOf(err error) heraldpb.ErrorCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return heraldpb.ErrorCode_ERROR_CODE_UNSPECIFIED
}

// fromDetail is an inline stream error.
func fromDetail(d *heraldpb.ErrorDetail) *Error {
	return &Error{
		Code:     d.GetCode(),
		GRPCCode: codes.Code(d.GetGrpcCode()),
		Message:  d.GetMessage(),
		Metadata: d.GetMetadata(),
	}
}

// fromRPC turns an error from a gRPC call into an *Error, reading the
// ErrorDetail from the status details. Context errors pass through.
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, io.EOF) {
		return &Error{GRPCCode: codes.Unavailable, Message: "the server ended the stream", cause: err}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{GRPCCode: codes.Unknown, Message: err.Error(), cause: err}
	}
	e := &Error{GRPCCode: st.Code(), Message: st.Message(), cause: err}
	for _, d := range st.Details() {
		if detail, ok := d.(*heraldpb.ErrorDetail); ok {
			e.Code = detail.GetCode()
			e.Metadata = detail.GetMetadata()
			if detail.GetMessage() != "" {
				e.Message = detail.GetMessage()
			}
			break
		}
	}
	return e
}

// transient reports whether a failed stream may work again after a
// re-attach.
func transient(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Transient()
	}
	return false
}
