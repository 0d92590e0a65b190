// The password policy at SignUp, over real gRPC: 8 characters to 72 bytes (refused beyond,
// never truncated), NFC-normalised, no common passwords, not the email.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { createServiceClient } from "@protomesh/platform";
import { assertCode, type Mesh, startMesh, uniqueEmail } from "@protomesh/testkit";
import { checkNewPassword } from "../src/password-policy.ts";

let mesh: Mesh;
let auth: ReturnType<typeof createServiceClient<typeof AuthService>>;
before(async () => {
  mesh = await startMesh({ services: ["auth", "user"], gateway: false });
  auth = createServiceClient(AuthService, mesh.addr("auth"));
});
after(async () => {
  auth?.close();
  await mesh?.stop();
});

const signUp = (email: string, password: string) => auth.signUp({ email, password, displayName: "Pat" });
const signsIn = async (email: string, password: string) => {
  try {
    return (await auth.signIn({ email, password })).result.case === "tokens";
  } catch {
    return false;
  }
};

test("7 characters and 73 bytes are refused, 8 characters and 72 bytes accepted and usable", async () => {
  const tooShort = await assertCode(signUp(uniqueEmail(), "tr0ub4d"), Code.InvalidArgument, "7 chars");
  assert.match(tooShort.rawMessage, /^password: /);
  // 36 two-byte characters plus one byte: 73 bytes, under any character limit.
  const tooLong = await assertCode(
    signUp(uniqueEmail(), `${"é".repeat(36)}x`),
    Code.InvalidArgument,
    "73 bytes",
  );
  assert.match(tooLong.rawMessage, /^password: .*72 bytes/);

  for (const password of ["tr0ub4dX", "éà".repeat(18), "Zq7".repeat(24)]) {
    const email = uniqueEmail("len");
    await signUp(email, password);
    assert.ok(await signsIn(email, password), `${Buffer.byteLength(password)} bytes sign in`);
    // A password is never cut: its 71-byte prefix is a different password.
    assert.equal(await signsIn(email, password.slice(0, -1)), false);
  }
});

test("a password typed composed (NFC) and decomposed (NFD) is the same password", async () => {
  const composed = "Crème brûlée à Noël".normalize("NFC");
  const decomposed = composed.normalize("NFD");
  assert.notEqual(composed, decomposed);
  const a = uniqueEmail("nfc");
  await signUp(a, composed);
  assert.ok(await signsIn(a, decomposed), "signed up NFC, signs in NFD");
  const b = uniqueEmail("nfd");
  await signUp(b, decomposed);
  assert.ok(await signsIn(b, composed), "signed up NFD, signs in NFC");
});

test("common, trivial and email-like passwords are refused with INVALID_ARGUMENT naming the field", async () => {
  const email = uniqueEmail("margaret");
  const local = email.split("@")[0] as string;
  const refused = [
    " ".repeat(8),
    "\0".repeat(8),
    "password",
    "12345678",
    "Password",
    "qwertyuiop",
    "iloveyou",
    email,
    email.toUpperCase(),
    `${local}`,
    `${local}1990!`,
    "aaaaaaaaaaaa",
  ];
  for (const password of refused) {
    const err = await assertCode(signUp(email, password), Code.InvalidArgument, JSON.stringify(password));
    assert.match(err.rawMessage, /^password: /, JSON.stringify(password));
  }
  assert.equal(await signsIn(email, "correct horse battery staple"), false, "nothing was created");
});

test("the policy is one function the other password flows share, naming their field", () => {
  assert.throws(
    () => checkNewPassword("password", "a@example.com", "new_password"),
    /^ConnectError: \[invalid_argument\] new_password: /,
  );
  assert.equal(checkNewPassword("Cafe\u0301 au lait!", "a@example.com"), "Café au lait!");
});
