// `npm start`: the whole mesh on this machine. An embedded PostgreSQL and a nats-server -js
// (unless DATABASE_URL / NATS_URL point elsewhere), an SMTP sink that prints mail (unless
// SMTP_URL is set), then every service and the gateway as child processes. Ctrl-C stops all:
// the services drain first, then the gateway and the infrastructure.
//
// Optional environment:
//   PROTOMESH_DATA_DIR  secrets, the PostgreSQL cluster and the NATS store (default: .data here)
//   PORT_BASE           moves every port, so a second mesh (or a test) can run beside yours:
//                       gateway BASE, the N services of packages/mesh BASE+1..N in list order,
//                       their metrics BASE+N+1..2N, NATS BASE+2N+1, PostgreSQL BASE+2N+2.
//                       Without it: 8080, each service's own ports, 4222 and 54329.
//   GATEWAY_PORT, NATS_PORT, PG_PORT  one port each, over PORT_BASE
//   CORS_ORIGINS        browser origins the gateway allows (default: any localhost port)
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { createDatabase, startNats, startPostgres, startSmtp } from "@protomesh/devkit";
import { addressVariable, meshServices } from "@protomesh/mesh";

const root = join(import.meta.dirname, "..");
const data = resolve(process.env.PROTOMESH_DATA_DIR ?? join(root, ".data"));
mkdirSync(data, { recursive: true });

const portBase = process.env.PORT_BASE === undefined ? undefined : Number(process.env.PORT_BASE);
const n = meshServices.length;
if (portBase !== undefined && !(Number.isInteger(portBase) && portBase > 0 && portBase + 2 * n + 2 < 65536)) {
  console.error(`PORT_BASE must be a port number, not "${process.env.PORT_BASE}"`);
  process.exit(1);
}
const port = (offset: number, otherwise: number, override?: string): number =>
  Number(override ?? (portBase === undefined ? otherwise : portBase + offset));

/** Development secrets, made once per checkout and kept out of git (.data is ignored). */
function devSecret(name: string): string {
  const file = join(data, "secrets.json");
  const secrets: Record<string, string> = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
  if (!secrets[name]) {
    secrets[name] = randomBytes(32).toString("base64");
    writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
  }
  return secrets[name];
}

const services = meshServices.map((s, i) => ({
  ...s,
  port: port(1 + i, s.port),
  metrics: port(1 + n + i, s.metricsPort),
}));
const gatewayPort = port(0, 8080, process.env.GATEWAY_PORT);
// Any page served from this machine, whatever its dev server's port: the usual front-end setup.
const DEV_CORS_ORIGINS = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*";

// Past their own shutdown timeout (SHUTDOWN_TIMEOUT_MS, 10 s by default), a child is stuck.
const STOP_GRACE_MS = 15_000;
/** Log prefixes line up: the longest "[name]" plus a space. */
const LABEL_WIDTH = Math.max(...[...meshServices.map((s) => s.name), "gateway"].map((n) => n.length)) + 3;

interface Child {
  name: string;
  process: ChildProcess;
  exited: Promise<void>;
}
/** Services and the gateway, which stop before the infrastructure they use. */
const children: Child[] = [];
/** PostgreSQL, NATS and the SMTP sink, stopped last, in reverse order of start. */
const infrastructure: Array<() => Promise<unknown>> = [];
let stopping = false;
let exitCode = 0;

async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  exitCode = code;
  console.log("\nstopping…");
  await Promise.all(children.map(stopChild));
  // PostgreSQL and NATS run in their own process groups, so they are still up for the drain.
  for (const stop of infrastructure.reverse()) {
    await stop().catch((err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      exitCode = 1;
    });
  }
  process.exit(exitCode);
}
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));

async function stopChild({ process: child, exited }: Child): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  // After a terminal's Ctrl-C they are draining already (same process group); SIGTERM then joins
  // the stop in progress (runMain and the gateway handle SIGINT and SIGTERM with the same stop).
  child.kill("SIGTERM");
  const killer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
  await exited;
  clearTimeout(killer);
}

