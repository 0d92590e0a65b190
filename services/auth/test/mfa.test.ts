// Second factors: TOTP codes (±1 step, each step once), recovery codes (each once), sealed
// secrets, and the store's challenges and code budget against a real PostgreSQL with auth's
// migrations; then sign-in with email MFA and TOTP end to end over the gateway.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import { MfaChangedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { createLogger, createPool, type Pool, subjectOf } from "@protomesh/platform";
import {
  assertCode,
  codeAfter,
  MAIL,
  type Mesh,
  mailTo,
  query,
  signUpAndSignIn,
  startMesh,
  testDatabases,
} from "@protomesh/testkit";
import { type TOTP, URI } from "otpauth";
import { open } from "../src/key-ring.ts";
import { CHALLENGE_ATTEMPTS, createPgMfaStore, USER_CODE_BUDGET } from "../src/pg-mfa-store.ts";
import { hashRecoveryCode, newRecoveryCodes } from "../src/recovery-codes.ts";
import { newTotpSecret, totpStep, totpUri } from "../src/totp.ts";
import { appCode, clients, enableTotp, type Session, signIn, verifiedAccount } from "./account-helpers.ts";

const PLATFORM_MIGRATIONS = join(import.meta.dirname, "../../../packages/platform/migrations");
const AUTH_MIGRATIONS = join(import.meta.dirname, "../migrations");

const wrongCode = (code: string) => String((Number(code) + 1) % 1_000_000).padStart(6, "0");

describe("TOTP", () => {
  test("a code of this step or one step either side is accepted, two steps away is not", () => {
    const secret = newTotpSecret();
    const now = Date.UTC(2026, 0, 1, 12, 0, 15);
    const step = Math.floor(now / 30_000);
    assert.equal(totpStep(secret, appCode(secret, now), now), step);
    assert.equal(totpStep(secret, appCode(secret, now - 30_000), now), step - 1);
    assert.equal(totpStep(secret, appCode(secret, now + 30_000), now), step + 1);
    const farOff = appCode(secret, now - 60_000);
    // A stale code could by chance equal a near one; only then would this be accepted.
    if (![-1, 0, 1].some((d) => appCode(secret, now + d * 30_000) === farOff)) {
      assert.equal(totpStep(secret, farOff, now), undefined);
    }
    assert.equal(totpStep(secret, "12345", now), undefined);
  });

  test("the enrolment URI is what authenticator apps scan", () => {
    const secret = newTotpSecret();
    const uri = totpUri(secret, "ada@example.com");
    assert.match(uri, /^otpauth:\/\/totp\/Protomesh:ada(@|%40)example\.com\?/);
    const parsed = URI.parse(uri) as TOTP;
    assert.equal(parsed.issuer, "Protomesh");
    assert.equal(parsed.label, "ada@example.com");
    assert.equal(parsed.secret.base32, secret);
    assert.equal(parsed.digits, 6);
    assert.equal(parsed.period, 30);
    assert.equal(secret.length, 32, "160 bits, base32");
  });
});

describe("recovery codes", () => {
  test("ten distinct codes, hashed alike however they are typed", () => {
    const codes = newRecoveryCodes();
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    for (const c of codes) assert.match(c, /^[2-9a-hjkmnp-z]{4}-[2-9a-hjkmnp-z]{4}-[2-9a-hjkmnp-z]{4}$/);
    const [code] = codes as [string];
    assert.deepEqual(hashRecoveryCode(code.toUpperCase().replaceAll("-", " ")), hashRecoveryCode(code));
    assert.notDeepEqual(hashRecoveryCode(code), hashRecoveryCode(codes[1] as string));
  });
});

