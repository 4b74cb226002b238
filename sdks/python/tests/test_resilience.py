"""Connection loss: the producer resends unanswered requests across cut
connections and a broker restart (each successful publish stored exactly
once), times out only at its timeout while the broker is down; endpoint
forms and connect failures; keepalive against a frozen (SIGSTOPped) broker."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from acme.signup.v1 import signup_herald
from acme.signup.v1.signup_pb2 import UserSignedUp
from conftest import Server, free_port

import herald
from herald.v1 import subscriber_pb2, subscriber_pb2_grpc

FAST_RECONNECT = herald.ReconnectPolicy(initial=0.05, maximum=0.5)


@pytest.fixture
def memory_server() -> Iterator[Server]:
    """A server of one test that keeps nothing on disk."""
    s = Server("--in-memory", "--metrics-listen", "off")
    yield s
    s.stop()


async def read_topic(endpoint: str, topic: str) -> list[subscriber_pb2.DeliveredEvent]:
    """Every event of ``topic`` from the earliest, without a subscription."""
    async with herald.Client(endpoint) as client:
        stub = subscriber_pb2_grpc.SubscriberStub(client.channel)  # type: ignore[no-untyped-call]
        events: list[subscriber_pb2.DeliveredEvent] = []
        async for response in stub.Read(subscriber_pb2.ReadRequest(topic=topic), timeout=10):
            events.extend(response.events)
        return events


@dataclass
class Outcome:
    """One publish call."""

    receipt: herald.Receipt | None
    error: BaseException | None
    took: float


async def publish_loop(
    producer: herald.Producer[UserSignedUp], tasks: int, stop: asyncio.Event
) -> list[Outcome]:
    """``tasks`` tasks publishing one event at a time until ``stop``; each
    stops at its first failure."""
    outcomes: list[Outcome] = []

    async def run(n: int) -> None:
        i = 0
        while not stop.is_set():
            start = time.monotonic()
            try:
                receipt = await producer.publish(UserSignedUp(user_id=f"t{n}-{i}"))
            except Exception as e:  # noqa: BLE001
                outcomes.append(Outcome(None, e, time.monotonic() - start))
                return
            outcomes.append(Outcome(receipt, None, time.monotonic() - start))
            i += 1

    await asyncio.gather(*(run(n) for n in range(tasks)))
    return outcomes


def check_stored_once(
    outcomes: list[Outcome], log: list[subscriber_pb2.DeliveredEvent], timeout: float
) -> None:
    """Every call succeeded, and its event is in the log exactly once, where
    its receipt says."""
    stored: dict[str, list[subscriber_pb2.DeliveredEvent]] = {}
    for e in log:
        stored.setdefault(e.event.id, []).append(e)
    twice = {i: [(c.partition, c.offset) for c in cs] for i, cs in stored.items() if len(cs) > 1}
    assert not twice, f"events stored more than once: {twice}"
    failed = [o for o in outcomes if o.error is not None]
    assert not failed, [
        f"a publish failed after {o.took:.2f} s, before its {timeout} s timeout: {o.error}"
        for o in failed
    ]
    for o in outcomes:
        assert o.receipt is not None
        copies = stored.get(o.receipt.id)
        assert copies, f"event {o.receipt.id}: receipt {o.receipt} but not in the log"
        assert (copies[0].partition, copies[0].offset) == (o.receipt.partition, o.receipt.offset)
    assert len(stored) == len(outcomes), f"{len(stored)} events in the log, {len(outcomes)} publishes"


class TcpProxy:
    """Forwards TCP connections to ``target`` (in a thread with its own event
    loop); can hold back what the server sends and cut every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.paused = False
        self.loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        started = threading.Event()
        self.port = 0

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def serve() -> None:
                server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
                self.port = server.sockets[0].getsockname()[1]
                self._server = server
                started.set()

            self.loop.run_until_complete(serve())
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(5)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            try:
                while data := await src.read(32 << 10):
                    while down and self.paused:
                        await asyncio.sleep(0.002)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def pause(self) -> None:
        """Holds the server's answers (requests still reach it)."""
        self.paused = True

    def cut(self) -> None:
        """Resets every connection at once (as a crashed peer or a middlebox
        would), and unpauses."""

        def cut() -> None:
            for w in self._writers:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    except OSError:
                        pass
                w.transport.abort()
            self._writers.clear()
            self.paused = False
            done.set()

        done = threading.Event()
        self.loop.call_soon_threadsafe(cut)
        done.wait(5)

    def close(self) -> None:
        self.cut()

        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


