// `npm start`: the whole mesh on this machine. An embedded PostgreSQL and a nats-server -js
// (unless DATABASE_URL / NATS_URL point elsewhere), an SMTP sink that prints mail (unless
// SMTP_URL is set), then every service and the gateway as child processes. Ctrl-C stops all.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { startNats, startPostgres, startSmtp } from "@protomesh/devkit";
import pg from "pg";

const root = join(import.meta.dirname, "..");
const data = join(root, ".data");
mkdirSync(data, { recursive: true });

/** Development secrets, made once per checkout and kept out of git (.data is ignored). */
function devSecrets(): { MESH_SECRET: string; AUTH_KEY_ENCRYPTION_KEY: string } {
  const file = join(data, "secrets.json");
  if (!existsSync(file)) {
    const secrets = {
      MESH_SECRET: randomBytes(32).toString("base64"),
      AUTH_KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    };
    writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
  }
  return JSON.parse(readFileSync(file, "utf8"));
}

const services = [
  { name: "auth", port: 50051, metrics: 9101 },
  { name: "user", port: 50052, metrics: 9102 },
  { name: "notify", port: 50053, metrics: 9103 },
] as const;
const gatewayPort = Number(process.env.GATEWAY_PORT ?? 8080);

const stops: Array<() => Promise<unknown>> = [];
let stopping = false;
async function shutdown(code: number) {
  if (stopping) return;
  stopping = true;
  console.log("\nstopping…");
  for (const stop of stops.reverse()) await stop().catch((err) => console.error(err));
  process.exit(code);
}
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));

/** Starts a child, prefixes its output, resolves once it logs that it is up. */
function spawnService(
  name: string,
  entry: string,
  env: Record<string, string>,
  readyWhen: RegExp,
): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", entry], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    stops.push(async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    });
    const label = `[${name}]`.padEnd(9);
    let ready = false;
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        console.log(`${label}${line}`);
        if (!ready && readyWhen.test(line)) {
          ready = true;
          resolve(child);
        }
      });
    }
    child.once("exit", (code) => {
      if (!ready) reject(new Error(`${name} exited with code ${code} before it was ready`));
      else if (!stopping) {
        console.error(`${name} exited unexpectedly (code ${code})`);
        void shutdown(1);
      }
    });
  });
}

try {
  let adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) {
    const pgServer = await startPostgres({
      dataDir: join(data, "pg"),
      persistent: true,
      port: Number(process.env.PG_PORT ?? 54329),
    });
    stops.push(() => pgServer.stop());
    adminUrl = pgServer.adminUrl;
  }
  let natsUrl = process.env.NATS_URL;
  if (!natsUrl) {
    const nats = await startNats({
      storeDir: join(data, "nats"),
      port: Number(process.env.NATS_PORT ?? 4222),
    });
    stops.push(() => nats.stop());
    natsUrl = nats.url;
  }
  let smtpUrl = process.env.SMTP_URL;
  if (!smtpUrl) {
    const smtp = await startSmtp();
    stops.push(() => smtp.stop());
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
  const dbUrl = (name: string) => {
    const u = new URL(adminUrl);
    u.pathname = `/protomesh_${name}`;
    return u.toString();
  };
  const admin = new pg.Client(adminUrl);
  await admin.connect();
  for (const s of services) {
    const exists = await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [`protomesh_${s.name}`]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE protomesh_${s.name}`);
  }
  await admin.end();

  const secrets = devSecrets();
  const addr = (name: string) => `dns:///127.0.0.1:${services.find((s) => s.name === name)?.port}`;
  const common = {
    HOST: "127.0.0.1",
    NATS_URL: natsUrl,
    AUTH_ADDR: addr("auth"),
    USER_ADDR: addr("user"),
    NOTIFY_ADDR: addr("notify"),
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
  };
  for (const s of services) {
    await spawnService(
      s.name,
      `services/${s.name}/src/main.ts`,
      {
        ...common,
        ...secrets,
        PORT: String(s.port),
        METRICS_PORT: String(s.metrics),
        DATABASE_URL: dbUrl(s.name),
        SMTP_URL: smtpUrl,
      },
      /"msg":"started"/,
    );
  }
  await spawnService(
    "gateway",
    "gateway/src/main.ts",
    {
      ...common,
      PORT: String(gatewayPort),
      CORS_ORIGINS: process.env.CORS_ORIGINS ?? "http://localhost:5173",
    },
    /"msg":"gateway listening"/,
  );

  console.log(`
Protomesh is running.
  gateway   http://127.0.0.1:${gatewayPort}   (Connect, gRPC-web and gRPC; /healthz /readyz /metrics /.well-known/jwks.json)
${services.map((s) => `  ${s.name.padEnd(9)} 127.0.0.1:${s.port}   (gRPC with reflection; metrics on :${s.metrics}/metrics)`).join("\n")}
  mail      printed here as [mail]${process.env.SMTP_URL ? " (SMTP_URL is set: sent there instead)" : ""}

Try:
  curl -s -X POST http://127.0.0.1:${gatewayPort}/protomesh.auth.v1.AuthService/SignUp \\
    -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery","displayName":"Ada"}'
  grpcurl -plaintext 127.0.0.1:50052 list
Ctrl-C stops everything.`);
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  await shutdown(1);
}
