// How the platform serves and makes calls: deadline, cancellation and request id travel to the
// next hop; streams get no default deadline; a graceful stop drains unary calls and ends
// streams with UNAVAILABLE, while kill() cuts everything as a crash would.
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  bindService,
  type CallContext,
  createMeshCredentials,
  createServiceClient,
  fail,
  type RunningService,
  readServiceConfig,
  type ServiceHandlers,
  startService,
} from "@protomesh/platform";
import {
  assertCode,
  failure,
  type Mesh,
  startMesh,
  testDatabases,
  uniqueEmail,
  waitUntil,
  within,
} from "@protomesh/testkit";
import { service as healthService } from "grpc-health-check";

const unimplemented = () => Promise.reject(fail(Code.Unimplemented, "not in this fake"));

/** A service of the mesh replaced by handlers of the test's own, on a real platform server. */
async function startFake(
  name: "user" | "notify",
  env: Record<string, string>,
  binding: Parameters<typeof bindService>,
): Promise<RunningService> {
  const dbs = await testDatabases();
  const svc = await startService({
    config: readServiceConfig(name, 0)({ ...env, DATABASE_URL: await dbs.create(`fake_${name}`) }),
    migrations: await mkdtemp(join(tmpdir(), "no-migrations-")),
    async build() {
      return { services: [bindService(...binding)] };
    },
  }).catch(async (err) => {
    await dbs.release();
    throw err;
  });
  const stop = svc.stop;
  const release = async () => {
    await dbs.release();
  };
  return {
    ...svc,
    stop: () => stop().finally(release),
    kill: () => svc.kill().finally(release),
  };
}

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({ services: ["auth"], gateway: false });
});
after(() => mesh?.stop());

/** A fake user service whose CreateUser records its context and waits for the test. */
async function slowUser(env: Record<string, string>) {
  const seen: CallContext[] = [];
  let release: () => void = () => {};
  const released = new Promise<void>((r) => {
    release = r;
  });
  const handlers: ServiceHandlers<typeof UserService> = {
    async createUser(req, ctx) {
      seen.push(ctx);
      await Promise.race([
        released,
        new Promise((_, reject) => ctx.signal.addEventListener("abort", reject)),
      ]);
      return { user: { id: req.userId, email: req.email, displayName: req.displayName } };
    },
    getUser: unimplemented,
    getMe: unimplemented,
    updateMe: unimplemented,
    searchUsers: unimplemented,
    listUsers: unimplemented,
    setRoles: unimplemented,
    getRoles: unimplemented,
    getContact: unimplemented,
  };
  const svc = await startFake("user", env, [UserService, handlers]);
  return { svc, seen, release: () => release() };
}

test("deadline, cancellation and request id travel from a call to the calls it makes", async (t) => {
  const fake = await slowUser(mesh.env.user);
  t.after(() => fake.svc.stop());
  const auth = createServiceClient(AuthService, mesh.addr("auth"));
  t.after(() => auth.close());
  const ctl = new AbortController();
  const sent = Date.now();
  const call = failure(
    auth.signUp(
      { email: uniqueEmail("hops"), password: "correct horse battery", displayName: "Hop" },
      { timeoutMs: 4_000, signal: ctl.signal, headers: { "x-request-id": "trace-hops-1" } },
    ),
  );
  const ctx = await waitUntil(() => fake.seen[0], 10_000, "auth calling CreateUser");
  assert.equal(ctx.requestId, "trace-hops-1", "the request id reaches the next hop");
  assert.ok(ctx.deadline, "the next hop has a deadline");
  const lag = sent + 4_000 - ctx.deadline.getTime();
  assert.ok(Math.abs(lag) < 1_500, `the caller's deadline, not a new one (off by ${lag} ms)`);

  ctl.abort();
  await within(
    new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true })),
    5_000,
    "cancellation reaching the next hop",
  );
  assert.equal((await call).code, Code.Canceled);
});

