/**
 * The producer and the client across failures, against real brokers
 * ($HERALD_BIN): connections cut by a TCP proxy under concurrent publishers,
 * a kill -9 and restart of the broker, a broker that stays down, endpoint
 * forms and connect failures, keepalive on an idle connection, and a frozen
 * (SIGSTOPped) broker noticed by keepalive.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createSecureServer } from "node:http2";
import { type Server, type Socket, createServer, connect as netConnect } from "node:net";
import { ErrorCode, GrpcCode, HeraldClient, HeraldError, type Producer, type Receipt } from "@herald/sdk";
import type { UserSignedUp } from "../gen/acme/signup/v1/signup_pb.js";
import {
  UserSignedUpEvent,
  newUserSignedUpProducer,
  subscribeUserSignedUp,
} from "../gen/acme/signup/v1/signup_herald.js";
import { HeraldServer, catchError, freePort } from "./herald.js";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const fastReconnect = { initialMs: 50, maxMs: 500 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Everything started here, stopped at the end whatever happens. */
const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) {
    await cleanup();
  }
});

async function startServer(options: { inMemory?: boolean } = {}): Promise<HeraldServer> {
  const server = await HeraldServer.start(options);
  cleanups.push(async () => {
    server.signal("SIGCONT");
    await server.stop();
  });
  return server;
}

async function connect(endpoint: string, options: Partial<Parameters<typeof HeraldClient.connect>[0]> = {}) {
  const client = await HeraldClient.connect({ endpoint, logger: quiet, ...options });
  cleanups.push(() => client.close());
  return client;
}

let topics = 0;
function freshTopic(label: string): string {
  return `ts.resilience.${label}.${process.pid}.${++topics}`;
}

/** The outcome of one publish call. */
interface Outcome {
  userId: string;
  receipt?: Receipt;
  error?: unknown;
  tookMs: number;
}

/** `n` loops publishing one event at a time until `stop()`; resolves with every outcome. */
function publishLoop(producer: Producer<UserSignedUp>, n: number) {
  let stopped = false;
  const outcomes: Outcome[] = [];
  const loops = Array.from({ length: n }, async (_, g) => {
    for (let i = 0; !stopped; i++) {
      const userId = `g${g}-${i}`;
      const start = Date.now();
      try {
        const receipt = await producer.publish({ userId });
        outcomes.push({ userId, receipt, tookMs: Date.now() - start });
      } catch (error) {
        outcomes.push({ userId, error, tookMs: Date.now() - start });
        return;
      }
    }
  });
  return {
    outcomes,
    async stop(): Promise<Outcome[]> {
      stopped = true;
      await Promise.all(loops);
      return outcomes;
    },
  };
}

/**
 * Fails unless every call succeeded and its event is in the topic exactly
 * once, where its receipt says (read through `reader`).
 */
async function checkStoredOnce(reader: HeraldClient, topic: string, outcomes: Outcome[], timeoutMs: number) {
  const stored = new Map<string, { partition: number; offset: bigint; userId: string }[]>();
  for await (const r of reader.read(UserSignedUpEvent, { topic })) {
    const copies = stored.get(r.id) ?? [];
    copies.push({ partition: r.partition, offset: r.offset, userId: r.value.userId });
    stored.set(r.id, copies);
  }
  const problems: string[] = [];
  for (const [id, copies] of stored) {
    if (copies.length !== 1) {
      problems.push(`event ${id} stored ${copies.length} times (${copies.map((c) => c.offset).join(", ")})`);
    }
  }
  for (const o of outcomes) {
    if (o.receipt === undefined) {
      problems.push(`publish ${o.userId} failed after ${o.tookMs} ms, before its ${timeoutMs} ms timeout: ${String(o.error)}`);
      continue;
    }
    const copy = stored.get(o.receipt.id)?.[0];
    if (copy === undefined) {
      problems.push(`event ${o.receipt.id} (${o.userId}): receipt ${o.receipt.partition}/${o.receipt.offset} but not in the topic`);
    } else if (copy.partition !== o.receipt.partition || copy.offset !== o.receipt.offset || copy.userId !== o.userId) {
      problems.push(`event ${o.receipt.id} stored at ${copy.partition}/${copy.offset} as ${copy.userId}, receipt ${o.receipt.partition}/${o.receipt.offset} for ${o.userId}`);
    }
  }
  if (stored.size !== outcomes.length) {
    problems.push(`${stored.size} events in the topic, ${outcomes.length} publishes`);
  }
  assert.deepEqual(problems, []);
}

