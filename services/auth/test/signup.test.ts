// SignUp over the gateway: validation, no enumeration, exactly one winner of a race, and
// consistency between auth and user when user refuses, is down, or a crash leaves a sign-up
// half done.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { SignUpAttemptedSchema, UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { OtpService } from "@protomesh/contracts/otp/v1/otp_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { createLogger, createMeshCredentials, createServiceClient } from "@protomesh/platform";
import { failure, gatewayClient, type Mesh, startMesh, uniqueEmail, waitUntil } from "@protomesh/testkit";
import pg from "pg";
import { open, seal } from "../src/key-ring.ts";
import { createPgAuthStore } from "../src/pg-auth-store.ts";
import { createSignupSweeper } from "../src/signup-sweeper.ts";
import { createEmailVerification } from "../src/verification.ts";
import { authEvents } from "./auth-events.ts";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({
    services: ["auth", "user", "otp", "notify"],
    env: { auth: { BCRYPT_THREADS: "4" } },
  });
});
after(() => mesh?.stop());

const PASSWORD = "correct horse battery";
const OTHER_PASSWORD = "a different horse battery";
const auth = () => gatewayClient(AuthService, mesh.url, "connect-json");

/** True when the email and password sign in. */
async function signsIn(email: string, password: string): Promise<boolean> {
  try {
    const { result } = await auth().signIn({ email, password });
    return result.case === "tokens";
  } catch {
    return false;
  }
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
    const cases: [object, string][] = [
      [{ email: "not-an-email", password: PASSWORD, displayName: "A" }, "email"],
      [{ email: uniqueEmail(), password: "short", displayName: "A" }, "password"],
      [{ email: uniqueEmail(), password: PASSWORD, displayName: "" }, "display_name"],
    ];
    for (const [req, field] of cases) {
      const err = await failure(auth().signUp(req));
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.rawMessage, new RegExp(`^${field}: `));
    }
  });

  test("a bad email gets exactly the error the README shows, as JSON with HTTP 400", async () => {
    const res = await fetch(`${mesh.url}/protomesh.auth.v1.AuthService/SignUp`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "not-an-email", password: PASSWORD, displayName: "Ada" }),
    });
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), {
      code: "invalid_argument",
      message: "email: must be a valid email address",
    });
  });

  test("a password over bcrypt's 72 bytes is refused, not truncated", async () => {
    // 37 characters, 74 bytes: within any character limit, over bcrypt's.
    const err = await failure(
      auth().signUp({ email: uniqueEmail(), password: "é".repeat(37), displayName: "A" }),
    );
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.rawMessage, /^password: .*72 bytes/);
  });
});

describe("sign-up consistency across auth and user", () => {
  test("an existing email, in any case, gets the answer a new one gets, changes nothing, and tells the owner once an hour", async () => {
    const email = uniqueEmail("dup");
    const fresh = await auth().signUp({ email, password: PASSWORD, displayName: "Di" });
    const again = await auth().signUp({
      email: email.toUpperCase(),
      password: OTHER_PASSWORD,
      displayName: "Eve",
    });
    const third = await auth().signUp({ email, password: OTHER_PASSWORD, displayName: "Eve" });
    assert.deepEqual(again, fresh);
    assert.deepEqual(third, fresh);
    assert.ok(await signsIn(email, PASSWORD), "the owner's password still works");
    assert.equal(await signsIn(email, OTHER_PASSWORD), false);
    assert.deepEqual(await authRows(email), [{ status: "active" }]);
    const attempts = await waitUntil(async () => {
      const events = (await authEvents(mesh.nats.url, SignUpAttemptedSchema)).filter(
        (e) => e.email === email,
      );
      return events.length > 0 ? events : undefined;
    });
    assert.equal(attempts.length, 1, "two attempts within the hour tell the owner once");
  });

  test("over HTTP, SignUp answers a new and an existing email with the same status and body", async () => {
    const email = uniqueEmail("same");
    const post = async (address: string) => {
      const res = await fetch(`${mesh.url}/protomesh.auth.v1.AuthService/SignUp`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: address, password: PASSWORD, displayName: "Sam" }),
      });
      return { status: res.status, body: await res.text() };
    };
    const created = await post(email);
    const existing = await post(email);
    assert.deepEqual(existing, created);
    assert.deepEqual(created, { status: 200, body: "{}" });
  });

  test("when user refuses the profile, auth keeps nothing", async () => {
    const email = uniqueEmail("orphan");
    // A profile with this email exists in user (say, from an older system) but not in auth.
    const mesh2user = createServiceClient(UserService, mesh.addr("user"), {
      mesh: createMeshCredentials(mesh.env.user.MESH_SECRET as string, "test"),
    });
    await mesh2user.createUser({ userId: crypto.randomUUID(), email, displayName: "Old" });
    mesh2user.close();

    // The answer every sign-up gets: nothing tells the caller that the address is known.
    await auth().signUp({ email, password: PASSWORD, displayName: "New" });
    assert.deepEqual(await authRows(email), []);
  });

  test("when user is down, sign-up fails UNAVAILABLE, nothing can sign in, and a retry completes it", async () => {
    const email = uniqueEmail("retry");
    await mesh.services.user?.stop();
    try {
      // auth waits for user within the deadline, then gives up without half an account.
      const err = await failure(
        auth().signUp({ email, password: PASSWORD, displayName: "Ed" }, { timeoutMs: 1_500 }),
      );
      assert.ok([Code.Unavailable, Code.DeadlineExceeded].includes(err.code), Code[err.code]);
      const signIn = await failure(auth().signIn({ email, password: PASSWORD }));
      assert.equal(signIn.code, Code.Unauthenticated);
      assert.deepEqual(await authRows(email), [{ status: "pending" }]);
    } finally {
      await mesh.start("user");
    }
    // The retry with the same password finishes the sign-up that was left pending.
    await auth().signUp({ email, password: PASSWORD, displayName: "Ed" });
    assert.deepEqual(await authRows(email), [{ status: "active" }]);
    const { result } = await auth().signIn({ email, password: PASSWORD });
    assert.equal(result.case, "tokens");
    const users = gatewayClient(UserService, mesh.url, "connect-json", () => result.value.accessToken);
    assert.equal((await users.getMe({})).user?.email, email);
    await mesh.smtp.waitFor((m) => m.to.includes(email));
  });

  test("a wrong password and an unknown email get the same answer", async () => {
    const email = uniqueEmail();
    await auth().signUp({ email, password: PASSWORD, displayName: "Bea" });
    const wrong = await failure(auth().signIn({ email, password: "wrong horse battery" }));
    const unknown = await failure(auth().signIn({ email: uniqueEmail("nobody"), password: PASSWORD }));
    for (const err of [wrong, unknown]) {
      assert.equal(err.code, Code.Unauthenticated);
      assert.equal(err.rawMessage, "wrong email or password");
    }
  });
});

