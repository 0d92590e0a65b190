// The first journey every user makes, through the gateway on each protocol: sign up, confirm the
// email with the emailed code, get the welcome, then read and edit the profile.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  codeIn,
  gatewayClient,
  MAIL,
  type Mesh,
  mailTo,
  type Protocol,
  rememberSecrets,
  startMesh,
  TEST_PASSWORD,
  uniqueEmail,
} from "@protomesh/testkit";
import { decodeJwt } from "jose";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

for (const protocol of ["connect-json", "grpc-web", "grpc"] as Protocol[]) {
  describe(`through the gateway with ${protocol}`, () => {
    test("sign-up, the emailed code, verification, the welcome email, GetMe and UpdateMe", async () => {
      let token: string | undefined;
      const auth = gatewayClient(AuthService, mesh.url, protocol, () => token);
      const users = gatewayClient(UserService, mesh.url, protocol, () => token);
      const email = uniqueEmail(protocol);

      assert.deepEqual(
        {
          ...(await auth.signUp({ email: email.toUpperCase(), password: TEST_PASSWORD, displayName: "Ada" })),
        },
        { $typeName: "protomesh.auth.v1.SignUpResponse" },
      );
      const code = codeIn(await mailTo(mesh, email, MAIL.verify));

      const { result } = await auth.signIn({ email, password: TEST_PASSWORD });
      assert.equal(result.case, "tokens");
      token = result.value.accessToken;
      rememberSecrets(result.value.refreshToken);
      assert.equal(decodeJwt(token).email_verified, false, "not verified before the code");

      await auth.verifyEmail({ code });
      const welcome = await mailTo(mesh, email, "Welcome to Protomesh");
      assert.match(welcome.text, /Ada/);
      const refreshed = await auth.refreshToken({ refreshToken: result.value.refreshToken });
      token = refreshed.tokens?.accessToken;
      rememberSecrets(refreshed.tokens?.refreshToken ?? "");
      assert.equal(decodeJwt(token ?? "").email_verified, true, "verified from the next token on");

      const { user } = await users.getMe({});
      assert.equal(user?.id, decodeJwt(token ?? "").sub);
      assert.equal(user?.email, email);
      assert.equal(user?.displayName, "Ada");

      const updated = await users.updateMe({
        profile: { displayName: "Ada L.", bio: "Counts things", locale: "en-GB" },
        updateMask: { paths: ["display_name", "bio"] },
      });
      assert.equal(updated.user?.displayName, "Ada L.");
      assert.equal(updated.user?.bio, "Counts things");
      assert.equal(updated.user?.locale, "", "a field outside the mask is left alone");
      assert.equal((await users.getMe({})).user?.displayName, "Ada L.");
    });
  });
}
