// Starts the whole mesh in this process on free ports: a real PostgreSQL, NATS JetStream and
// SMTP server, every service and the gateway. stop() tears all of it down, also after a failure.
import { randomBytes } from "node:crypto";
import { authService, readAuthConfig } from "@protomesh/auth";
import {
  freePort,
  type Nats,
  type Postgres,
  type Smtp,
  startNats,
  startPostgres,
  startSmtp,
} from "@protomesh/devkit";
import { type RunningGateway, readGatewayConfig, startGateway, upstreamServices } from "@protomesh/gateway";
import { notifyService, readNotifyConfig } from "@protomesh/notify";
import { createLogger, type RunningService, startService } from "@protomesh/platform";
import { readUserConfig, userService } from "@protomesh/user";

export interface MeshOptions {
  /** notify's ack wait, short in tests that make JetStream redeliver. */
  notifyAckWaitMs?: number;
  notifyBeforeAck?: (eventId: string) => Promise<void>;
}

export interface Mesh {
  pg: Postgres;
  nats: Nats;
  smtp: Smtp;
  auth: RunningService;
  user: RunningService;
  notify: RunningService;
  gateway: RunningGateway;
  /** The environment each service was started with, for restarting one. */
  env: Record<"auth" | "user" | "notify", Record<string, string>>;
  /** grpc target of a service, e.g. "127.0.0.1:40123". */
  addr(service: "auth" | "user" | "notify"): string;
  startUser(): Promise<RunningService>;
  startNotify(opts?: MeshOptions): Promise<RunningService>;
  stop(): Promise<void>;
}

const level = process.env.TEST_LOG_LEVEL ?? "silent";

/** Starts infrastructure, services and gateway; on any failure stops what already started. */
export async function startMesh(opts: MeshOptions = {}): Promise<Mesh> {
  const stops: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    stops.length = 0;
  };
  try {
    const [pg, nats, smtp] = await Promise.all([startPostgres(), startNats(), startSmtp()]);
    stops.push(
      () => pg.stop(),
      () => nats.stop(),
      () => smtp.stop(),
    );
    const common = {
      HOST: "127.0.0.1",
      PORT: "0",
      METRICS_PORT: "0",
      NATS_URL: nats.url,
      MESH_SECRET: randomBytes(32).toString("base64"),
      LOG_LEVEL: level,
      SHUTDOWN_TIMEOUT_MS: "2000",
    };
    const db = async (name: string) => pg.createDatabase(name);
    const env = {
      user: { ...common, DATABASE_URL: await db("protomesh_user") },
      auth: {
        ...common,
        DATABASE_URL: await db("protomesh_auth"),
        AUTH_KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
        BCRYPT_COST: "10",
      } as Record<string, string>,
      notify: { ...common, DATABASE_URL: await db("protomesh_notify"), SMTP_URL: smtp.url } as Record<
        string,
        string
      >,
    };
    const running: Partial<Record<"auth" | "user" | "notify", RunningService>> = {};
    const addr = (s: "auth" | "user" | "notify") => {
      const r = running[s];
      if (!r) throw new Error(`${s} is not running`);
      return `127.0.0.1:${r.port}`;
    };

    const startUser = async () => {
      const svc = await startService(userService(readUserConfig({ ...env.user, AUTH_ADDR: addr("auth") })));
      running.user = svc;
      stops.push(() => svc.stop());
      return svc;
    };
    const startNotify = async (o: MeshOptions = opts) => {
      const config = readNotifyConfig({
        ...env.notify,
        AUTH_ADDR: addr("auth"),
        ACK_WAIT_MS: String(o.notifyAckWaitMs ?? 30_000),
      });
      const def = notifyService(config);
      if (o.notifyBeforeAck) def.beforeAck = o.notifyBeforeAck;
      const svc = await startService(def);
      running.notify = svc;
      stops.push(() => svc.stop());
      return svc;
    };

    // auth first: the others fetch its JWKS. Its client to user connects lazily, so user's
    // address is fixed up front by reserving it: auth is started with user's final port.
    const userPort = await freePort();
    env.user.PORT = String(userPort);
    env.auth.USER_ADDR = `127.0.0.1:${userPort}`;
    const auth = await startService(authService(readAuthConfig({ ...env.auth, AUTH_ADDR: "127.0.0.1:1" })));
    running.auth = auth;
    stops.push(() => auth.stop());
    const user = await startUser();
    const notify = await startNotify();
    const gateway = await startGateway(
      readGatewayConfig(upstreamServices, {
        HOST: "127.0.0.1",
        PORT: "0",
        AUTH_ADDR: addr("auth"),
        USER_ADDR: addr("user"),
        NOTIFY_ADDR: addr("notify"),
        CORS_ORIGINS: "http://app.example",
        LOG_LEVEL: level,
        MAX_REQUEST_BYTES: "65536",
      }),
      createLogger("gateway", level),
    );
    stops.push(() => gateway.stop());

    return {
      pg,
      nats,
      smtp,
      auth,
      user,
      notify,
      gateway,
      env,
      addr,
      startUser,
      startNotify,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
