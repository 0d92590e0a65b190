import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Port 0 hands out ports from the kernel's ephemeral range, the same range outgoing connections
// take their local ports from: between the check and the server's own bind, a busy test run's
// next connection can take the port (EADDRINUSE). Ports below that range are never handed out
// behind our back, so a free one there stays free unless another server asks for it by number.
const LOWEST = 10_000;
const ATTEMPTS = 20;
// Between the check and the bind a port is only promised: another test process must not be
// handed the same one. A claim is a file made exclusively, and lapses once any server would
// long have bound the port.
const CLAIMS = join(tmpdir(), "protomesh-port-claims");
const CLAIM_MS = 120_000;

/** Removes lapsed claims, so the folder does not keep one file per port ever handed out. */
const sweep = () => {
  try {
    for (const name of readdirSync(CLAIMS)) {
      const file = join(CLAIMS, name);
      try {
        if (Date.now() - statSync(file).mtimeMs >= CLAIM_MS) unlinkSync(file);
      } catch {
        // Removed by another process meanwhile.
      }
    }
  } catch {
    // No folder yet.
  }
};
let swept = false;

function claim(port: number): boolean {
  if (!swept) {
    swept = true;
    sweep();
  }
  const file = join(CLAIMS, String(port));
  for (let i = 0; i < 2; i++) {
    try {
      mkdirSync(CLAIMS, { recursive: true });
      closeSync(openSync(file, "wx"));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") return true;
      try {
        if (Date.now() - statSync(file).mtimeMs < CLAIM_MS) return false;
        unlinkSync(file);
      } catch {
        // Lapsed and removed by another process meanwhile: try again.
      }
    }
  }
  return false;
}

function ephemeralStart(): number {
  try {
    const [start] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    const n = Number(start);
    return Number.isInteger(n) && n > LOWEST + 1_000 ? n : 0;
  } catch {
    return 0;
  }
}

/** Listens on the port (0: any) and closes again; resolves the port, or undefined when taken. */
function tryPort(port: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", (err: NodeJS.ErrnoException) =>
      err.code === "EADDRINUSE" || err.code === "EACCES" ? resolve(undefined) : reject(err),
    );
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error("could not read the port of a listening socket"));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}

/** `count` consecutive ports below `below`, claimed and free a moment ago; the first of them. */
async function claimRange(count: number, below: number, attempts: number): Promise<number | undefined> {
  for (let i = 0; i < attempts; i++) {
    const base = LOWEST + Math.floor(Math.random() * (below - LOWEST - count + 1));
    const ports = Array.from({ length: count }, (_, k) => base + k);
    // Claims taken before a refusal lapse on their own.
    if (!ports.every(claim)) continue;
    if ((await Promise.all(ports.map(tryPort))).every((p) => p !== undefined)) return base;
  }
  return undefined;
}

/**
 * `count` consecutive TCP ports on 127.0.0.1 that were free a moment ago, claimed as freePort's
 * are, for a program that numbers its ports from a base; resolves the first.
 */
export async function freePortRange(count: number): Promise<number> {
  const base = await claimRange(count, ephemeralStart() || 32_768, ATTEMPTS * 5);
  if (base === undefined) throw new Error(`no ${count} free ports in a row`);
  return base;
}

/** A TCP port on 127.0.0.1 that was free a moment ago, for servers that cannot listen on port 0. */
export async function freePort(): Promise<number> {
  const below = ephemeralStart();
  const port = (below > 0 ? await claimRange(1, below, ATTEMPTS) : undefined) ?? (await tryPort(0));
  if (port === undefined) throw new Error("no free port");
  return port;
}