describe("concurrent sign-ups for one email", () => {
  test("two replicas with four bcrypt threads each: exactly one account, and its password works", async () => {
    const second = await mesh.start("auth", { env: { PORT: "0", BCRYPT_THREADS: "4" } });
    const replicas = [mesh.addr("auth"), `127.0.0.1:${second.port}`].map((addr) =>
      createServiceClient(AuthService, addr),
    );
    try {
      for (let round = 0; round < 5; round++) {
        const email = uniqueEmail("race");
        const passwords = [0, 1, 2, 3].map((i) => `${PASSWORD} ${round}-${i}`);
        const answers = await Promise.all(
          passwords.map((password, i) =>
            (replicas[i % 2] as (typeof replicas)[number]).signUp({ email, password, displayName: `R${i}` }),
          ),
        );
        for (const a of answers)
          assert.deepEqual({ ...a }, { ...answers[0] }, "every racer gets the same answer");
        assert.deepEqual(await authRows(email), [{ status: "active" }]);
        const working = [];
        for (const p of passwords) if (await signsIn(email, p)) working.push(p);
        assert.equal(working.length, 1, `exactly one password signs in, got ${working.length}`);
        // The password that works opens the profile made by the same sign-up: no racer's
        // password replaced the winner's afterwards.
        const winner = passwords.indexOf(working[0] as string);
        const { result } = await auth().signIn({ email, password: working[0] as string });
        assert.equal(result.case, "tokens");
        const me = gatewayClient(UserService, mesh.url, "connect-json", () => result.value.accessToken);
        assert.equal(
          (await me.getMe({})).user?.displayName,
          `R${winner}`,
          "signed in to someone else's sign-up",
        );
        const signedUp = await waitUntil(async () => {
          const events = (await authEvents(mesh.nats.url, UserSignedUpSchema)).filter(
            (e) => e.email === email,
          );
          return events.length > 0 ? events : undefined;
        });
        assert.equal(signedUp.length, 1, "one account, one UserSignedUp");
      }
    } finally {
      for (const r of replicas) r.close();
      await second.stop();
    }
  });
});

describe("sign-ups left pending by a crash", () => {
  test("the sweeper activates one whose profile exists and deletes one whose profile does not", async () => {
    const pool = new pg.Pool({ connectionString: mesh.env.auth.DATABASE_URL });
    const users = createServiceClient(UserService, mesh.addr("user"), {
      mesh: createMeshCredentials(mesh.env.auth.MESH_SECRET as string, "auth"),
    });
    try {
      const kek = Buffer.from(mesh.env.auth.AUTH_KEY_ENCRYPTION_KEY ?? "", "base64");
      const store = createPgAuthStore(pool, {
        refreshS: 3600,
        secrets: { seal: (p) => seal(kek, p), open: (s) => open(kek, s) },
      });
      // Crash after user created the profile, before auth activated the credential.
      const profiled = uniqueEmail("swept");
      const profiledId = await store.reservePending(profiled, "not-a-real-hash");
      assert.ok(profiledId);
      await users.createUser({ userId: profiledId, email: profiled, displayName: "Fay" });
      // Crash before user was ever called.
      const orphan = uniqueEmail("orphan-pending");
      assert.ok(await store.reservePending(orphan, "not-a-real-hash"));

      const otp = createServiceClient(OtpService, mesh.addr("otp"), {
        mesh: createMeshCredentials(mesh.env.auth.MESH_SECRET as string, "auth"),
      });
      const verification = createEmailVerification(otp);
      const sweeper = createSignupSweeper({
        store,
        users,
        timeoutS: 0,
        // As app.ts wires it: an account the sweeper activates gets its verification code.
        onActivated: (account) => verification.send(account),
        log: createLogger("test", "silent"),
      });
      const result = await sweeper.sweep().finally(() => otp.close());
      assert.ok(result.activated >= 1 && result.deleted >= 1, JSON.stringify(result));
      assert.deepEqual(await authRows(profiled), [{ status: "active" }]);
      assert.deepEqual(await authRows(orphan), []);
      await mesh.smtp.waitFor((m) => m.to.includes(profiled) && m.subject === "Confirm your email address");
    } finally {
      users.close();
      await pool.end();
    }
  });
});
