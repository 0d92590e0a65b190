import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { gatewayClient, type Mesh, type Protocol, startMesh, uniqueEmail } from "@protomesh/testkit";
import { decodeJwt } from "jose";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

for (const protocol of ["connect-json", "grpc-web", "grpc"] as Protocol[]) {
  describe(`through the gateway with ${protocol}`, () => {
    // The verification code and the welcome email that follows it: test/identity-journeys.test.ts.
    test("sign-up, sign-in, GetMe and UpdateMe work", async () => {
      let token: string | undefined;
      const auth = gatewayClient(AuthService, mesh.url, protocol);
      const users = gatewayClient(UserService, mesh.url, protocol, () => token);
      const email = uniqueEmail(protocol);

      await auth.signUp({
        email: email.toUpperCase(),
        password: "correct horse battery",
        displayName: "Ada",
      });

      const { result } = await auth.signIn({ email, password: "correct horse battery" });
      assert.equal(result.case, "tokens");
      assert.ok(result.value.accessToken && result.value.refreshToken);
      token = result.value.accessToken;
      const userId = String(decodeJwt(token).sub);
      assert.match(userId, /^[0-9a-f-]{36}$/);

      const { user } = await users.getMe({});
      assert.equal(user?.id, userId);
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