describe("MFA store", () => {
  let databases: Awaited<ReturnType<typeof testDatabases>>;
  let url: string;
  let pool: Pool;
  let store: ReturnType<typeof createPgMfaStore>;
  before(async () => {
    // A fresh database with the platform's and auth's migrations, and no relay: events stay in
    // the outbox where the test reads them.
    databases = await testDatabases();
    url = await databases.create("auth");
    for (const dir of [PLATFORM_MIGRATIONS, AUTH_MIGRATIONS]) {
      for (const file of (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort()) {
        await query(url, await readFile(join(dir, file), "utf8"));
      }
    }
    pool = createPool(url, createLogger("mfa-test", "silent"), 20);
    store = createPgMfaStore(pool);
  });
  after(async () => {
    await pool?.end();
    await databases?.release();
  });

  const newUser = async () => {
    const userId = randomUUID();
    await query(
      url,
      "INSERT INTO credentials (user_id, email, password_hash, status) VALUES ($1, $2, 'x', 'active')",
      [userId, `${userId}@example.com`],
    );
    return userId;
  };

  test("a TOTP step is accepted once, and never an older one after it", async () => {
    const userId = await newUser();
    assert.ok(await store.startEnrolment(userId, "totp", Buffer.from("sealed")));
    assert.equal(await store.useTotpStep(userId, 100), true);
    assert.equal(await store.useTotpStep(userId, 100), false, "the same step twice");
    assert.equal(await store.useTotpStep(userId, 99), false, "an older step");
    assert.equal(await store.useTotpStep(userId, 101), true);
  });

  test("50 parallel uses of one TOTP step: exactly one succeeds", async () => {
    const userId = await newUser();
    await store.startEnrolment(userId, "totp", Buffer.from("sealed"));
    const results = await Promise.all(Array.from({ length: 50 }, () => store.useTotpStep(userId, 7)));
    assert.equal(results.filter(Boolean).length, 1);
  });

  test("the first factor confirmed stores recovery codes; each works once; the last factor off removes them", async () => {
    const userId = await newUser();
    const email = `${userId}@example.com`;
    const codes = newRecoveryCodes();
    await store.startEnrolment(userId, "totp", Buffer.from("sealed"));
    assert.equal(await store.confirm(userId, email, "totp", codes.map(hashRecoveryCode)), "first");
    assert.equal(await store.recoveryCodesLeft(userId), 10);
    assert.equal(await store.useRecoveryCode(userId, hashRecoveryCode(codes[0] as string)), true);
    assert.equal(await store.useRecoveryCode(userId, hashRecoveryCode(codes[0] as string)), false);
    assert.equal(await store.recoveryCodesLeft(userId), 9);

    await store.startEnrolment(userId, "email");
    assert.equal(
      await store.confirm(userId, email, "email", []),
      "enabled",
      "a second factor keeps the codes",
    );
    assert.equal(await store.recoveryCodesLeft(userId), 9);
    assert.equal(await store.startEnrolment(userId, "email"), false, "an enabled factor is not replaced");

    assert.equal(await store.disable(userId, email, "email"), true);
    assert.equal(await store.recoveryCodesLeft(userId), 9);
    assert.equal(await store.disable(userId, email, "totp"), true);
    assert.equal(await store.recoveryCodesLeft(userId), 0);
    assert.deepEqual(await store.factors(userId), []);

    const rows = await query<{ payload: Buffer }>(
      url,
      "SELECT payload FROM outbox WHERE subject = $1 ORDER BY created_at",
      [subjectOf(MfaChangedSchema)],
    );
    const changes = rows
      .map((r) => fromBinary(MfaChangedSchema, r.payload))
      .filter((e) => e.userId === userId);
    assert.deepEqual(
      changes.map((e) => [e.method, e.enabled, e.email]),
      [
        [MfaMethod.TOTP, true, email],
        [MfaMethod.EMAIL, true, email],
        [MfaMethod.EMAIL, false, email],
        [MfaMethod.TOTP, false, email],
      ],
    );
  });

  test(`50 parallel tries on one challenge evaluate at most ${CHALLENGE_ATTEMPTS}`, async () => {
    const userId = await newUser();
    const { token } = await store.createChallenge(userId, 60_000);
    const results = await Promise.all(Array.from({ length: 50 }, () => store.attemptChallenge(token)));
    assert.equal(results.filter((r) => r === userId).length, CHALLENGE_ATTEMPTS);
    assert.equal(await store.attemptChallenge(token), undefined);
  });

  test("a challenge is consumed once, and an expired or unknown one gives no user", async () => {
    const userId = await newUser();
    const { token } = await store.createChallenge(userId, 60_000);
    const consumed = await Promise.all(Array.from({ length: 10 }, () => store.consumeChallenge(token)));
    assert.equal(consumed.filter(Boolean).length, 1);
    assert.equal(await store.attemptChallenge(token), undefined);

    const expired = await store.createChallenge(userId, -1);
    assert.equal(await store.attemptChallenge(expired.token), undefined);
    assert.equal(await store.attemptChallenge("never-issued"), undefined);
  });

  test(`a user's wrong codes are capped at ${USER_CODE_BUDGET} across challenges; a right one clears the run`, async () => {
    const userId = await newUser();
    const waits = await Promise.all(Array.from({ length: 50 }, () => store.takeCodeTry(userId)));
    assert.equal(waits.filter((w) => w === undefined).length, USER_CODE_BUDGET);
    assert.ok(waits.every((w) => w === undefined || w > 1000));
    await store.clearCodeTries(userId);
    assert.equal(await store.takeCodeTry(userId), undefined);
  });
});

describe("MFA through the gateway", () => {
  let mesh: Mesh;
  before(async () => {
    mesh = await startMesh({ services: ["user", "otp", "notify", "auth"] });
  });
  after(() => mesh?.stop());

  /** Signs in and expects an MFA challenge. */
  const challenged = async (s: Session) => {
    const { result } = await clients(mesh).auth.signIn({ email: s.email, password: s.password });
    assert.equal(result.case, "mfaChallenge", "sign-in asks for the second factor");
    return result.value;
  };

  test("email MFA needs a verified email; once on, sign-in needs the emailed code", async () => {
    const unverified = await signUpAndSignIn(clients(mesh).auth);
    const err = await assertCode(
      clients(mesh, unverified.accessToken).auth.enableMfa({ method: MfaMethod.EMAIL }),
      Code.FailedPrecondition,
    );
    assert.match(err.rawMessage, /verify your email/);

    const s = await verifiedAccount(mesh, "email-mfa");
    const auth = clients(mesh, s.accessToken).auth;
    const code = await codeAfter(mesh, s.email, MAIL.enableMfa, () =>
      auth.enableMfa({ method: MfaMethod.EMAIL }),
    );
    await assertCode(
      auth.confirmMfa({ method: MfaMethod.EMAIL, code: wrongCode(code) }),
      Code.InvalidArgument,
    );
    const { recoveryCodes } = await auth.confirmMfa({ method: MfaMethod.EMAIL, code });
    assert.equal(recoveryCodes.length, 10, "the first factor comes with ten recovery codes");
    await mailTo(mesh, s.email, MAIL.mfaOn);
    await assertCode(auth.enableMfa({ method: MfaMethod.EMAIL }), Code.FailedPrecondition, "already on");

    let challenge: Awaited<ReturnType<typeof challenged>> | undefined;
    const signInCode = await codeAfter(mesh, s.email, MAIL.signIn, async () => {
      challenge = await challenged(s);
    });
    assert.ok(challenge);
    assert.deepEqual(challenge.methods, [MfaMethod.EMAIL]);
    await assertCode(
      clients(mesh).auth.verifyMfa({
        challengeToken: challenge.challengeToken,
        method: MfaMethod.EMAIL,
        code: wrongCode(signInCode),
      }),
      Code.Unauthenticated,
      "a wrong code",
    );
    const { tokens } = await clients(mesh).auth.verifyMfa({
      challengeToken: challenge.challengeToken,
      method: MfaMethod.EMAIL,
      code: signInCode,
    });
    assert.ok(tokens?.accessToken && tokens.refreshToken);
    const { user } = await clients(mesh, tokens.accessToken).users.getMe({});
    assert.equal(user?.id, s.userId);
    await assertCode(
      clients(mesh).auth.verifyMfa({
        challengeToken: challenge.challengeToken,
        method: MfaMethod.EMAIL,
        code: signInCode,
      }),
      Code.Unauthenticated,
      "a used challenge",
    );
  });

  test("TOTP: enrolment URI, sign-in with the app's code, the same code twice refused", async () => {
    const s = await verifiedAccount(mesh, "totp");
    const auth = clients(mesh, s.accessToken).auth;
    const { totpSecret, otpauthUri } = await auth.enableMfa({ method: MfaMethod.TOTP });
    const uri = URI.parse(otpauthUri) as TOTP;
    assert.equal(uri.issuer, "Protomesh");
    assert.equal(uri.label, s.email);
    assert.equal(uri.secret.base32, totpSecret);
    const [row] = await query<{ secret_enc: Buffer }>(
      mesh.env.auth.DATABASE_URL ?? "",
      "SELECT secret_enc FROM mfa_factors WHERE user_id = $1 AND method = 'totp'",
      [s.userId],
    );
    assert.ok(
      row && !row.secret_enc.includes(Buffer.from(totpSecret)),
      "the secret is not stored in the clear",
    );
    const kek = Buffer.from(mesh.env.auth.AUTH_KEY_ENCRYPTION_KEY ?? "", "base64");
    assert.equal(open(kek, row.secret_enc), totpSecret, "it is sealed with the key-encryption key");
    // Pending until confirmed: sign-in still gives tokens.
    await signIn(clients(mesh).auth, s.email, s.password);
    await assertCode(
      auth.confirmMfa({
        method: MfaMethod.TOTP,
        code: "000000" === appCode(totpSecret) ? "111111" : "000000",
      }),
      Code.InvalidArgument,
    );
    const { recoveryCodes } = await auth.confirmMfa({ method: MfaMethod.TOTP, code: appCode(totpSecret) });
    assert.equal(recoveryCodes.length, 10);

    const next = appCode(totpSecret, Date.now() + 30_000);
    const first = await challenged(s);
    assert.deepEqual(first.methods, [MfaMethod.TOTP]);
    const { tokens } = await clients(mesh).auth.verifyMfa({
      challengeToken: first.challengeToken,
      method: MfaMethod.TOTP,
      code: next,
    });
    assert.ok(tokens?.accessToken);
    const second = await challenged(s);
    await assertCode(
      clients(mesh).auth.verifyMfa({
        challengeToken: second.challengeToken,
        method: MfaMethod.TOTP,
        code: next,
      }),
      Code.Unauthenticated,
      "the same TOTP code again",
    );
  });

  test("a recovery code works once, and a challenge dies after five wrong codes", async () => {
    const s = await verifiedAccount(mesh, "recovery");
    const { recoveryCodes } = await enableTotp(mesh, s);
    const [code] = recoveryCodes as [string];
    const a = await challenged(s);
    const { tokens } = await clients(mesh).auth.verifyMfa({
      challengeToken: a.challengeToken,
      method: MfaMethod.RECOVERY_CODE,
      code: code.toUpperCase(),
    });
    assert.ok(tokens?.accessToken);
    const b = await challenged(s);
    await assertCode(
      clients(mesh).auth.verifyMfa({
        challengeToken: b.challengeToken,
        method: MfaMethod.RECOVERY_CODE,
        code,
      }),
      Code.Unauthenticated,
      "a used recovery code",
    );

    const c = await challenged(s);
    for (let i = 0; i < 5; i++) {
      await assertCode(
        clients(mesh).auth.verifyMfa({
          challengeToken: c.challengeToken,
          method: MfaMethod.RECOVERY_CODE,
          code: `wrong-${i}-guess`,
        }),
        Code.Unauthenticated,
      );
    }
    await assertCode(
      clients(mesh).auth.verifyMfa({
        challengeToken: c.challengeToken,
        method: MfaMethod.RECOVERY_CODE,
        code: recoveryCodes[1] as string,
      }),
      Code.Unauthenticated,
      "a right code on a dead challenge",
    );
  });

  test("turning MFA off needs the password and a current code; sign-in then gives tokens", async () => {
    const s = await verifiedAccount(mesh, "disable");
    const { secret } = await enableTotp(mesh, s);
    const signedIn = await clients(mesh).auth.verifyMfa({
      challengeToken: (await challenged(s)).challengeToken,
      method: MfaMethod.TOTP,
      code: appCode(secret, Date.now() + 30_000),
    });
    const auth = clients(mesh, signedIn.tokens?.accessToken).auth;
    const disable = { method: MfaMethod.TOTP, codeMethod: MfaMethod.TOTP };
    await assertCode(
      auth.disableMfa({ ...disable, password: "not the password", code: "123456" }),
      Code.Unauthenticated,
      "wrong password",
    );
    await assertCode(
      auth.disableMfa({ ...disable, password: s.password, code: appCode(secret, Date.now() + 30_000) }),
      Code.Unauthenticated,
      "a used TOTP step",
    );
    await assertCode(
      auth.disableMfa({ ...disable, method: MfaMethod.EMAIL, password: s.password, code: "123456" }),
      Code.FailedPrecondition,
      "a method that is off",
    );
    // Email MFA on too, so SendMfaCode has something to send; its STEP_UP code turns TOTP off.
    const code = await codeAfter(mesh, s.email, MAIL.enableMfa, () =>
      auth.enableMfa({ method: MfaMethod.EMAIL }),
    );
    assert.deepEqual((await auth.confirmMfa({ method: MfaMethod.EMAIL, code })).recoveryCodes, []);
    const stepUp = await codeAfter(mesh, s.email, MAIL.stepUp, () => auth.sendMfaCode({}));
    await auth.disableMfa({
      method: MfaMethod.TOTP,
      codeMethod: MfaMethod.EMAIL,
      password: s.password,
      code: stepUp,
    });
    assert.deepEqual((await challenged(s)).methods, [MfaMethod.EMAIL]);
  });
});
