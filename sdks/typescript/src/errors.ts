/**
 * {@link HeraldError}: every failure of an SDK call, with the Herald
 * {@link ErrorCode} read from the error's status details (the
 * `grpc-status-details-bin` trailer, or the inline `ErrorDetail` of a stream
 * response), so callers branch on the cause instead of parsing messages.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ErrorDetail } from "./gen/herald/v1/errors_pb.js";
import { ErrorCode, ErrorCodeSchema, ErrorDetailSchema } from "./gen/herald/v1/errors_pb.js";

export { Code as GrpcCode, ErrorCode };

/**
 * Why a Herald call failed.
 *
 * ```ts
 * try {
 *   await producer.publish(event);
 * } catch (e) {
 *   if (e instanceof HeraldError && e.code === ErrorCode.EVENT_TOO_LARGE) { ... }
 * }
 * ```
 */
export class HeraldError extends Error {
  /** Which Herald failure it is; `ErrorCode.UNSPECIFIED` when the error did not come from the broker (transport failure, timeout, closed producer). */
  readonly code: ErrorCode;
  /** The gRPC status code (`GrpcCode`, same numbering as gRPC: 5 = NOT_FOUND, 14 = UNAVAILABLE...). */
  readonly grpcCode: Code;
  /** Facts about the failure from the broker, e.g. `{topic: "orders", limit: "1048576"}`. */
  readonly metadata: Readonly<Record<string, string>>;

  constructor(
    message: string,
    options: {
      code?: ErrorCode;
      grpcCode?: Code;
      metadata?: Record<string, string>;
      cause?: unknown;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "HeraldError";
    this.code = options.code ?? ErrorCode.UNSPECIFIED;
    this.grpcCode = options.grpcCode ?? Code.Unknown;
    this.metadata = options.metadata ?? {};
  }

  /** The code's name as in errors.proto, e.g. `"ERROR_CODE_TOPIC_NOT_FOUND"`. */
  get codeName(): string {
    return errorCodeName(this.code);
  }

  /** From an inline `ErrorDetail` (a refused stream request). */
  static fromDetail(detail: ErrorDetail): HeraldError {
    return new HeraldError(detail.message, {
      code: detail.code,
      grpcCode: detail.grpcCode as Code,
      metadata: { ...detail.metadata },
    });
  }

  /**
   * Converts anything a call threw into a HeraldError: a `ConnectError`'s
   * `herald.v1.ErrorDetail` status detail gives the code; other errors keep
   * `ErrorCode.UNSPECIFIED` and become `UNAVAILABLE` (transport) or `UNKNOWN`.
   */
  static from(error: unknown): HeraldError {
    if (error instanceof HeraldError) {
      return error;
    }
    const connect = ConnectError.from(error);
    const [detail] = connect.findDetails(ErrorDetailSchema);
    if (detail !== undefined) {
      return new HeraldError(detail.message || connect.rawMessage, {
        code: detail.code,
        grpcCode: connect.code,
        metadata: { ...detail.metadata },
        cause: error,
      });
    }
    return new HeraldError(connect.rawMessage, { grpcCode: connect.code, cause: error });
  }

  /**
   * Whether retrying later (after reconnecting) may succeed: `UNAVAILABLE`,
   * `UNKNOWN`, `CANCELED` and `DEADLINE_EXCEEDED`; and a broken connection
   * that Connect reports otherwise (`ABORTED` for a reset connection,
   * `INTERNAL` for a failed HTTP/2 session or stream), when no Herald code
   * says the broker refused. Not a subscription deleted under its consumer
   * (`SUBSCRIPTION_CLOSED`), which re-attaching would silently recreate.
   */
  get transient(): boolean {
    if (this.code === ErrorCode.SUBSCRIPTION_CLOSED) {
      return false;
    }
    switch (this.grpcCode) {
      case Code.Unavailable:
      case Code.Unknown:
      case Code.Canceled:
      case Code.DeadlineExceeded:
        return true;
      case Code.Aborted:
      case Code.Internal:
        return this.code === ErrorCode.UNSPECIFIED && fromTransport(this);
      default:
        return false;
    }
  }
}

/**
 * Whether `error` came from the connection rather than from the broker: a
 * Node.js error (with a string `code`, e.g. ECONNRESET,
 * ERR_HTTP2_STREAM_ERROR) in its cause chain, or an HTTP/2 reset.
 *
 * @internal
 */
export function fromTransport(error: Error): boolean {
  const seen: unknown[] = [];
  for (let e: unknown = error; e instanceof Error && !seen.includes(e); e = e.cause) {
    seen.push(e);
    if (typeof (e as { code?: unknown }).code === "string" || /^(\[[a-z_]+\] )?http\/2 /.test(e.message)) {
      return true;
    }
  }
  return false;
}

/** `ErrorCode.TOPIC_NOT_FOUND` → `"ERROR_CODE_TOPIC_NOT_FOUND"`; unknown numbers as `"ERROR_CODE_<n>"`. */
export function errorCodeName(code: ErrorCode): string {
  return ErrorCodeSchema.value[code]?.name ?? `ERROR_CODE_${code as number}`;
}