/**
 * A TCP proxy to a server that can hold back what the server sends and cut
 * every connection (with a RST, as a crashed peer or a middlebox would). It
 * also reads the HTTP/2 frames going through, counting the client's PINGs
 * and the server's GOAWAYs.
 */
class TcpProxy {
  readonly sockets = new Set<Socket>();
  connections = 0;
  clientPings = 0;
  serverGoaways = 0;
  private paused = false;
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((client) => proxy?.accept(client, targetPort));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    proxy = new TcpProxy(server, typeof address === "object" && address !== null ? address.port : 0);
    cleanups.push(() => proxy?.close());
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  private accept(client: Socket, targetPort: number): void {
    this.connections++;
    const upstream = netConnect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    const fromClient = new FrameCounter(true, (type, flags) => {
      if (type === 6 && (flags & 1) === 0) this.clientPings++;
    });
    const fromServer = new FrameCounter(false, (type) => {
      if (type === 7) this.serverGoaways++;
    });
    client.on("data", (chunk: Buffer) => {
      fromClient.feed(chunk);
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      fromServer.feed(chunk);
      if (!this.paused) client.write(chunk); // paused: dropped (a cut follows)
    });
  }

  /** Holds (drops) what the server sends until the next cut; requests still reach it. */
  pause(): void {
    this.paused = true;
  }

  /** Resets every connection at once, and unpauses. */
  cut(): void {
    for (const s of [...this.sockets]) {
      s.resetAndDestroy();
    }
    this.paused = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Splits one direction of an HTTP/2 connection into frames (after the client's preface). */
class FrameCounter {
  private buffer = Buffer.alloc(0);
  private skip: number;
  constructor(
    fromClient: boolean,
    private readonly onFrame: (type: number, flags: number) => void,
  ) {
    this.skip = fromClient ? 24 : 0; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
  }

  feed(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, this.buffer.length);
        this.buffer = this.buffer.subarray(n);
        this.skip -= n;
        if (this.skip > 0) return;
      }
      if (this.buffer.length < 9) return;
      const length = this.buffer.readUIntBE(0, 3);
      this.onFrame(this.buffer[3] as number, this.buffer[4] as number);
      this.skip = 9 + length;
    }
  }
}

/** A self-signed test certificate for localhost and 127.0.0.1 (valid to 2126), and its key. */
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBmjCCAUCgAwIBAgITIw/KVSh6N8H7insH84ZpWBvCxDAKBggqhkjOPQQDAjAU
MRIwEAYDVQQDDAlsb2NhbGhvc3QwIBcNMjYxMjAzMTc0ODQ0WhgPMjEyNjExMDkx
NzQ4NDRaMBQxEjAQBgNVBAMMCWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABJLaUtOGRCi76YnhMti8uprin9zwLlqlcGoRlkI+zih8zMgpZwNA5e3y
jaFubgsdEtRp6rp8mNN7Jl/+ONlZajujbzBtMB0GA1UdDgQWBBQ5dAlgGEZ5f1qQ
CTbm5jmML6dLcDAfBgNVHSMEGDAWgBQ5dAlgGEZ5f1qQCTbm5jmML6dLcDAPBgNV
HRMBAf8EBTADAQH/MBoGA1UdEQQTMBGCCWxvY2FsaG9zdIcEfwAAATAKBggqhkjO
PQQDAgNIADBFAiAfHeazcWOpds4gh10WTU0HImDTlMeJg1a2M59H86feBQIhAPIe
NDeCePC0c5CnhRi5LpiUeDun3bS40bCgpmPQ3653
-----END CERTIFICATE-----`;
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMZhrs0mPd7zfnEUK
buCzcNUiFmHLfK5Iwyv5YX7i/eShRANCAASS2lLThkQou+mJ4TLYvLqa4p/c8C5a
pXBqEZZCPs4ofMzIKWcDQOXt8o2hbm4LHRLUaeq6fJjTeyZf/jjZWWo7
-----END PRIVATE KEY-----`;

