import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { createLogger, createMeshCredentials, createServiceClient } from "@protomesh/platform";
import { service as healthService } from "grpc-health-check";
import pg from "pg";
import { createPgAuthStore } from "../services/auth/src/pg-auth-store.ts";
import { createSignupSweeper } from "../services/auth/src/signup-sweeper.ts";
import { gatewayClient, uniqueEmail } from "./support/clients.ts";
import { type Mesh, startMesh } from "./support/mesh.ts";
import { reflectionClient } from "./support/reflection.ts";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

const PASSWORD = "correct horse battery";

async function failure(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${err}`);
    return err;
  }
  assert.fail("expected the call to fail");
}

async function authRows(email: string) {
  const client = new pg.Client(mesh.env.auth.DATABASE_URL);
  await client.connect();
  try {
    return (await client.query("SELECT status FROM credentials WHERE email = $1", [email])).rows;
  } finally {
    await client.end();
  }
}

describe("validation", () => {
  test("invalid sign-up input gets INVALID_ARGUMENT naming the field", async () => {
    const auth = gatewayClient(AuthService, mesh.gateway.url, "connect-json");
    const cases: [object, string][] = [
      [{ email: "not-an-email", password: PASSWORD, displayName: "A" }, "email"],
      [{ email: uniqueEmail(), password: "short", displayName: "A" }, "password"],
      [{ email: uniqueEmail(), password: PASSWORD, displayName: "" }, "display_name"],
    ];
    for (const [req, field] of cases) {
      const err = await failure(auth.signUp(req));
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.rawMessage, new RegExp(`^${field}: `));
    }
  });

  test("a password over bcrypt's 72 bytes is refused, not truncated", async () => {
    const auth = gatewayClient(AuthService, mesh.gateway.url, "connect-json");
    // 37 characters, 74 bytes: within any character limit, over bcrypt's.
    const err = await failure(
      auth.signUp({ email: uniqueEmail(), password: "é".repeat(37), displayName: "A" }),
    );
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.rawMessage, /^password: .*72 bytes/);
  });

  test("UpdateMe refuses paths outside the profile and an empty display name", async () => {
    const email = uniqueEmail();
    const auth = gatewayClient(AuthService, mesh.gateway.url, "connect-json");
    await auth.signUp({ email, password: PASSWORD, displayName: "Cy" });
    const { tokens } = await auth.signIn({ email, password: PASSWORD });
    const users = gatewayClient(UserService, mesh.gateway.url, "connect-json", () => tokens?.accessToken);

    const roles = await failure(users.updateMe({ profile: {}, updateMask: { paths: ["roles"] } }));
    assert.equal(roles.code, Code.InvalidArgument);
    assert.match(roles.rawMessage, /^update_mask: /);

    const empty = await failure(
      users.updateMe({ profile: { displayName: "" }, updateMask: { paths: ["display_name"] } }),
    );
    assert.equal(empty.code, Code.InvalidArgument);
    assert.match(empty.rawMessage, /display_name cannot be empty/);

    const phone = await failure(
      users.updateMe({ profile: { phone: "12345" }, updateMask: { paths: ["phone"] } }),
    );
    assert.match(phone.rawMessage, /^profile\.phone: /);
    assert.equal((await users.getMe({})).user?.displayName, "Cy", "nothing changed");
  });
});

describe("sign-up consistency across auth and user", () => {
  test("a duplicate email, in any case, gets ALREADY_EXISTS", async () => {
    const auth = gatewayClient(AuthService, mesh.gateway.url, "connect-json");
    const email = uniqueEmail();
    await auth.signUp({ email, password: PASSWORD, displayName: "Di" });
    const err = await failure(
      auth.signUp({ email: email.toUpperCase(), password: PASSWORD, displayName: "Di" }),
    );
    assert.equal(err.code, Code.AlreadyExists);
  });

  test("when user refuses the profile, auth keeps nothing", async () => {
    const email = uniqueEmail("orphan");
    // A profile with this email exists in user (say, from an older system) but not in auth.
    const mesh2user = createServiceClient(UserService, mesh.addr("user"), {
      mesh: createMeshCredentials(mesh.env.user.MESH_SECRET as string, "test"),
    });
    await mesh2user.createUser({ userId: crypto.randomUUID(), email, displayName: "Old" });
    mesh2user.close();

    const auth = gatewayClient(AuthService, mesh.gateway.url, "connect-json");
    const err = await failure(auth.signUp({ email, password: PASSWORD, displayName: "New" }));
    assert.equal(err.code, Code.AlreadyExists);
    assert.deepEqual(await authRows(email), []);
  });

  test("when user is down, sign-up fails UNAVAILABLE, nothing can sign in, and a retry completes it", async () => {
    const auth = gatewayClient(AuthService, mesh.gateway.url, "connect-json");
    const email = uniqueEmail("retry");
    await mesh.user.stop();
    try {
      // auth waits for user within the deadline, then gives up without half an account.
      const err = await failure(
        auth.signUp({ email, password: PASSWORD, displayName: "Ed" }, { timeoutMs: 1_500 }),
      );
      assert.ok([Code.Unavailable, Code.DeadlineExceeded].includes(err.code), Code[err.code]);
      const signIn = await failure(auth.signIn({ email, password: PASSWORD }));
      assert.equal(signIn.code, Code.Unauthenticated);
      assert.deepEqual(await authRows(email), [{ status: "pending" }]);
    } finally {
      mesh.user = await mesh.startUser();
    }
    const { userId } = await auth.signUp({ email, password: PASSWORD, displayName: "Ed" });
    assert.ok(userId);
    assert.deepEqual(await authRows(email), [{ status: "active" }]);
    const { tokens } = await auth.signIn({ email, password: PASSWORD });
    const users = gatewayClient(UserService, mesh.gateway.url, "connect-json", () => tokens?.accessToken);
    assert.equal((await users.getMe({})).user?.id, userId);
    await mesh.smtp.waitFor((m) => m.to.includes(email));
  });
});

describe("sign-ups left pending by a crash", () => {
  test("the sweeper activates one whose profile exists and deletes one whose profile does not", async () => {
    const pool = new pg.Pool({ connectionString: mesh.env.auth.DATABASE_URL });
    const users = createServiceClient(UserService, mesh.addr("user"), {
      mesh: createMeshCredentials(mesh.env.auth.MESH_SECRET as string, "auth"),
    });
    try {
      const store = createPgAuthStore(pool, 3600);
      // Crash after user created the profile, before auth activated the credential.
      const profiled = uniqueEmail("swept");
      const profiledId = await store.reservePending(profiled, "not-a-real-hash");
      assert.ok(profiledId);
      await users.createUser({ userId: profiledId, email: profiled, displayName: "Fay" });
      // Crash before user was ever called.
      const orphan = uniqueEmail("orphan-pending");
      assert.ok(await store.reservePending(orphan, "not-a-real-hash"));

      const sweeper = createSignupSweeper({ store, users, timeoutS: 0, log: createLogger("test", "silent") });
      const result = await sweeper.sweep();
      assert.ok(result.activated >= 1 && result.deleted >= 1, JSON.stringify(result));
      assert.deepEqual(await authRows(profiled), [{ status: "active" }]);
      assert.deepEqual(await authRows(orphan), []);
      await mesh.smtp.waitFor((m) => m.to.includes(profiled));
    } finally {
      users.close();
      await pool.end();
    }
  });
});

describe("operations", () => {
  for (const name of ["auth", "user", "notify"] as const) {
    test(`${name} reports SERVING on grpc.health.v1`, async () => {
      const Health = grpc.makeGenericClientConstructor(healthService, "Health");
      const client = new Health(mesh.addr(name), grpc.credentials.createInsecure());
      const status = await new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest(
          "/grpc.health.v1.Health/Check",
          (m: object) => (healthService.Check as grpc.MethodDefinition<object, object>).requestSerialize(m),
          (b: Buffer) =>
            (healthService.Check as grpc.MethodDefinition<object, { status: string }>).responseDeserialize(b),
          { service: "" },
          (err, res) => (err ? reject(err) : resolve((res as { status: string }).status)),
        ),
      );
      client.close();
      assert.equal(status, "SERVING");
    });

    for (const version of ["v1", "v1alpha"] as const) {
      test(`${name} lists its services over reflection ${version}`, async () => {
        const reflection = reflectionClient(mesh.addr(name), version);
        try {
          const services = await reflection.listServices();
          assert.ok(
            services.includes(`protomesh.${name}.v1.${name[0]?.toUpperCase()}${name.slice(1)}Service`),
            services.join(),
          );
        } finally {
          reflection.close();
        }
      });
    }
  }

  test("a client with nothing but reflection can describe and call a method, as grpcurl does", async () => {
    const reflection = reflectionClient(mesh.addr("auth"));
    const registry = await reflection.describe("protomesh.auth.v1.AuthService");
    reflection.close();
    const service = registry.getService("protomesh.auth.v1.AuthService");
    const method = service?.methods.find((m) => m.name === "SignIn");
    assert.ok(method, "SignIn is described");
    // The contract's validation rules travel with the descriptors.
    assert.ok(registry.getFile("buf/validate/validate.proto"));

    const client = new grpc.Client(mesh.addr("auth"), grpc.credentials.createInsecure());
    const request = fromJson(
      method.input,
      { email: "nobody@example.com", password: "whatever1" },
      { registry },
    );
    const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
      client.makeUnaryRequest(
        `/${service?.typeName}/${method.name}`,
        (m: typeof request) => Buffer.from(toBinary(method.input, m)),
        (b: Buffer) => fromBinary(method.output, b),
        request,
        (e, res) =>
          e
            ? resolve(e)
            : reject(new Error(`unexpected success: ${JSON.stringify(toJson(method.output, res as never))}`)),
      ),
    );
    client.close();
    assert.equal(err.code, grpc.status.UNAUTHENTICATED);
    assert.equal(err.details, "wrong email or password");
  });
});