# While several tasks publish through a proxy that cuts every connection
# three times (each time after holding the broker's answers for a while, so
# requests the broker stored go unanswered), no publish fails, and each
# event is stored exactly once at the offset its receipt names: the
# unanswered ones were sent again and came back as duplicates.
async def test_producer_resends_across_connection_cuts(memory_server: Server, topic: str) -> None:
    proxy = TcpProxy(memory_server.port)
    timeout = 20.0
    try:
        async with herald.Client(proxy.addr, request_timeout=timeout) as client:
            async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
                stop = asyncio.Event()
                loop = asyncio.create_task(publish_loop(producer, 4, stop))
                await asyncio.sleep(0.3)
                for _ in range(3):
                    proxy.pause()
                    await asyncio.sleep(0.15)
                    proxy.cut()
                    await asyncio.sleep(0.4)
                stop.set()
                outcomes = await loop
                duplicates = sum(1 for o in outcomes if o.receipt and o.receipt.duplicate)
                print(f"{len(outcomes)} publishes, {duplicates} answered as duplicates, "
                      f"{producer.resends} resends, {producer.requests_sent} requests")
                check_stored_once(outcomes, await read_topic(memory_server.endpoint, topic), timeout)
                assert producer.resends >= 3 and duplicates > 0, (
                    f"3 cuts with answers held back, but {producer.resends} resends and "
                    f"{duplicates} duplicates in {len(outcomes)} publishes: the cuts were not exercised"
                )

                # A refusal by the broker is not retried: it fails at once.
                start = time.monotonic()
                with pytest.raises(herald.HeraldError) as raised:
                    await producer.publish(UserSignedUp(user_id="big", email="x" * (2 << 20)))
                assert raised.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
                assert raised.value.code == herald.ErrorCode.EVENT_TOO_LARGE
                assert time.monotonic() - start < 2
    finally:
        proxy.close()


# kill -9 of the broker in the middle of a publish loop, restarted 2.5 s
# later on the same port and data dir: every call succeeds (its timeout is
# longer than the outage) and every event is stored once.
async def test_producer_survives_a_broker_restart(own_server: Server, topic: str) -> None:
    timeout = 20.0
    async with herald.Client(own_server.endpoint, request_timeout=timeout) as client:
        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            stop = asyncio.Event()
            loop = asyncio.create_task(publish_loop(producer, 3, stop))
            await asyncio.sleep(0.4)
            own_server.stop()  # SIGKILL
            killed = time.monotonic()
            await asyncio.sleep(2.5)
            await asyncio.to_thread(own_server.start)
            outage = time.monotonic() - killed
            await asyncio.sleep(0.5)
            stop.set()
            outcomes = await loop
            waited = sum(1 for o in outcomes if o.error is None and o.took > outage / 2)
            print(f"{len(outcomes)} publishes, {waited} waited out the {outage:.1f} s outage, "
                  f"{producer.resends} resends")
            check_stored_once(outcomes, await read_topic(own_server.endpoint, topic), timeout)
            assert waited > 0 and producer.resends > 0, (
                f"no publish was in flight across the outage ({len(outcomes)} publishes, "
                f"{producer.resends} resends)"
            )
            assert producer.last_failure is None


# A publish whose timeout passes while the broker is down fails then (not
# before), saying so, with the connection failure and the event id; once
# the broker is back the same producer publishes again.
async def test_publish_times_out_while_the_broker_is_down(
    memory_server: Server, topic: str
) -> None:
    async with herald.Client(
        memory_server.endpoint, request_timeout=1.0, reconnect=FAST_RECONNECT
    ) as client:
        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            await producer.publish(UserSignedUp(user_id="before"))
            memory_server.stop()

            start = time.monotonic()
            with pytest.raises(herald.RequestTimeoutError) as raised:
                await producer.publish(UserSignedUp(user_id="during"), timeout=0.8)
            took = time.monotonic() - start
            error = raised.value
            assert 0.75 <= took < 3, f"failed after {took:.2f} s, want at its 0.8 s timeout"
            assert error.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "could not confirm the publish within 0.8 s" in error.message
            assert "connection refused" in error.message.lower(), error.message
            assert error.metadata["id"] and error.metadata["id"] in error.message
            assert isinstance(error.__cause__, herald.HeraldError)

            # send() without a timeout of its own: the client's request timeout.
            start = time.monotonic()
            future = producer.send(UserSignedUp(user_id="queued"))
            with pytest.raises(herald.RequestTimeoutError, match=r"within 1 s \(the client's"):
                await future
            took = time.monotonic() - start
            assert 0.95 <= took < 3, f"failed after {took:.2f} s, want at the 1 s request timeout"

            await asyncio.to_thread(memory_server.start)
            receipt = await producer.publish(UserSignedUp(user_id="after"), timeout=10)
            assert not receipt.duplicate


