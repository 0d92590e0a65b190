import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { onProcessExit } from "./exit-cleanup.ts";
import { LogTail } from "./log-tail.ts";
import { ensureCommand } from "./tools.ts";

/** A running nats-server with JetStream on 127.0.0.1. */
export interface Nats {
  url: string;
  port: number;
  storeDir: string;
  /** Stops the server but keeps its store, so restart() brings the same streams back. */
  stop(): Promise<void>;
  /** Starts it again (stopping it first if needed) on the same port and store dir. */
  restart(): Promise<void>;
}

export interface StartNatsOptions {
  /** JetStream store; a temp dir, removed when the process exits, when omitted. */
  storeDir?: string;
  /** Fixed port; a random free one when omitted. */
  port?: number;
}

const READY_TIMEOUT_MS = 10_000;
const KILL_AFTER_MS = 5_000;
const LISTENING = /Listening for client connections on 127\.0\.0\.1:(\d+)/;

interface Server {
  child: ChildProcess;
  /** Settles once the process is gone (or never started). */
  exited: Promise<void>;
  /** The port it listens on, once JetStream is up and it takes clients. */
  ready: Promise<number>;
}

/** Starts nats-server with JetStream on 127.0.0.1 and waits until it takes clients. */
export async function startNats(opts: StartNatsOptions = {}): Promise<Nats> {
  ensureCommand("nats-server", "nats-server");
  const temp = opts.storeDir === undefined;
  const storeDir =
    opts.storeDir === undefined ? await mkdtemp(join(tmpdir(), "protomesh-nats-")) : resolve(opts.storeDir);
  await mkdir(storeDir, { recursive: true });

  const first = spawnServer(opts.port ?? -1, storeDir, temp);
  let port: number;
  try {
    port = await first.ready;
  } catch (error) {
    if (temp) await rm(storeDir, { recursive: true, force: true });
    throw error;
  }
  // stop() keeps the store for restart(), so a temp store can only go when the process does.
  if (temp) onProcessExit(() => rmSync(storeDir, { recursive: true, force: true }));

  let running: Server | undefined = first;
  let queue: Promise<void> = Promise.resolve();
  // stop and restart run one at a time, in call order, so they never race over the port.
  const serial = (op: () => Promise<void>): Promise<void> => {
    const result = queue.then(op);
    queue = result.catch(() => {});
    return result;
  };

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    stop() {
      // Kill at once rather than behind a queued restart, so stop() also aborts a restart that hangs.
      if (running) void terminate(running);
      return serial(async () => {
        if (running) await terminate(running);
        running = undefined;
      });
    },
    restart() {
      return serial(async () => {
        if (running) await terminate(running);
        const server = spawnServer(port, storeDir, temp);
        running = server;
        try {
          await server.ready;
        } catch (error) {
          await terminate(server);
          running = undefined;
          throw error;
        }
      });
    },
  };
}

function spawnServer(port: number, storeDir: string, temp: boolean): Server {
  const args = ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir];
  // Its own process group: a terminal's Ctrl-C goes to the dev runner and its services, which
  // still need NATS while they drain; the runner stops it after them.
  const child = spawn("nats-server", args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  // A temp server holds nothing worth a graceful shutdown; a kept store gets one.
  const unregister = onProcessExit(() => child.kill(temp ? "SIGKILL" : "SIGTERM"));
  const log = new LogTail();
  const failure = (why: string): Error =>
    new Error(`nats-server (${args.join(" ")}) ${why}; last output:\n${log}`);

  const exited = new Promise<void>((resolveExit) => {
    child.once("exit", () => resolveExit());
    // A spawn error emits no 'exit'.
    child.once("error", () => resolveExit());
  });
  void exited.then(unregister);

  const ready = new Promise<number>((resolveReady, rejectReady) => {
    let listeningPort: number | undefined;
    let jetStream = false;
    const timer = setTimeout(() => {
      rejectReady(failure(`was not ready after ${READY_TIMEOUT_MS} ms`));
      child.kill("SIGKILL");
    }, READY_TIMEOUT_MS);
    const onOutput = (chunk: Buffer): void => {
      for (const line of log.push(chunk.toString("utf8"))) {
        const listening = LISTENING.exec(line);
        if (listening?.[1] !== undefined) listeningPort = Number(listening[1]);
        if (line.includes("Starting JetStream")) jetStream = true;
        // "Server is ready" comes last, after JetStream and every listener are up.
        if (!line.includes("Server is ready")) continue;
        clearTimeout(timer);
        if (listeningPort === undefined || !jetStream) {
          rejectReady(failure("started without a client listener or JetStream"));
          child.kill("SIGKILL");
        } else {
          resolveReady(listeningPort);
        }
      }
    };
    child.stdout?.on("data", onOutput);
    child.stderr?.on("data", onOutput);
    child.once("error", (error) => {
      clearTimeout(timer);
      rejectReady(failure(`could not be spawned: ${error.message}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      // A no-op once ready: only an early exit is a failure here.
      rejectReady(failure(`exited before it was ready (code ${code}, signal ${signal})`));
    });
  });
  // Callers that stop() a server mid-start never look at ready; don't report that as unhandled.
  ready.catch(() => {});

  return { child, exited, ready };
}

async function terminate(server: Server): Promise<void> {
  const { child } = server;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), KILL_AFTER_MS);
    await server.exited;
    clearTimeout(killer);
  }
  await server.exited;
}
