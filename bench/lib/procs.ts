import { type ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** A started child server: the port it announced and a way to stop it. */
export interface StartedProcess {
  port: number;
  /** The server's own process (node, not a wrapper): its CPU time is the server's. */
  pid: number;
  stop(): Promise<void>;
}

/** Tuning for startProcess; the defaults suit a cold tsx start on a slow 2-core machine. */
export interface StartOptions {
  readyTimeoutMs?: number;
  stopTimeoutMs?: number;
}

// Children resolve `tsx` and workspace packages from the repository root, whatever the caller's cwd.
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const STDERR_TAIL_BYTES = 4_096;

const live = new Set<ChildProcess>();
let cleanupInstalled = false;

// 'exit' does not run when the parent dies from a signal, so Ctrl-C would orphan servers that
// keep their ports; the signal handlers kill the children and then exit as the signal would have.
function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  const killAll = (): void => {
    for (const child of live) child.kill("SIGKILL");
  };
  process.once("exit", killAll);
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.once(signal, () => {
      killAll();
      process.exit(code);
    });
  }
}

/** Spawns `node --import tsx <entry>` with `env` added and resolves once it prints {"port":N}. */
export function startProcess(
  entry: string,
  env: Record<string, string>,
  opts: StartOptions = {},
): Promise<StartedProcess> {
  installCleanup();
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 5_000;
  const entryPath = path.resolve(REPO_ROOT, entry);
  const child = spawn(process.execPath, ["--import", "tsx", entryPath], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);

  let stderrTail = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-STDERR_TAIL_BYTES);
  });

  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      live.delete(child);
      resolve();
    });
  });

  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      child.kill("SIGKILL");
      await exited;
    }
  };

  return new Promise<StartedProcess>((resolve, reject) => {
    const name = path.relative(REPO_ROOT, entryPath);
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void stop().finally(() => reject(new Error(`${name}: ${why}\n--- stderr tail ---\n${stderrTail}`)));
    };
    const timer = setTimeout(() => fail(`no {"port":N} line within ${readyTimeoutMs} ms`), readyTimeoutMs);

    // Keep reading after the port line: an undrained pipe would eventually block the child's writes.
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on("line", (line) => {
      if (settled) return;
      const port = parsePort(line);
      if (port === undefined) return;
      settled = true;
      clearTimeout(timer);
      resolve({ port, pid: child.pid as number, stop });
    });
    child.once("error", (err) => fail(`spawn failed: ${err.message}`));
    child.once("exit", (code, signal) => fail(`exited before listening (code ${code}, signal ${signal})`));
  });
}

function parsePort(line: string): number | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed === "object" && parsed !== null && "port" in parsed) {
      const { port } = parsed;
      if (typeof port === "number" && Number.isInteger(port) && port > 0) return port;
    }
  } catch {
    // Not our line: a child may log JSON-looking text before it is ready.
  }
  return undefined;
}