describe("producer across failures", () => {
  test("connections cut under concurrent publishers: every publish succeeds once, unanswered ones are resent as duplicates", async () => {
    const server = await startServer({ inMemory: true });
    const proxy = await TcpProxy.start(server.port);
    const timeoutMs = 20_000;
    // Bare host:port: plaintext.
    const client = await connect(proxy.address, { requestTimeoutMs: timeoutMs, reconnect: fastReconnect });
    const topic = freshTopic("cuts");
    const producer = newUserSignedUpProducer(client, { topic });
    const loop = publishLoop(producer, 4);
    await sleep(300);
    for (let i = 0; i < 3; i++) {
      proxy.pause(); // the broker stores what it gets, its answers are lost
      await sleep(150);
      proxy.cut();
      await sleep(400);
    }
    const outcomes = await loop.stop();
    const duplicates = outcomes.filter((o) => o.receipt?.duplicate === true).length;
    const stats = producer.stats();
    await checkStoredOnce(await connect(server.endpoint), topic, outcomes, timeoutMs);
    assert.ok(proxy.connections >= 4, `${proxy.connections} connections through the proxy: the cuts did not happen`);
    assert.ok(
      stats.resends >= 3 && duplicates > 0,
      `3 cuts with answers held back, but ${stats.resends} resends and ${duplicates} duplicates of ${outcomes.length} publishes`,
    );

    // A refusal by the broker is not retried: it fails at once.
    const started = Date.now();
    const error = await catchError(producer.publish({ userId: "big", email: "x".repeat(2 * 1024 * 1024) }));
    assert.equal(error.code, ErrorCode.EVENT_TOO_LARGE);
    assert.equal(error.grpcCode, GrpcCode.InvalidArgument);
    assert.ok(Date.now() - started < 2000, `the refusal took ${Date.now() - started} ms`);
    await producer.close();
  });

  test("kill -9 and restart of the broker during a publish loop: every publish succeeds and is stored once", async () => {
    const server = await startServer();
    const timeoutMs = 20_000;
    const client = await connect(server.endpoint, { requestTimeoutMs: timeoutMs, reconnect: { initialMs: 100, maxMs: 1000 } });
    const topic = freshTopic("crash");
    const producer = newUserSignedUpProducer(client, { topic });
    const loop = publishLoop(producer, 3);
    await sleep(400);
    await server.kill();
    const killed = Date.now();
    await sleep(2000 + Math.random() * 1000);
    await server.launch(); // same port, same data dir
    await sleep(500);
    const outcomes = await loop.stop();
    const outage = Date.now() - killed;
    await checkStoredOnce(client, topic, outcomes, timeoutMs);
    const waited = outcomes.filter((o) => o.receipt !== undefined && o.tookMs > outage / 2).length;
    assert.ok(waited > 0 && producer.stats().resends > 0, `no publish waited out the outage (${JSON.stringify(producer.stats())})`);
    await producer.close();
  });

  test("a publish while the broker stays down fails at its timeout, not before, naming the cause and the event id", async () => {
    const server = await startServer({ inMemory: true });
    const client = await connect(server.endpoint, { reconnect: fastReconnect });
    const producer = newUserSignedUpProducer(client, { topic: freshTopic("down") });
    await producer.publish({ userId: "before" });
    await server.kill();
    const started = Date.now();
    const error = await catchError(producer.publish({ userId: "during" }, { timeoutMs: 800 }));
    const took = Date.now() - started;
    assert.equal(error.grpcCode, GrpcCode.DeadlineExceeded);
    assert.ok(took >= 750 && took < 3000, `failed after ${took} ms, want at its 800 ms timeout`);
    assert.match(error.message, /did not confirm the publish within its timeout \(800 ms\)/);
    assert.match(error.message, /connection refused|ECONNREFUSED/);
    assert.ok((error.metadata["id"] ?? "") !== "" && error.message.includes(error.metadata["id"] as string), error.message);
    assert.ok(error.cause instanceof Error, "the last connection failure is the cause");
    // Closing does not wait for the broker that stays down.
    await producer.close();
  });
});

