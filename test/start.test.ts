import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { freePortRange } from "@protomesh/devkit";
import { meshServices } from "@protomesh/mesh";
import { waitUntil } from "@protomesh/testkit";
import { connect } from "nats";
import pg from "pg";

const root = join(import.meta.dirname, "..");
const SERVICES = meshServices.map((s) => s.name);
const n = SERVICES.length;
/**
 * start.ts puts its ports at PORT_BASE + 0 (gateway), 1..n (services), n+1..2n (metrics),
 * 2n+1 (NATS) and 2n+2 (PostgreSQL).
 */
const PORTS = 2 * n + 3;
const NATS_OFFSET = 2 * n + 1;
const PG_OFFSET = 2 * n + 2;

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("Ctrl-C stops the whole mesh cleanly: services drain while the infrastructure is up, exit 0", {
  timeout: 120_000,
}, async (t) => {
  const data = await mkdtemp(join(tmpdir(), "protomesh-start-"));
  // As root, PostgreSQL runs as the postgres user, which must reach the cluster in here.
  await chmod(data, 0o755);
  // Below the kernel's ephemeral range, claimed against the other test files' servers.
  const base = await freePortRange(PORTS);
  const env: NodeJS.ProcessEnv = { ...process.env, PROTOMESH_DATA_DIR: data, PORT_BASE: String(base) };
  // A developer's own settings would point the mesh elsewhere.
  for (const name of ["DATABASE_URL", "NATS_URL", "SMTP_URL", "GATEWAY_PORT", "NATS_PORT", "PG_PORT"]) {
    delete env[name];
  }

  // Its own process group, as a terminal gives a foreground job, so we can signal the group.
  const start = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
    cwd: root,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const pid = start.pid;
  assert.ok(pid !== undefined);
  let output = "";
  const closed = new Promise<number | null>((resolve) => start.once("close", (code) => resolve(code)));
  const running = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      if (output.includes("Protomesh is running")) resolve();
    };
    start.stdout.on("data", onData);
    start.stderr.on("data", onData);
    void closed.then(() => reject(new Error(`start.ts exited before the mesh was running:\n${output}`)));
  });
  t.after(async () => {
    // After a failure: SIGTERM lets start.ts stop its PostgreSQL and NATS, which are in their own
    // process groups; whatever still runs of ours then goes hard.
    if (groupAlive(pid)) {
      process.kill(-pid, "SIGTERM");
      const timeout = new Promise((resolve) => setTimeout(resolve, 30_000).unref());
      await Promise.race([closed, timeout]);
      if (groupAlive(pid)) process.kill(-pid, "SIGKILL");
    }
    await rm(data, { recursive: true, force: true });
  });

  await running;
  const postmaster = Number((await readFile(join(data, "pg", "postmaster.pid"), "utf8")).split("\n")[0]);
  // What start.ts had printed when each server went away: the services' drain must come before.
  const nats = await connect({ servers: `127.0.0.1:${base + NATS_OFFSET}`, reconnect: false });
  const natsGone = nats.closed().then(() => output);
  const db = new pg.Client(`postgres://postgres:postgres@127.0.0.1:${base + PG_OFFSET}/postgres`);
  await db.connect();
  db.on("error", () => {});
  const postgresGone = new Promise<string>((resolve) => db.once("end", () => resolve(output)));

  process.kill(-pid, "SIGINT");
  const code = await closed;

  assert.equal(code, 0, output);
  assert.doesNotMatch(output, /Error|unhandled|exited unexpectedly|did not stop cleanly|^\s+at /m);
  // Each service got through its whole drain (outbox flushed, NATS drained, pool closed) while
  // NATS and PostgreSQL were still up.
  for (const [server, gone] of [
    ["NATS", await natsGone],
    ["PostgreSQL", await postgresGone],
  ] as const) {
    for (const name of SERVICES) {
      assert.match(
        gone,
        new RegExp(`^\\[${name}\\] .*"msg":"stopped"`, "m"),
        `${server} stopped before ${name}`,
      );
    }
  }
  // Children exit with start.ts, but their last helpers (tsx's esbuild) may take a moment longer.
  await waitUntil(() => !groupAlive(pid), 5_000, "every process of the group gone");
  assert.throws(() => process.kill(postmaster, 0), { code: "ESRCH" }, "PostgreSQL outlived start.ts");
  for (let port = base; port < base + PORTS; port++)
    assert.ok(await canListen(port), `port ${port} is still taken`);
});
