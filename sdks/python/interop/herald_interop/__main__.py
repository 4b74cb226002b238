"""Herald's Python interop agent (tests/interop/README.md): ``produce``,
``consume`` and ``bad-input`` against a real server, through the SDK's
generated, typed API for ``herald.interop.v1.InteropEvent``. JSON Lines on
stdout, logs on stderr; exit 0 on success, 1 with a one-line reason."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import herald
from herald.interop.v1 import interop_herald, interop_pb2

LANG = "python"
EPOCH_2026 = 1767225600  # 2026-01-01T00:00:00Z
UINT64_MAX = 18446744073709551615


class Failure(Exception):
    """Ends the agent with exit code 1 and this reason."""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def canonical_json(event: interop_pb2.InteropEvent) -> dict[str, Any]:
    """Canonical proto3 JSON; a whole double is written as an integer (``3``,
    not ``3.0``), as the Go and JavaScript encoders do."""
    out = json_format.MessageToDict(event)
    amount = out.get("amount")
    if isinstance(amount, float) and amount.is_integer():
        out["amount"] = int(amount)
    return out


def build_event(run_id: str, seq: int, poison_seq: int | None) -> interop_pb2.InteropEvent:
    """The event for ``seq``, exactly as the contract's table says."""
    return interop_pb2.InteropEvent(
        run_id=run_id,
        seq=seq,
        producer_lang=LANG,
        key=f"k{seq % 4}",
        text=f"héllo wörld ✓ {seq}",
        blob=bytes([seq % 256, (seq + 1) % 256, 0, 255]),
        amount=seq * 1.5,
        tags=[LANG, f"seq-{seq}"],
        labels={"run": run_id, "lang": LANG},
        nested=interop_pb2.Nested(name=f"n{seq}", value=-seq),
        occurred_at=timestamp_pb2.Timestamp(seconds=EPOCH_2026 + seq),
        colour=interop_pb2.COLOUR_GREEN if seq % 2 == 0 else interop_pb2.COLOUR_RED,
        big=UINT64_MAX - seq,
        poison=poison_seq is not None and seq == poison_seq,
    )


async def produce(args: argparse.Namespace) -> None:
    tracer = trace.get_tracer("herald-interop")
    async with herald.Client(args.endpoint) as client:
        async with interop_herald.interop_event_producer(client, topic=args.topic) as producer:
            pending = []
            for seq in range(args.count):
                with tracer.start_as_current_span(f"produce {seq}") as span:
                    future = producer.send(
                        build_event(args.run_id, seq, args.poison_seq),
                        attributes={"interop-producer": LANG},
                    )
                    trace_id = format(span.get_span_context().trace_id, "032x")
                pending.append((seq, future, trace_id))
            for seq, future, trace_id in pending:
                receipt = await future
                emit(
                    {
                        "seq": seq,
                        "partition": receipt.partition,
                        "offset": receipt.offset,
                        "trace_id": trace_id,
                        "id": receipt.id,
                    }
                )


