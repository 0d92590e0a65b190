// Second factors: TOTP codes (±1 step, each step once), recovery codes (each once), sealed
// secrets, and the store's challenges and code budget against a real PostgreSQL with auth's
// migrations; then sign-in with email MFA and TOTP end to end over the gateway.
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import { MfaChangedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { createLogger, createPool, type Pool, subjectOf } from "@protomesh/platform";
import { query, testDatabases } from "@protomesh/testkit";
import { Secret, TOTP, URI } from "otpauth";
import { CHALLENGE_ATTEMPTS, createPgMfaStore, USER_CODE_BUDGET } from "../src/pg-mfa-store.ts";
import { hashRecoveryCode, newRecoveryCodes } from "../src/recovery-codes.ts";
import { newTotpSecret, openSecret, sealSecret, totpStep, totpUri } from "../src/totp.ts";

const PLATFORM_MIGRATIONS = join(import.meta.dirname, "../../../packages/platform/migrations");
const AUTH_MIGRATIONS = join(import.meta.dirname, "../migrations");

const appCode = (secret: string, timestamp: number) =>
  new TOTP({ secret: Secret.fromBase32(secret) }).generate({ timestamp });

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

  test("a sealed secret opens only with its key and unaltered", () => {
    const key = randomBytes(32);
    const sealed = sealSecret(key, "JBSWY3DPEHPK3PXP");
    assert.ok(!sealed.includes(Buffer.from("JBSWY3DPEHPK3PXP")));
    assert.equal(openSecret(key, sealed), "JBSWY3DPEHPK3PXP");
    assert.throws(() => openSecret(randomBytes(32), sealed));
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 1] = (tampered.at(-1) ?? 0) ^ 1;
    assert.throws(() => openSecret(key, tampered));
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