test("stop() lets an in-flight call finish; kill() cuts it, as a crash would", async (t) => {
  const mesh2auth = { mesh: createMeshCredentials(mesh.env.user.MESH_SECRET as string, "auth") };
  const request = () => ({ userId: crypto.randomUUID(), email: uniqueEmail("drain"), displayName: "Dee" });

  // A long drain: a kill() that drained like stop() would wait it out.
  const env = { ...mesh.env.user, PORT: "0", SHUTDOWN_TIMEOUT_MS: "30000" };
  const graceful = await slowUser(env);
  t.after(() => graceful.svc.stop());
  const a = createServiceClient(UserService, `127.0.0.1:${graceful.svc.port}`, mesh2auth);
  const inFlight = a.createUser(request());
  await waitUntil(() => graceful.seen[0], 10_000, "the call in the handler");
  const stopping = graceful.svc.stop();
  graceful.release();
  assert.ok((await inFlight).user, "the call in flight completed");
  await within(stopping, 10_000, "stop()");
  a.close();

  const crashed = await slowUser(env);
  t.after(() => crashed.svc.stop());
  const b = createServiceClient(UserService, `127.0.0.1:${crashed.svc.port}`, mesh2auth);
  const cut = failure(b.createUser(request()));
  await waitUntil(() => crashed.seen[0], 10_000, "the call in the handler");
  await within(crashed.svc.kill(), 5_000, "kill()");
  assert.ok([Code.Unavailable, Code.Canceled, Code.Internal].includes((await cut).code));
  // Stopping what was killed (a test's cleanup does) settles and does nothing twice.
  await within(crashed.svc.stop(), 5_000, "stop() after kill()");
  b.close();
});

test("server streams get no default deadline, and a stop ends them even when the handler ignores it", async (t) => {
  let opened = 0;
  const handlers: ServiceHandlers<typeof NotifyService> = {
    async listMyNotifications(_req, ctx) {
      await delay(600, undefined, { signal: ctx.signal });
      return {};
    },
    async *watchMyNotifications(_req, ctx) {
      opened++;
      await delay(600, undefined, { signal: ctx.signal });
      yield { notification: { id: "late", kind: "test" } };
      // Waits forever without looking at ctx.signal: the platform must end it anyway.
      await new Promise(() => {});
    },
    sendEmail: unimplemented,
    sendSms: unimplemented,
  };
  const fake = await startFake("notify", mesh.env.notify, [NotifyService, handlers]);
  t.after(() => fake.stop());
  const client = createServiceClient(NotifyService, `127.0.0.1:${fake.port}`, {
    defaultTimeoutMs: 200,
    mesh: createMeshCredentials(mesh.env.notify.MESH_SECRET as string, "test"),
  });
  t.after(() => client.close());

  // The control: a unary call does get the 200 ms default.
  await assertCode(client.listMyNotifications({}), Code.DeadlineExceeded);
  const stream = client.watchMyNotifications({})[Symbol.asyncIterator]();
  const first = await within(stream.next(), 5_000, "the first message");
  assert.equal(first.value?.notification?.id, "late", "a stream outlives the unary default deadline");
  const started = Date.now();
  const ended = stream.next().then(
    () => assert.fail("the stream should end with an error"),
    (err: { code: Code }) => err,
  );
  await within(fake.stop(), 5_000, "stop with a stream open");
  assert.equal((await ended).code, Code.Unavailable);
  assert.ok(Date.now() - started < 3_000);
  assert.equal(opened, 1);
});

test("an open health Watch (a stream the platform does not own) does not hold up a stop", async (t) => {
  const fake = await slowUser({ ...mesh.env.user, PORT: "0", SHUTDOWN_TIMEOUT_MS: "30000" });
  t.after(() => fake.svc.stop());
  const Health = grpc.makeGenericClientConstructor(healthService, "Health");
  const client = new Health(`127.0.0.1:${fake.svc.port}`, grpc.credentials.createInsecure());
  t.after(() => client.close());
  const watch = healthService.Watch as grpc.MethodDefinition<object, { status: string }>;
  const stream = client.makeServerStreamRequest(
    "/grpc.health.v1.Health/Watch",
    (m: object) => watch.requestSerialize(m),
    (b: Buffer) => watch.responseDeserialize(b),
    { service: "" },
  );
  stream.on("error", () => {});
  const [first] = (await once(stream, "data")) as [{ status: string }];
  assert.equal(first.status, "SERVING");
  const started = Date.now();
  await within(fake.svc.stop(), 5_000, "stop with a health Watch open");
  assert.ok(Date.now() - started < 5_000);
});