async def consume(args: argparse.Namespace) -> None:
    acked: set[int] = set()
    printed = 0
    redelivery = None
    if args.max_attempts is not None or args.dead_letter_topic is not None:
        redelivery = herald.Redelivery(
            max_delivery_attempts=args.max_attempts or 0,
            dead_letter_topic=args.dead_letter_topic,
        )

    def on_role(state: herald.ActiveState) -> None:
        emit({"role": "active" if state.active else "standby"})

    async with herald.Client(args.endpoint) as client:
        options: herald.ConsumerOptions = {
            "topic": args.topic,
            "type": herald.SubscriptionType.parse(args.type),
            "initial_position": herald.Position.parse(args.position),
            "priority": args.priority,
            "on_active_change": on_role,
        }
        if args.consumer_name:
            options["consumer_name"] = args.consumer_name
        if redelivery is not None:
            options["redelivery"] = redelivery
        consumer = interop_herald.interop_event_consumer(client, args.subscription, **options)
        await consumer.start()
        name = args.consumer_name or (consumer.attached.consumer_name if consumer.attached else "")
        done = asyncio.Event()

        async def handle(envelope: herald.Envelope[interop_pb2.InteropEvent]) -> None:
            nonlocal printed
            event = envelope.value
            emit(
                {
                    "event": canonical_json(event),
                    "id": envelope.id,
                    "type": envelope.type,
                    "source": envelope.source,
                    "data_schema": envelope.data_schema,
                    "key": envelope.key,
                    "attributes": dict(envelope.attributes),
                    "trace_id": format(
                        trace.get_current_span().get_span_context().trace_id, "032x"
                    ),
                    "partition": envelope.partition,
                    "offset": envelope.offset,
                    "attempt": envelope.delivery_attempt,
                    "consumer": name,
                }
            )
            printed += 1
            if args.exit_after is not None and printed >= args.exit_after:
                os._exit(0)  # a crash: no acks flushed
            if args.fail_poison and event.poison:
                raise herald.Reject(f"poison event {event.seq}")
            if args.delay_ms:
                await asyncio.sleep(args.delay_ms / 1000)
            acked.add(event.seq)
            if len(acked) >= args.count and not done.is_set():
                done.set()
                # Closing from a task lets run() ack this event first; the
                # half-close then waits for the server to apply the acks.
                asyncio.get_running_loop().create_task(consumer.close())

        try:
            await asyncio.wait_for(consumer.run(handle), args.timeout_s)
        except TimeoutError:
            raise Failure(
                f"timed out after {args.timeout_s} s with {len(acked)} of {args.count} events acked"
            ) from None
        if len(acked) < args.count:
            raise Failure(
                f"the subscription ended with {len(acked)} of {args.count} events acked"
            )


async def bad_input(args: argparse.Namespace) -> None:
    async with herald.Client(args.endpoint) as client:
        try:
            if args.case == "wrong-type":
                consumer = interop_herald.interop_event_consumer(
                    client,
                    "interop-shared",
                    topic=args.topic,
                    type=herald.SubscriptionType.EXCLUSIVE,
                )
                await consumer.start()
                await consumer.close()
            else:
                event = build_event("bad-input", 0, None)
                if args.case == "oversize":
                    event.text = "x" * (2 * 1024 * 1024)
                async with interop_herald.interop_event_producer(
                    client, topic=args.topic
                ) as producer:
                    await producer.publish(event)
        except herald.HeraldError as error:
            emit(
                {
                    "case": args.case,
                    "error_code": error.code.proto_name,
                    "grpc_code": error.grpc_code.value[0],
                    "message": error.message,
                }
            )
            return
    raise Failure(f"case {args.case}: the call succeeded")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="herald_interop", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(c: argparse.ArgumentParser) -> None:
        c.add_argument("--endpoint", required=True)
        c.add_argument("--topic", required=True)

    c = sub.add_parser("produce")
    common(c)
    c.add_argument("--run-id", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--lang-tag")
    c.add_argument("--poison-seq", type=int)

    c = sub.add_parser("consume")
    common(c)
    c.add_argument("--subscription", required=True)
    c.add_argument(
        "--type", required=True, choices=["exclusive", "shared", "failover", "key_shared"]
    )
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--consumer-name")
    c.add_argument("--priority", type=int, default=0)
    c.add_argument("--position", choices=["earliest", "latest"], default="earliest")
    c.add_argument("--timeout-s", type=float, default=60)
    c.add_argument("--delay-ms", type=int, default=0)
    c.add_argument("--fail-poison", action="store_true")
    c.add_argument("--max-attempts", type=int)
    c.add_argument("--dead-letter-topic")
    c.add_argument("--exit-after", type=int)

    c = sub.add_parser("bad-input")
    common(c)
    c.add_argument("--case", required=True, choices=["unknown-topic", "oversize", "wrong-type"])
    return p


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if isinstance(sys.stdout, __import__("io").TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")
    trace.set_tracer_provider(TracerProvider())
    command = {"produce": produce, "consume": consume, "bad-input": bad_input}[args.command]
    try:
        asyncio.run(command(args))
    except Failure as f:
        print(f"herald_interop {args.command}: {f}", file=sys.stderr)
        sys.exit(1)
    except herald.HeraldError as e:
        print(f"herald_interop {args.command}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001
        print(f"herald_interop {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
