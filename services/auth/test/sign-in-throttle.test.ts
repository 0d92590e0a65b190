// Failed sign-ins are throttled per account and per address, in PostgreSQL (shared by every
// replica): back-off, then a lock at 100 consecutive failures during which the right password
// gets exactly the answer a wrong one gets; a success starts the count over.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { createLogger, createPool, createServiceClient, retryDelayMs } from "@protomesh/platform";
import { type Mesh, query, startMesh, uniqueEmail } from "@protomesh/testkit";
import { createPgThrottleStore } from "../src/pg-throttle-store.ts";
import { createSignInThrottle } from "../src/sign-in-throttle.ts";

const PASSWORD = "correct horse battery staple";
const WRONG = "wrong horse battery staple";
const bad = { code: "Unauthenticated", message: "wrong email or password" };

let mesh: Mesh;
const closers: Array<() => unknown> = [];
before(async () => {
  // No back-off delays here (the back-off has a test of its own), so 150 tries take seconds.
  mesh = await startMesh({
    services: ["auth", "user"],
    gateway: false,
    env: {
      auth: {
        SIGNIN_BACKOFF_BASE_MS: "0",
        SIGNIN_IP_FREE_FAILURES: "100000",
        SIGNIN_IP_MAX_FAILURES: "100000",
      },
    },
  });
});
after(async () => {
  for (const close of closers) await close();
  await mesh?.stop();
});

const client = (addr = mesh.addr("auth")) => {
  const c = createServiceClient(AuthService, addr);
  closers.push(() => c.close());
  return c;
};

/** The status and message a sign-in ends with ("OK" when it returned tokens). */
async function answer(auth: ReturnType<typeof client>, email: string, password: string) {
  try {
    const { result } = await auth.signIn({ email, password });
    return { code: "OK", message: result.case ?? "" };
  } catch (err) {
    assert.ok(err instanceof ConnectError, String(err));
    return { code: Code[err.code], message: err.rawMessage };
  }
}

const failures = async (key: string) =>
  (
    await query<{ failures: number }>(
      mesh.env.auth.DATABASE_URL ?? "",
      "SELECT failures FROM sign_in_failures WHERE key = $1",
      [key],
    )
  )[0]?.failures ?? 0;

