// Email verification: SignUp sends a code through otp, VerifyEmail confirms it (EmailVerified,
// tokens then say email_verified), ResendVerification sends a new one.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { EmailVerifiedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import { Purpose } from "@protomesh/contracts/otp/v1/otp_pb";
import { createServiceClient } from "@protomesh/platform";
import { assertCode, type Mesh, query, startMesh, uniqueEmail, waitUntil } from "@protomesh/testkit";
import { decodeJwt } from "jose";
import { authEvents, streamEvents } from "./auth-events.ts";

const PASSWORD = "correct horse battery staple";

let mesh: Mesh;
let auth: ReturnType<typeof createServiceClient<typeof AuthService>>;
before(async () => {
  mesh = await startMesh({ services: ["auth", "user", "otp"], gateway: false });
  auth = createServiceClient(AuthService, mesh.addr("auth"));
});
after(async () => {
  auth?.close();
  await mesh?.stop();
});

/** The codes otp issued to this address for email verification (as notify would email them). */
const codesFor = async (email: string) =>
  (await streamEvents(mesh.nats.url, "OTP", OtpIssuedSchema)).filter(
    (e) => e.destination === email && e.purpose === Purpose.VERIFY_EMAIL,
  );

async function signUpAndIn(email: string) {
  await auth.signUp({ email, password: PASSWORD, displayName: "Vera" });
  const { result } = await auth.signIn({ email, password: PASSWORD });
  assert.equal(result.case, "tokens");
  return result.value;
}

test("sign-up sends a code; the right code verifies the email once, and the next tokens say so", async () => {
  const email = uniqueEmail("verify");
  const tokens = await signUpAndIn(email);
  const userId = String(decodeJwt(tokens.accessToken).sub);
  assert.equal(decodeJwt(tokens.accessToken).email_verified, false);
  const [issued] = await waitUntil(async () => {
    const codes = await codesFor(email);
    return codes.length > 0 ? codes : undefined;
  });
  assert.ok(issued);
  assert.equal(issued.subject, userId);
  assert.equal(issued.userId, userId);

  const as = { accessToken: tokens.accessToken };
  const wrong = issued.code === "000000" ? "111111" : "000000";
  const err = await assertCode(auth.verifyEmail({ code: wrong }, as), Code.InvalidArgument, "wrong code");
  assert.equal(err.rawMessage, "code: wrong or expired code");
  const { tokens: afterWrong } = await auth.refreshToken({ refreshToken: tokens.refreshToken });
  assert.ok(afterWrong);
  assert.equal(decodeJwt(afterWrong.accessToken).email_verified, false, "a wrong code verifies nothing");

  await auth.verifyEmail({ code: issued.code }, as);
  await auth.verifyEmail({ code: issued.code }, as); // already verified: still fine
  const verified = await waitUntil(async () => {
    const mine = (await authEvents(mesh.nats.url, EmailVerifiedSchema)).filter((e) => e.userId === userId);
    return mine.length > 0 ? mine : undefined;
  });
  assert.deepEqual(
    verified.map((e) => [e.email, e.displayName]),
    [[email, "Vera"]],
  );

  const { tokens: next } = await auth.refreshToken({ refreshToken: afterWrong.refreshToken });
  assert.equal(decodeJwt(next?.accessToken ?? "").email_verified, true);
  await assertCode(auth.resendVerification({}, as), Code.FailedPrecondition, "resend when verified");
});

test("ResendVerification passes otp's cooldown through, and an existing email gets no new code", async () => {
  const email = uniqueEmail("resend");
  const tokens = await signUpAndIn(email);
  await waitUntil(async () => (await codesFor(email)).length === 1);
  await assertCode(
    auth.resendVerification({}, { accessToken: tokens.accessToken }),
    Code.ResourceExhausted,
    "resend at once",
  );
  await auth.signUp({ email, password: PASSWORD, displayName: "Vera" });
  assert.equal((await codesFor(email)).length, 1);
  await assertCode(auth.verifyEmail({ code: "123456" }), Code.Unauthenticated, "without a token");
});

test("once the cooldown has passed, an unverified account gets a new code on request and a verified one none", async () => {
  const email = uniqueEmail("resend-late");
  const tokens = await signUpAndIn(email);
  const userId = String(decodeJwt(tokens.accessToken).sub);
  const as = { accessToken: tokens.accessToken };
  const otpDb = mesh.env.otp.DATABASE_URL ?? "";
  // As if otp's resend cooldown (60 s) had passed, without waiting for it.
  const cooldownPassed = () =>
    query(otpDb, "UPDATE otp_issues SET issued_at = issued_at - interval '2 minutes' WHERE subject = $1", [
      userId,
    ]);
  const issued = async () =>
    (
      await query<{ n: number }>(otpDb, "SELECT count(*)::int AS n FROM otp_issues WHERE subject = $1", [
        userId,
      ])
    )[0]?.n;
  await waitUntil(async () => (await issued()) === 1);

  await cooldownPassed();
  await auth.resendVerification({}, as);
  assert.equal(await issued(), 2, "a new code for an unverified address");
  const second = await waitUntil(async () => (await codesFor(email))[1]);
  await auth.verifyEmail({ code: second.code }, as);

  await cooldownPassed();
  await assertCode(auth.resendVerification({}, as), Code.FailedPrecondition, "resend when verified");
  assert.equal(await issued(), 2, "no code for a verified address");
});