describe("consumer across failures", () => {
  test("a consumer whose connection is reset re-attaches and gets every event", async () => {
    const server = await startServer({ inMemory: true });
    const proxy = await TcpProxy.start(server.port);
    const logged: string[] = [];
    const client = await connect(proxy.address, {
      reconnect: fastReconnect,
      logger: { ...quiet, warn: (m: string) => logged.push(m), info: (m: string) => logged.push(m) },
    });
    const topic = freshTopic("consumer-cut");
    const producer = newUserSignedUpProducer(await connect(server.endpoint), { topic });
    await producer.publish({ userId: "before" });
    const consumer = await subscribeUserSignedUp(client, { topic, subscription: "reset", position: "earliest" });
    const seen = new Set<string>();
    const stop = new AbortController();
    const running = consumer.run((env) => void seen.add(env.value.userId), { signal: stop.signal });
    const waitFor = async (what: string, condition: () => boolean) => {
      for (const deadline = Date.now() + 10_000; !condition(); await sleep(20)) {
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; log:\n${logged.join("\n")}`);
      }
    };
    await waitFor("the first event", () => seen.has("before"));
    proxy.cut(); // a RST: ECONNRESET on the client
    await producer.publish({ userId: "after" });
    await waitFor("the event published after the reset", () => seen.has("after"));
    stop.abort();
    await running;
    assert.ok(logged.some((m) => m.includes("re-attached")), logged.join("\n"));
    assert.ok(proxy.connections >= 2);
  });
});

describe("endpoints and connecting", () => {
  test("host:port and http://host:port are plaintext; https:// is TLS", async () => {
    const server = await startServer({ inMemory: true });
    for (const endpoint of [`127.0.0.1:${server.port}`, `http://127.0.0.1:${server.port}`, `localhost:${server.port}`]) {
      const client = await connect(endpoint);
      const producer = newUserSignedUpProducer(client, { topic: freshTopic("endpoint") });
      const receipt = await producer.publish({ userId: endpoint });
      assert.equal(receipt.offset, 0n, endpoint);
      await client.close();
    }
    // The test broker is plaintext: a TLS handshake with it fails, at once.
    const started = Date.now();
    const error = await catchError(HeraldClient.connect({ endpoint: `https://127.0.0.1:${server.port}` }));
    assert.equal(error.grpcCode, GrpcCode.Unavailable);
    assert.match(error.message, /cannot connect to https:\/\/127\.0\.0\.1:\d+: TLS handshake failed \(wrong version number/);
    assert.match(error.message, /does the broker serve TLS there\?/);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  });

  test("https:// connects over TLS, verified against the CA store or the `tls.ca` given", async () => {
    // A TLS HTTP/2 server answering every gRPC call with UNIMPLEMENTED.
    const tlsServer = createSecureServer({ cert: TEST_CERT, key: TEST_KEY }, (_, response) => {
      response.writeHead(200, { "content-type": "application/grpc", "grpc-status": "12", "grpc-message": "tls-test-server" });
      response.end();
    });
    await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise<void>((resolve) => tlsServer.close(() => resolve())));
    const address = tlsServer.address();
    const endpoint = `https://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`;
    const untrusted = await catchError(HeraldClient.connect({ endpoint }));
    assert.match(untrusted.message, /TLS certificate not accepted \(self-signed certificate; DEPTH_ZERO_SELF_SIGNED_CERT\)/);
    const client = await connect(endpoint, { tls: { ca: TEST_CERT } });
    const answer = await catchError(client.admin.listTopics({}).catch((e) => Promise.reject(HeraldError.from(e))));
    assert.equal(answer.grpcCode, GrpcCode.Unimplemented);
    assert.equal(answer.message, "tls-test-server");
  });

  test("a refused connection fails connect at once with the cause", async () => {
    const port = await freePort();
    for (const endpoint of [`127.0.0.1:${port}`, `http://127.0.0.1:${port}`]) {
      const started = Date.now();
      const error = await catchError(HeraldClient.connect({ endpoint }));
      const took = Date.now() - started;
      assert.equal(error.grpcCode, GrpcCode.Unavailable);
      assert.match(error.message, /connection refused \(connect ECONNREFUSED 127\.0\.0\.1:\d+\)/);
      assert.ok(error.message.startsWith(`cannot connect to ${endpoint}: `), error.message);
      assert.ok(took < 2000, `${endpoint}: took ${took} ms`);
    }
  });

  test("an unknown host fails connect at once with the DNS failure", async () => {
    // .invalid never resolves (RFC 6761).
    const started = Date.now();
    const error = await catchError(HeraldClient.connect({ endpoint: "http://herald-no-such-host.invalid:50051" }));
    assert.equal(error.grpcCode, GrpcCode.Unavailable);
    assert.match(error.message, /cannot connect to http:\/\/herald-no-such-host\.invalid:50051: (unknown host|DNS lookup failed).*herald-no-such-host\.invalid/);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  });

  test("waitForServerMs waits for a broker that starts later, and gives up with the cause", async () => {
    const late = await HeraldServer.prepare({ inMemory: true });
    const launched = sleep(700).then(() => late.launch());
    cleanups.push(async () => {
      await launched.catch(() => {}); // when the test failed early: stop it once it is up
      await late.stop();
    });
    const started = Date.now();
    const client = await connect(`127.0.0.1:${late.port}`, { waitForServerMs: 15_000, reconnect: fastReconnect });
    const took = Date.now() - started;
    await launched;
    assert.ok(took >= 700, `connected after ${took} ms, before the broker started`);
    const producer = newUserSignedUpProducer(client, { topic: freshTopic("late") });
    assert.equal((await producer.publish({ userId: "late" })).offset, 0n);

    const givingUp = Date.now();
    const error = await catchError(
      HeraldClient.connect({ endpoint: `127.0.0.1:${await freePort()}`, waitForServerMs: 600, reconnect: fastReconnect }),
    );
    const gaveUpAfter = Date.now() - givingUp;
    assert.match(error.message, /not reachable within 600 ms \(waitForServerMs\); last failure: connection refused/);
    assert.ok(gaveUpAfter >= 550 && gaveUpAfter < 3000, `gave up after ${gaveUpAfter} ms`);
  });
});

describe("keepalive", () => {
  test("a 1 s keepalive on an idle connection held for 5 s: pings flow, the broker keeps the connection, a publish then succeeds", async () => {
    const server = await startServer({ inMemory: true });
    const proxy = await TcpProxy.start(server.port);
    const client = await connect(proxy.address, { keepalive: { intervalMs: 1000, timeoutMs: 1000 } });
    const topic = freshTopic("idle");
    const first = newUserSignedUpProducer(client, { topic });
    await first.publish({ userId: "before" });
    await first.close(); // no call open from here on
    const pingsBefore = proxy.clientPings;
    await sleep(5000);
    const pings = proxy.clientPings - pingsBefore;
    const second = newUserSignedUpProducer(client, { topic });
    const receipt = await second.publish({ userId: "after" }, { timeoutMs: 5000 });
    assert.equal(receipt.offset, 1n);
    assert.ok(pings >= 3, `${pings} PINGs in 5 s idle with a 1 s keepalive`);
    assert.equal(proxy.serverGoaways, 0, "the broker sent GOAWAY (too_many_pings?)");
    assert.equal(proxy.connections, 1, "the connection was replaced");
    assert.equal(second.stats().resends, 0);
    await second.close();
  });

  test("a frozen broker (SIGSTOP) is noticed by keepalive; the publish in flight goes again and succeeds once it resumes", async () => {
    const server = await startServer({ inMemory: true });
    const logged: string[] = [];
    const client = await connect(server.endpoint, {
      keepalive: { intervalMs: 1000, timeoutMs: 1000 },
      requestTimeoutMs: 30_000,
      reconnect: fastReconnect,
      logger: { ...quiet, debug: (m: string) => logged.push(m) },
    });
    const topic = freshTopic("frozen");
    const producer = newUserSignedUpProducer(client, { topic });
    await producer.publish({ userId: "before" });
    server.signal("SIGSTOP");
    const frozen = Date.now();
    const during = producer.publish({ userId: "during" });
    during.catch(() => {});
    while (producer.stats().resends === 0) {
      if (Date.now() - frozen > 8000) {
        assert.fail(`the frozen broker was not noticed within 8 s; log:\n${logged.join("\n")}`);
      }
      await sleep(50);
    }
    const noticedAfter = Date.now() - frozen;
    assert.ok(
      logged.some((m) => m.includes("PING timed out")),
      `the stream broke, but not by keepalive; log:\n${logged.join("\n")}`,
    );
    await sleep(Math.max(0, 3000 - noticedAfter));
    server.signal("SIGCONT");
    const resumed = Date.now();
    const receipt = await Promise.race([during, sleep(10_000).then(() => undefined)]);
    assert.ok(receipt !== undefined, "the publish in flight during the freeze did not complete within 10 s of the broker resuming");
    assert.ok(Date.now() - resumed < 10_000);
    const stored: string[] = [];
    for await (const r of client.read(UserSignedUpEvent, { topic })) {
      stored.push(r.value.userId);
    }
    assert.deepEqual(stored, ["before", "during"]);
    await producer.close();
  });
});