describe("per account", () => {
  test("150 wrong passwords lock the account at 100; then the right password gets the identical answer", async () => {
    const auth = client();
    const email = uniqueEmail("locked");
    await auth.signUp({ email, password: PASSWORD, displayName: "Lou" });
    for (const target of [email]) {
      // A few at a time: concurrent guesses must not slip past the limit either.
      for (let i = 0; i < 150; i += 5) {
        const answers = await Promise.all([0, 1, 2, 3, 4].map(() => answer(auth, target, WRONG)));
        for (const a of answers) assert.deepEqual(a, bad);
      }
      assert.equal(await failures(`account:${target}`), 100, "counted up to the limit, no further");
    }
    assert.deepEqual(await answer(auth, email, PASSWORD), bad, "the right password while locked");

    // What a successful password reset does (account-flows.ts calls clearFailures): unlocked.
    const pool = createPool(mesh.env.auth.DATABASE_URL ?? "", createLogger("test", "silent"), 1);
    closers.push(() => pool.end());
    const throttle = createSignInThrottle(
      createPgThrottleStore(pool, { backoffBaseMs: 0, backoffMaxMs: 0, lockoutS: 60 }),
      {
        accountFreeFailures: 5,
        accountMaxFailures: 100,
        ipFreeFailures: 5,
        ipMaxFailures: 100,
        backoffBaseMs: 0,
        backoffMaxMs: 0,
        lockoutS: 60,
      },
    );
    await throttle.clearFailures(email);
    assert.deepEqual(await answer(auth, email, PASSWORD), { code: "OK", message: "tokens" });
  });

  test("a success starts the count over; an unknown email locks exactly like an account; capitals lock alike", async () => {
    const small = await mesh.start("auth", {
      env: { PORT: "0", SIGNIN_MAX_FAILURES: "10", SIGNIN_BACKOFF_BASE_MS: "0" },
    });
    closers.push(() => small.stop());
    const auth = client(`127.0.0.1:${small.port}`);
    const email = uniqueEmail("reset");
    await auth.signUp({ email, password: PASSWORD, displayName: "Rex" });
    for (let i = 0; i < 6; i++) assert.deepEqual(await answer(auth, email, WRONG), bad);
    assert.equal(await failures(`account:${email}`), 6);
    assert.equal((await answer(auth, email, PASSWORD)).code, "OK");
    assert.equal(await failures(`account:${email}`), 0);
    // 9 more failures do not lock it: the earlier 6 no longer count.
    for (let i = 0; i < 9; i++) await answer(auth, email, WRONG);
    assert.equal((await answer(auth, email, PASSWORD)).code, "OK");

    // The same sequence of answers for an email that has no account, up to the lock.
    const unknown = uniqueEmail("nobody");
    for (let i = 0; i < 12; i++) assert.deepEqual(await answer(auth, unknown, WRONG), bad);
    assert.equal(await failures(`account:${unknown}`), 10);
    for (let i = 0; i < 10; i++) await answer(auth, email, WRONG);
    assert.equal(await failures(`account:${email}`), 10);
    assert.deepEqual(await answer(auth, email, PASSWORD), bad);
    // The lock is the account's, not the spelling's: capitals do not start a fresh count.
    assert.deepEqual(await answer(auth, email.toUpperCase(), PASSWORD), bad, "the email in capitals");
  });

  test("after a few failures the account backs off with a retry delay, for the right password too, on every replica", async () => {
    const env = { PORT: "0", SIGNIN_FREE_FAILURES: "3", SIGNIN_BACKOFF_BASE_MS: "60000" };
    const [first, second] = await Promise.all([mesh.start("auth", { env }), mesh.start("auth", { env })]);
    closers.push(
      () => first.stop(),
      () => second.stop(),
    );
    const auth = client(`127.0.0.1:${first.port}`);
    const other = client(`127.0.0.1:${second.port}`);
    const email = uniqueEmail("backoff");
    await auth.signUp({ email, password: PASSWORD, displayName: "Bo" });
    for (let i = 0; i < 3; i++) assert.equal((await answer(auth, email, WRONG)).code, "Unauthenticated");
    for (const [replica, password] of [
      [auth, WRONG],
      [auth, PASSWORD],
      [other, PASSWORD],
    ] as const) {
      const err = await replica.signIn({ email, password }).then(
        () => assert.fail("signed in during the back-off"),
        (e: ConnectError) => e,
      );
      assert.equal(err.code, Code.ResourceExhausted);
      const delay = retryDelayMs(err);
      assert.ok(delay !== undefined && delay > 50_000 && delay <= 60_000, `retry in ${delay} ms`);
    }
    assert.equal(await failures(`account:${email}`), 3, "refused attempts are not counted");
  });
});

describe("per address", () => {
  // One replica with a low per-address limit and a long back-off, started by the first test
  // that needs it (a replica stopped while its bcrypt threads still start fails the run).
  let strict: Promise<ReturnType<typeof client>> | undefined;
  const strictAuth = async () => {
    strict ??= mesh
      .start("auth", {
        env: {
          PORT: "0",
          SIGNIN_IP_FREE_FAILURES: "10",
          SIGNIN_IP_MAX_FAILURES: "20",
          SIGNIN_BACKOFF_BASE_MS: "60000",
        },
      })
      .then((replica) => {
        closers.push(() => replica.stop());
        return client(`127.0.0.1:${replica.port}`);
      });
    // Every test here starts from an address with no failures (the back-off outlives a test).
    await query(mesh.env.auth.DATABASE_URL ?? "", "DELETE FROM sign_in_failures WHERE key LIKE 'ip:%'");
    return strict;
  };

  test("many failures from one address across accounts back it off, while other accounts' counts stay low", async () => {
    const auth = await strictAuth();
    for (let i = 0; i < 10; i++)
      assert.equal((await answer(auth, uniqueEmail("spray"), WRONG)).code, "Unauthenticated");
    const next = await answer(auth, uniqueEmail("spray"), WRONG);
    assert.equal(next.code, "ResourceExhausted");
    assert.match(next.message, /from this address/);
  });

  test("signing in to one's own account between guesses does not start the address's count over", async () => {
    const auth = await strictAuth();
    const own = uniqueEmail("sprayer");
    await auth.signUp({ email: own, password: PASSWORD, displayName: "Spry" });
    for (let i = 0; i < 9; i++)
      assert.equal((await answer(auth, uniqueEmail("spray"), WRONG)).code, "Unauthenticated");
    assert.equal((await answer(auth, own, PASSWORD)).code, "OK");
    assert.equal(
      (await answer(auth, uniqueEmail("spray"), WRONG)).code,
      "Unauthenticated",
      "the 10th failure",
    );
    const next = await answer(auth, uniqueEmail("spray"), WRONG);
    assert.equal(next.code, "ResourceExhausted");
    assert.match(next.message, /from this address/);
  });
});