/** Starts a child, prefixes its output, resolves once it logs that it is up. */
function spawnChild(
  name: string,
  entry: string,
  env: Record<string, string>,
  readyWhen: RegExp,
): Promise<ChildProcess> {
  return new Promise((resolveReady, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", entry], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const label = `[${name}]`.padEnd(LABEL_WIDTH);
    // 'close' comes after the last output line, so nothing it printed is lost.
    const exited = new Promise<void>((r) => child.once("close", () => r()));
    children.push({ name, process: child, exited });
    let ready = false;
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        console.log(`${label}${line}`);
        if (!ready && readyWhen.test(line)) {
          ready = true;
          resolveReady(child);
        }
      });
    }
    child.once("exit", (code, signal) => {
      const clean = code === 0;
      if (!ready) reject(new Error(`${name} exited with code ${code} before it was ready`));
      if (stopping) {
        if (!clean) {
          console.error(`${name} did not stop cleanly (code ${code}, signal ${signal})`);
          exitCode = 1;
        }
      } else if (clean) {
        // Stopped by someone else (a signal to it alone): the mesh is incomplete without it.
        console.log(`${name} stopped; stopping the rest`);
        void shutdown(0);
      } else if (ready) {
        console.error(`${name} exited unexpectedly (code ${code}, signal ${signal})`);
        void shutdown(1);
      }
    });
  });
}

try {
  let adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) {
    const requested = join(data, "pg");
    const pgServer = await startPostgres({
      dataDir: requested,
      persistent: true,
      port: port(2 * n + 2, 54329, process.env.PG_PORT),
    });
    infrastructure.push(() => pgServer.stop());
    adminUrl = pgServer.adminUrl;
    const moved = pgServer.dataDir === requested ? "" : ` (the postgres user cannot reach ${requested})`;
    console.log(`[postgres] 127.0.0.1:${pgServer.port}, data in ${pgServer.dataDir}${moved}`);
  }
  let natsUrl = process.env.NATS_URL;
  if (!natsUrl) {
    const nats = await startNats({
      storeDir: join(data, "nats"),
      port: port(2 * n + 1, 4222, process.env.NATS_PORT),
    });
    infrastructure.push(() => nats.stop());
    natsUrl = nats.url;
  }
  let smtpUrl = process.env.SMTP_URL;
  if (!smtpUrl) {
    const smtp = await startSmtp();
    infrastructure.push(() => smtp.stop());
    smtpUrl = smtp.url;
    const seen = new Set<unknown>();
    setInterval(() => {
      for (const m of smtp.messages) {
        if (seen.has(m)) continue;
        seen.add(m);
        console.log(`[mail]   to ${m.to.join(", ")}: ${m.subject}\n${m.text.replace(/^/gm, "         ")}`);
      }
    }, 500).unref();
  }

  // One database per service: no service can read another's tables.
  const databases = new Map<string, string>();
  for (const s of services) databases.set(s.name, await createDatabase(adminUrl, `protomesh_${s.name}`));

  // The gateway gets GATEWAY_SECRET (its credential for the client address), never MESH_SECRET.
  const meshSecret = devSecret("MESH_SECRET");
  const common = {
    HOST: "127.0.0.1",
    NATS_URL: natsUrl,
    GATEWAY_SECRET: devSecret("GATEWAY_SECRET"),
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
    ...Object.fromEntries(services.map((s) => [addressVariable(s.name), `dns:///127.0.0.1:${s.port}`])),
  };
  for (const s of services) {
    await spawnChild(
      s.name,
      `services/${s.name}/src/main.ts`,
      {
        ...common,
        MESH_SECRET: meshSecret,
        ...s.devEnv?.({ smtpUrl, secret: devSecret, demo: true }),
        PORT: String(s.port),
        METRICS_PORT: String(s.metrics),
        DATABASE_URL: databases.get(s.name) ?? "",
      },
      /"msg":"started"/,
    );
  }
  await spawnChild(
    "gateway",
    "gateway/src/main.ts",
    {
      ...common,
      PORT: String(gatewayPort),
      CORS_ORIGINS: process.env.CORS_ORIGINS ?? DEV_CORS_ORIGINS,
    },
    /"msg":"gateway listening"/,
  );

  console.log(`
Protomesh is running.
  gateway   http://127.0.0.1:${gatewayPort}   (Connect, gRPC-web and gRPC; /healthz /readyz /metrics /.well-known/jwks.json)
${services.map((s) => `  ${s.name.padEnd(9)} 127.0.0.1:${s.port}   (gRPC with reflection; metrics on :${s.metrics}/metrics)`).join("\n")}
  CORS      ${process.env.CORS_ORIGINS ?? `${DEV_CORS_ORIGINS} (set CORS_ORIGINS to change)`}
  mail      printed here as [mail]${process.env.SMTP_URL ? " (SMTP_URL is set: sent there instead)" : ""}

Try:
  curl -s -X POST http://127.0.0.1:${gatewayPort}/protomesh.auth.v1.AuthService/SignUp \\
    -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery","displayName":"Ada"}'
  npm run grpc -- 127.0.0.1:${services[1]?.port} list      (or grpcurl -plaintext …)
Ctrl-C stops everything.`);
} catch (err) {
  // Once stopping, a start cut short is expected, not worth a message.
  if (!stopping) console.error(err instanceof Error ? err.message : err);
  await shutdown(1);
}
