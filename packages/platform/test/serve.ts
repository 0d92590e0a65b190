// Serves test handlers through the platform's own server wrapping (access, validation, error
// mapping) on a bare grpc-js server: no database or NATS for tests that need neither.
import type { DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  bindService,
  Code,
  createLogger,
  fail,
  type ServiceHandlers,
  type UserIdentity,
} from "@protomesh/platform";
import { createMeshVerifier } from "../src/caller.ts";
import { createGatewayVerifier } from "../src/gateway-credentials.ts";
import { addServices, type CallerAuth, createCallTracker, type ServiceBinding } from "../src/server.ts";

export const TEST_MESH_SECRET = "test-mesh-secret-".padEnd(40, "x");
export const TEST_GATEWAY_SECRET = "test-gateway-secret-".padEnd(40, "x");

/**
 * A user as a verified access token would describe them; the token text is the user id, and
 * a token starting with "admin" has the admin role.
 */
export const testUser = (userId: string, more: Partial<UserIdentity> = {}): UserIdentity => ({
  userId,
  sessionId: `session-${userId}`,
  email: `${userId}@example.com`,
  roles: userId.startsWith("admin") ? ["user", "admin"] : ["user"],
  tokenId: `token-${userId}`,
  emailVerified: true,
  issuedAt: new Date(),
  expiresAt: new Date(Date.now() + 60_000),
  ...more,
});

/** Binds the handlers given; every other method answers UNIMPLEMENTED. */
export function fake<S extends DescService>(
  service: S,
  handlers: Partial<ServiceHandlers<S>>,
): ServiceBinding {
  const all: Record<string, unknown> = {};
  for (const m of service.methods) {
    all[m.localName] =
      (handlers as Record<string, unknown>)[m.localName] ??
      (() => Promise.reject(fail(Code.Unimplemented, "not in this fake")));
  }
  return bindService(service, all as ServiceHandlers<S>);
}

/** Starts a server for the bindings on a free port; stop() ends it at once. */
export async function serve(
  bindings: ServiceBinding[],
  accessTokens: CallerAuth["accessTokens"] = { verify: async (token) => testUser(token) },
) {
  const server = new grpc.Server();
  const stop = { streams: new AbortController(), calls: new AbortController() };
  addServices(
    server,
    bindings,
    {
      accessTokens,
      meshToken: createMeshVerifier(TEST_MESH_SECRET),
      gatewayToken: createGatewayVerifier(TEST_GATEWAY_SECRET),
    },
    createLogger("test", "silent"),
    { streams: stop.streams.signal, calls: stop.calls.signal, tracker: createCallTracker() },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    address: `127.0.0.1:${port}`,
    stop() {
      stop.streams.abort();
      stop.calls.abort();
      server.forceShutdown();
    },
  };
}
