// Starts a mesh in this process on free ports: the services a test names, each with its own
// database, on a NATS JetStream and an SMTP server of the mesh's own (cheap to start, and
// isolated: streams, durable consumers and mail belong to one mesh), optionally the gateway.
// stop() tears all of it down, also after a failure.
import { freePort, type Nats, type Smtp, startNats, startSmtp } from "@protomesh/devkit";
import { type RunningGateway, readGatewayConfig, startGateway } from "@protomesh/gateway";
import { addressVariable, meshServices, randomSecrets, type ServiceName } from "@protomesh/mesh";
import { type RunningService, startService } from "@protomesh/platform";
import { testDatabases } from "./infra.ts";
import { testLogLevel as level, testLogger } from "./logs.ts";

export type { ServiceName };

export interface MeshOptions {
  /** The services to start, in this order (default: all of them). */
  services?: ServiceName[];
  /** Start the gateway in front of them (default true). */
  gateway?: boolean;
  /** Settings of a service's own, on top of the mesh's (e.g. a short ACK_WAIT_MS). */
  env?: Partial<Record<ServiceName, Record<string, string>>>;
  /**
   * Settings of the gateway. Rate limits are off unless a test sets them (RATE_LIMIT_*), so
   * tests that sign in many times from one address are not refused.
   */
  gatewayEnv?: Record<string, string>;
  /** Test hook: runs inside a service after a consumer's transaction commits, before its ack. */
  beforeAck?: Partial<Record<ServiceName, (eventId: string) => Promise<void>>>;
}

export interface Mesh {
  nats: Nats;
  smtp: Smtp;
  /** The running instance of each started service (replaced by start() without a PORT of its own). */
  services: Partial<Record<ServiceName, RunningService>>;
  /** The environment of each service, to start another instance or read its DATABASE_URL. */
  env: Record<ServiceName, Record<string, string>>;
  gateway: RunningGateway | undefined;
  /** The gateway's URL; fails when the mesh has no gateway. */
  url: string;
  /** The gRPC target of a service, e.g. "127.0.0.1:40123". */
  addr(name: ServiceName): string;
  /** Starts another gateway replica on a free port (same NATS, secrets and upstreams). */
  startGateway(env?: Record<string, string>): Promise<RunningGateway>;
  /** Starts (another instance of) a service, with extra settings and hooks. */
  start(
    name: ServiceName,
    opts?: {
      env?: Record<string, string>;
      beforeAck?: (eventId: string) => Promise<void>;
      /** Return once it serves calls, without waiting for its events part (NATS may be down). */
      eventsInBackground?: boolean;
    },
  ): Promise<RunningService>;
  stop(): Promise<void>;
}

/** Starts a mesh; on any failure stops what already started. */
export async function startMesh(opts: MeshOptions = {}): Promise<Mesh> {
  const stops: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    for (const stop of stops.splice(0).reverse()) await stop().catch(() => {});
  };
  try {
    const databases = await testDatabases();
    stops.push(() => databases.release());
    const nats = await startNats();
    stops.push(() => nats.stop());
    const smtp = await startSmtp();
    stops.push(() => smtp.stop());
    const ports = Object.fromEntries(
      await Promise.all(meshServices.map(async (s) => [s.name, await freePort()] as const)),
    ) as Record<ServiceName, number>;
    const secret = randomSecrets();
    const addresses = Object.fromEntries(
      meshServices.map((s) => [addressVariable(s.name), `127.0.0.1:${ports[s.name]}`]),
    );
    // What the gateway and the services share; the gateway never gets MESH_SECRET.
    const shared = {
      HOST: "127.0.0.1",
      NATS_URL: nats.url,
      GATEWAY_SECRET: secret("GATEWAY_SECRET"),
      LOG_LEVEL: level,
      SHUTDOWN_TIMEOUT_MS: "2000",
      ...addresses,
    };
    const common = { ...shared, METRICS_PORT: "0", MESH_SECRET: secret("MESH_SECRET") };
    const wanted = opts.services ?? meshServices.map((s) => s.name);
    const env = {} as Record<ServiceName, Record<string, string>>;
    for (const s of meshServices) {
      env[s.name] = {
        ...common,
        PORT: String(ports[s.name]),
        ...s.devEnv?.({ smtpUrl: smtp.url, secret }),
        ...opts.env?.[s.name],
      };
    }

    const services: Mesh["services"] = {};
    const start: Mesh["start"] = async (name, o = {}) => {
      const entry = meshServices.find((s) => s.name === name);
      if (!entry) throw new Error(`no service ${name}`);
      // A database of its own, made when the service first starts.
      env[name].DATABASE_URL ??= await databases.create(name);
      const module = await entry.load();
      const spec = module.create(module.readConfig({ ...env[name], ...o.env }));
      const hook = o.beforeAck ?? opts.beforeAck?.[name];
      if (hook) spec.beforeAck = hook;
      spec.log = testLogger(name);
      const svc = await startService(spec);
      stops.push(() => svc.stop());
      // Tests expect streams declared and listeners starting once start() returns.
      if (!o.eventsInBackground) await svc.eventsReady;
      // An extra replica (on a port of its own) does not replace the mesh's instance.
      if (o.env?.PORT === undefined) services[name] = svc;
      return svc;
    };
    for (const name of wanted) await start(name);

    const startOneGateway = async (extra: Record<string, string> = {}) => {
      const g = await startGateway(
        readGatewayConfig(
          meshServices.filter((s) => wanted.includes(s.name)),
          {
            ...shared,
            PORT: "0",
            CORS_ORIGINS: "http://app.example",
            MAX_REQUEST_BYTES: "65536",
            RATE_LIMIT_IP_PER_MINUTE: "0",
            RATE_LIMIT_USER_PER_MINUTE: "0",
            RATE_LIMIT_STRICT_IP_PER_MINUTE: "0",
            RATE_LIMIT_STRICT_USER_PER_MINUTE: "0",
            ...opts.gatewayEnv,
            ...extra,
          },
        ),
        testLogger("gateway"),
      );
      stops.push(() => g.stop());
      return g;
    };
    const gateway = (opts.gateway ?? true) ? await startOneGateway() : undefined;

    return {
      nats,
      smtp,
      services,
      env,
      gateway,
      get url() {
        if (!gateway) throw new Error("this mesh has no gateway");
        return gateway.url;
      },
      addr: (name) => `127.0.0.1:${services[name]?.port ?? ports[name]}`,
      start,
      startGateway: startOneGateway,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
