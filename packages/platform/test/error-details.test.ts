// Error details (google.rpc.RetryInfo and the like) travel as the standard
// grpc-status-details-bin trailer: from a handler to a platform client, across a hop between
// services, and on through a Connect router (as the gateway forwards) to a browser's client.
// INTERNAL errors carry nothing, on any hop.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { RetryInfoSchema } from "@protomesh/contracts/google/rpc/error_details_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  Code,
  ConnectError,
  createMeshCredentials,
  createServiceClient,
  retryDelayMs,
  retryLater,
} from "@protomesh/platform";
import { assertCode, failure } from "@protomesh/testkit";
import { fake, serve, TEST_MESH_SECRET } from "./serve.ts";

const password = "correct horse battery";
const mesh = createMeshCredentials(TEST_MESH_SECRET, "auth");
let server: Awaited<ReturnType<typeof serve>>;
let downstream: ReturnType<typeof createServiceClient<typeof UserService>>;
before(async () => {
  server = await serve([
    fake(AuthService, {
      // One hop further: the user service's answer decides this one.
      async signUp(req) {
        await downstream.createUser({ userId: crypto.randomUUID(), email: req.email, displayName: "x" });
        return {};
      },
      async signIn() {
        throw retryLater("slow down", 1500);
      },
      async signOut() {
        // An internal failure must not leak what it carries.
        throw new ConnectError("db password is hunter2", Code.Internal, undefined, [
          { desc: RetryInfoSchema, value: {} },
        ]);
      },
    }),
    fake(UserService, {
      async createUser() {
        throw retryLater("too many sign-ups from here", 2500);
      },
    }),
    fake(NotifyService, {
      // biome-ignore lint/correctness/useYield: fails before its first message
      async *watchMyNotifications() {
        throw retryLater("too many streams", 700);
      },
    }),
  ]);
  downstream = createServiceClient(UserService, server.address, { mesh });
});
after(() => {
  downstream?.close();
  server?.stop();
});

test("a RetryInfo thrown in a handler reaches a platform client over gRPC", async (t) => {
  const auth = createServiceClient(AuthService, server.address);
  t.after(() => auth.close());
  const err = await assertCode(auth.signIn({ email: "a@example.com", password }), Code.ResourceExhausted);
  assert.equal(err.rawMessage, "slow down");
  assert.equal(retryDelayMs(err), 1500);

  const notify = createServiceClient(NotifyService, server.address);
  t.after(() => notify.close());
  const streamErr = await assertCode(
    notify.watchMyNotifications({}, { accessToken: "user-1" }),
    Code.ResourceExhausted,
  );
  assert.equal(retryDelayMs(streamErr), 700, "a stream's error carries its details too");
});

test("details survive a hop between services", async (t) => {
  const auth = createServiceClient(AuthService, server.address);
  t.after(() => auth.close());
  const err = await assertCode(
    auth.signUp({ email: "a@example.com", password, displayName: "A" }),
    Code.ResourceExhausted,
  );
  assert.equal(err.rawMessage, "too many sign-ups from here");
  assert.equal(retryDelayMs(err), 2500);
});

test("a Connect router forwarding through the platform client (as the gateway does) passes details on", async (t) => {
  const upstream = createServiceClient(AuthService, server.address);
  t.after(() => upstream.close());
  const http = createServer(
    connectNodeAdapter({
      routes: (router) =>
        router.service(AuthService, {
          signIn: (req) => upstream.signIn(req),
          signOut: (req) => upstream.signOut(req),
        }),
    }),
  );
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  t.after(() => http.close());
  const browser = createClient(
    AuthService,
    createConnectTransport({
      baseUrl: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
      httpVersion: "1.1",
    }),
  );
  const err = await failure(browser.signIn({ email: "a@example.com", password }));
  assert.equal(err.code, Code.ResourceExhausted);
  assert.equal(retryDelayMs(err), 1500);

  const internal = await failure(browser.signOut({ refreshToken: "x" }));
  assert.equal(internal.code, Code.Internal);
  assert.equal(internal.rawMessage, "internal error");
  assert.deepEqual(internal.details, [], "an internal error carries no details");
});
