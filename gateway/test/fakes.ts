// A mesh of stand-ins for the gateway's own tests: real platform servers (so the address a
// service believes goes through the real checks), real NATS JetStream and real gateways, with
// auth and user replaced by handlers that echo what the platform told them. Access tokens are
// signed here with a key the fake auth publishes as its JWKS.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { freePort, type Nats, startNats } from "@protomesh/devkit";
import { meshServices, randomSecrets } from "@protomesh/mesh";
import {
  bindService,
  type CallContext,
  Code,
  createAccessTokenVerifier,
  createLogger,
  defineStream,
  fail,
  type RunningService,
  readServiceConfig,
  type ServiceHandlers,
  startService,
} from "@protomesh/platform";
import { accessTokenSigner, testDatabases } from "@protomesh/testkit";
import { type RunningGateway, readGatewayConfig, startGateway } from "../src/index.ts";

const log = createLogger("fake", process.env.TEST_LOG_LEVEL ?? "silent");

type AnyHandler = (req: unknown, ctx: CallContext) => unknown;

/**
 * Handlers for every method, each failing with UNIMPLEMENTED unless given. Calls a gateway
 * forwarded (they carry the client's user agent; the gateway's own JWKS fetches do not) are
 * counted in `calls` by method name.
 */
function handlersFor<S extends DescService>(
  service: S,
  given: Partial<ServiceHandlers<S>>,
  calls: Map<string, number>,
): ServiceHandlers<S> {
  const all: Record<string, AnyHandler> = {};
  for (const m of service.methods) {
    const handler = ((given as Record<string, AnyHandler>)[m.localName] ??
      (async () => {
        throw fail(Code.Unimplemented, `${m.name} is not in this fake`);
      })) as AnyHandler;
    all[m.localName] = (req, ctx) => {
      if (ctx.userAgent) calls.set(m.name, (calls.get(m.name) ?? 0) + 1);
      return handler(req, ctx);
    };
  }
  return all as unknown as ServiceHandlers<S>;
}

export interface FakeMesh {
  nats: Nats;
  /** Settings every service of this mesh runs with (its secrets included). */
  env: Record<string, string>;
  authAddr: string;
  userAddr: string;
  /** The first gateway. */
  gateway: RunningGateway;
  /** The first gateway's URL. */
  url: string;
  /** Client addresses auth's SignIn saw, in order. */
  signIns: string[];
  /** Calls forwarded by a gateway, by method name (e.g. "GetJwks"). */
  calls: Map<string, number>;
  /** Keys GetJwks publishes besides the signing key (a rotation under way); change it at will. */
  extraKeys: Array<{ kty: string; crv: string; x: string; kid: string; alg: string; use: string }>;
  /** A valid access token for this user id, expiring in `expiresInS` (default 15 minutes). */
  tokenFor(userId: string, expiresInS?: number): Promise<string>;
  /** Another gateway replica on the same NATS and upstreams. */
  startGateway(env?: Record<string, string>): Promise<RunningGateway>;
  stop(): Promise<void>;
}

/**
 * Starts NATS, a fake auth (SignIn answers with the client address it saw as the access token;
 * GetJwks publishes the test's key and `extraKeys`; ValidateToken accepts only "valid") and a fake user (GetMe answers with the caller's id and, as
 * its display name, the client address it saw), then a gateway in front of them.
 */
export async function startFakeMesh(gatewayEnv: Record<string, string> = {}): Promise<FakeMesh> {
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const s of stops.splice(0).reverse()) await s().catch(() => {});
  };
  try {
    const databases = await testDatabases();
    stops.push(() => databases.release());
    const nats = await startNats();
    stops.push(() => nats.stop());
    const { jwk, sign } = await accessTokenSigner();
    const keys = { keys: [jwk] };
    const [authPort, userPort] = [await freePort(), await freePort()];
    const secret = randomSecrets();
    const env: Record<string, string> = {
      HOST: "127.0.0.1",
      METRICS_PORT: "0",
      NATS_URL: nats.url,
      MESH_SECRET: secret("MESH_SECRET"),
      GATEWAY_SECRET: secret("GATEWAY_SECRET"),
      LOG_LEVEL: "silent",
      SHUTDOWN_TIMEOUT_MS: "2000",
      AUTH_ADDR: `127.0.0.1:${authPort}`,
      USER_ADDR: `127.0.0.1:${userPort}`,
    };
    const signIns: string[] = [];
    const calls = new Map<string, number>();
    const extraKeys: FakeMesh["extraKeys"] = [];
    const migrations = await mkdtemp(join(tmpdir(), "no-migrations-"));
    const start = async (
      name: "auth" | "user",
      port: number,
      parts: () => Parameters<typeof bindService>,
    ) => {
      const svc: RunningService = await startService({
        config: readServiceConfig(
          name,
          port,
        )({ ...env, PORT: String(port), DATABASE_URL: await databases.create(`fake_${name}`) }),
        migrations,
        // The gateway follows session revocations on auth's stream: it must exist.
        streams:
          name === "auth" ? [defineStream({ name: "AUTH", subjects: ["auth.>"], maxAgeMs: 3_600_000 })] : [],
        log,
        async build() {
          return {
            services: [bindService(...parts())],
            accessTokens: createAccessTokenVerifier({
              fetchJwks: async () => keys,
              issuer: "protomesh",
              audience: "protomesh",
            }),
          };
        },
      });
      stops.push(() => svc.stop());
      await svc.eventsReady;
    };
    await start("auth", authPort, () => [
      AuthService,
      handlersFor(
        AuthService,
        {
          async getJwks() {
            return { keys: [...keys.keys, ...extraKeys] };
          },
          async validateToken(req) {
            if (req.accessToken !== "valid") throw fail(Code.Unauthenticated, "the token is not valid");
            return { claims: { userId: "someone" } };
          },
          async signIn(_req, ctx) {
            signIns.push(ctx.clientIp);
            return { result: { case: "tokens", value: { accessToken: ctx.clientIp } } };
          },
        },
        calls,
      ),
    ]);
    await start("user", userPort, () => [
      UserService,
      handlersFor(
        UserService,
        {
          async getMe(_req, ctx) {
            return { user: { id: ctx.user?.userId ?? "", displayName: ctx.clientIp } };
          },
        },
        calls,
      ),
    ]);

    const routed = meshServices.filter((s) => s.name === "auth" || s.name === "user");
    const startOne = async (extra: Record<string, string> = {}) => {
      const { MESH_SECRET: _never, ...gatewayShared } = env;
      const g = await startGateway(
        readGatewayConfig(routed, { ...gatewayShared, PORT: "0", ...gatewayEnv, ...extra }),
        createLogger("gateway", process.env.TEST_LOG_LEVEL ?? "silent"),
      );
      stops.push(() => g.stop());
      return g;
    };
    const first = await startOne();
    return {
      nats,
      env,
      authAddr: env.AUTH_ADDR ?? "",
      userAddr: env.USER_ADDR ?? "",
      gateway: first,
      url: first.url,
      signIns,
      calls,
      extraKeys,
      tokenFor: (userId, expiresInS = 900) =>
        sign({ sub: userId, roles: [], exp: Math.floor(Date.now() / 1000) + expiresInS }),
      startGateway: startOne,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