async def test_endpoint_forms_and_connect_failures(memory_server: Server, topic: str) -> None:
    for endpoint in (memory_server.addr, memory_server.endpoint):
        async with herald.Client(endpoint) as client:
            async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
                await producer.publish(UserSignedUp(user_id=endpoint))

    for bad in ("ftp://127.0.0.1:1", "http://127.0.0.1:1/path", "", "http://:1"):
        with pytest.raises(herald.ConnectError, match="endpoint"):
            herald.Client(bad)

    # https means TLS: the test server is plaintext, so the handshake fails,
    # at once, and the message says so.
    start = time.monotonic()
    with pytest.raises(herald.ConnectError) as raised:
        await herald.Client.connect("https://" + memory_server.addr)
    assert "TLS handshake failed" in str(raised.value) and time.monotonic() - start < 2

    # A refused connection fails at once with the cause (not after the
    # 10 s connect timeout).
    refused = f"127.0.0.1:{free_port()}"
    for endpoint in (refused, "http://" + refused):
        start = time.monotonic()
        with pytest.raises(herald.ConnectError) as raised:
            await herald.Client.connect(endpoint)
        took = time.monotonic() - start
        assert "connection refused" in str(raised.value) and took < 2, (raised.value, took)
        assert f"cannot connect to {endpoint}" in str(raised.value)

    # An unknown host too (.onion names are never looked up: RFC 7686).
    start = time.monotonic()
    with pytest.raises(herald.ConnectError, match="does not resolve") as raised:
        await herald.Client.connect("http://herald-no-such-host.onion:50551")
    assert "herald-no-such-host.onion" in str(raised.value) and time.monotonic() - start < 2

    # wait_for_server gives up after its time, with the cause.
    start = time.monotonic()
    with pytest.raises(herald.ConnectError) as raised:
        await herald.Client.connect(refused, wait_for_server=0.6, reconnect=FAST_RECONNECT)
    took = time.monotonic() - start
    assert 0.6 <= took < 3, took
    assert "not reachable within 0.6 s (wait_for_server)" in str(raised.value)
    assert "connection refused" in str(raised.value)


async def test_wait_for_server_connects_once_it_starts(topic: str) -> None:
    late = Server("--in-memory", "--metrics-listen", "off", start=False)

    def start_later() -> None:
        time.sleep(1.0)
        late.start()

    starting = asyncio.create_task(asyncio.to_thread(start_later))
    try:
        start = time.monotonic()
        async with await herald.Client.connect(
            late.addr, wait_for_server=15, reconnect=FAST_RECONNECT
        ) as client:
            took = time.monotonic() - start
            assert took >= 1.0, f"connected after {took:.2f} s, before the server started"
            async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
                await producer.publish(UserSignedUp(user_id="late"))
    finally:
        await starting
        late.stop()


# The server permits the client's pings: a 1 s keepalive (20x the default
# rate) on a connection left idle for 5 s, with a stream open and with no
# call at all, does not get it closed (GOAWAY too_many_pings would break the
# stream and take the idle channel out of READY).
async def test_short_keepalive_is_accepted_by_the_server(
    memory_server: Server, topic: str
) -> None:
    keepalive = herald.Keepalive(time=1.0, timeout=1.0)
    async with herald.Client(memory_server.endpoint, keepalive=keepalive) as client, herald.Client(
        memory_server.endpoint, keepalive=keepalive
    ) as idle:
        assert ("grpc.keepalive_time_ms", 1000) in client.channel_options()
        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            await producer.publish(UserSignedUp(user_id="1"))
            for _ in range(10):
                await asyncio.sleep(0.5)
                assert idle.channel.get_state() == grpc.ChannelConnectivity.READY
            await producer.publish(UserSignedUp(user_id="2"), timeout=5)
            assert producer.resends == 0 and producer.last_failure is None, producer.last_failure


# A frozen broker (SIGSTOP: the kernel still accepts and acknowledges, the
# process answers nothing) is noticed by keepalive (1 s / 1 s here): the
# producer's stream breaks within a few seconds instead of hanging, and the
# publish in flight is sent again and succeeds once the broker runs again.
async def test_keepalive_detects_a_frozen_server(memory_server: Server, topic: str) -> None:
    async with herald.Client(
        memory_server.endpoint,
        keepalive=herald.Keepalive(time=1.0, timeout=1.0),
        connect_timeout=2,
        request_timeout=30,
        reconnect=FAST_RECONNECT,
    ) as client:
        async with signup_herald.user_signed_up_producer(client, topic=topic) as producer:
            await producer.publish(UserSignedUp(user_id="before"))
            memory_server.signal(signal.SIGSTOP)
            try:
                frozen = time.monotonic()
                during = asyncio.create_task(producer.publish(UserSignedUp(user_id="during")))
                while producer.resends == 0:
                    assert time.monotonic() - frozen < 8, (
                        "the producer did not notice the frozen server within 8 s"
                    )
                    assert not during.done(), during
                    await asyncio.sleep(0.05)
                failure = str(producer.last_failure)
                print(f"frozen server noticed after {time.monotonic() - frozen:.2f} s: {failure}")
                assert "ping" in failure or "keepalive" in failure, failure
            finally:
                memory_server.signal(signal.SIGCONT)
            receipt = await asyncio.wait_for(during, 15)
            assert receipt.offset == 1
    stored = await read_topic(memory_server.endpoint, topic)
    assert [e.event.id for e in stored].count(receipt.id) == 1 and len(stored) == 2
