/**
 * Starts a real `herald serve` for tests and examples: $HERALD_BIN (default
 * <repo>/target/debug/herald) on a free port with a temp data dir, waits
 * until it answers, and kills it at the end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { HeraldClient, HeraldError } from "@herald/sdk";

const here = fileURLToPath(new URL(".", import.meta.url));
/** sdks/typescript/dist/test -> repo root */
const repoRoot = resolve(here, "../../../..");

export function heraldBin(): string {
  return process.env["HERALD_BIN"] ?? join(repoRoot, "target/debug/herald");
}

/** A port nothing listens on (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export interface HeraldOptions {
  autoCreateTopics?: boolean;
  /** `--in-memory`: nothing survives a restart. */
  inMemory?: boolean;
}

export class HeraldServer {
  private child: ChildProcess | undefined;
  private constructor(
    readonly port: number,
    readonly dataDir: string,
    private readonly options: HeraldOptions,
  ) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(options: HeraldOptions = {}): Promise<HeraldServer> {
    const server = await HeraldServer.prepare(options);
    await server.launch();
    return server;
  }

  /** A server with its port and data dir chosen, not started yet (`launch` starts it). */
  static async prepare(options: HeraldOptions = {}): Promise<HeraldServer> {
    return new HeraldServer(await freePort(), mkdtempSync(join(tmpdir(), "herald-ts-")), options);
  }

  /** The process id of the running server. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Sends `signal` (e.g. SIGSTOP, SIGCONT) to the running server. */
  signal(signal: NodeJS.Signals): void {
    if (this.child !== undefined && this.child.exitCode === null) {
      this.child.kill(signal);
    }
  }

  /** Starts the process and waits until it answers an Admin call. */
  async launch(): Promise<void> {
    const args = [
      "serve",
      "--listen",
      `127.0.0.1:${this.port}`,
      "--data-dir",
      this.dataDir,
      "--auto-create-topics",
      String(this.options.autoCreateTopics ?? true),
      "--log-level",
      "warn",
      ...(this.options.inMemory === true ? ["--in-memory", "true"] : []),
    ];
    const child = spawn(heraldBin(), args, { stdio: ["ignore", "ignore", "inherit"] });
    this.child = child;
    const exited = new Promise<never>((_, reject) => {
      child.once("error", (e) => reject(new Error(`cannot start ${heraldBin()}: ${e.message} (set HERALD_BIN)`)));
      child.once("exit", (code) => reject(new Error(`herald exited early with ${code}`)));
    });
    exited.catch(() => {});
    const client = new HeraldClient({ endpoint: this.endpoint, requestTimeoutMs: 1000 });
    const deadline = Date.now() + 20_000;
    try {
      for (;;) {
        try {
          await Promise.race([client.admin.listTopics({}, { timeoutMs: 1000 }), exited]);
          return;
        } catch (error) {
          if (Date.now() > deadline || (error instanceof Error && error.message.startsWith("herald exited"))) {
            throw error;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } finally {
      await client.close();
    }
  }

  /** Kills the process (SIGKILL: like a crash) and waits for it to exit. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null) {
      return;
    }
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }

  /** Kills the process, leaves the port closed for `downMs`, and starts it again on the same data. */
  async restart(downMs = 0): Promise<void> {
    await this.kill();
    await new Promise((r) => setTimeout(r, downMs));
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Awaits `promise`, which must fail with a HeraldError, and returns it. */
export async function catchError(promise: Promise<unknown>): Promise<HeraldError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HeraldError, `expected a HeraldError, got ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}
