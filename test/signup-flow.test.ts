import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { gatewayClient, type Protocol, uniqueEmail } from "./support/clients.ts";
import { type Mesh, startMesh } from "./support/mesh.ts";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

for (const protocol of ["connect-json", "grpc-web"] as Protocol[]) {
  describe(`through the gateway with ${protocol}`, () => {
    test("sign-up, sign-in, GetMe and UpdateMe work and the welcome email arrives", async () => {
      let token: string | undefined;
      const auth = gatewayClient(AuthService, mesh.gateway.url, protocol);
      const users = gatewayClient(UserService, mesh.gateway.url, protocol, () => token);
      const email = uniqueEmail(protocol);

      const { userId } = await auth.signUp({
        email: email.toUpperCase(),
        password: "correct horse battery",
        displayName: "Ada",
      });
      assert.match(userId, /^[0-9a-f-]{36}$/);

      const welcome = await mesh.smtp.waitFor((m) => m.to.includes(email));
      assert.equal(welcome.subject, "Welcome to Protomesh");
      assert.match(welcome.text, /Hi Ada/);

      const { tokens } = await auth.signIn({ email, password: "correct horse battery" });
      assert.ok(tokens?.accessToken && tokens.refreshToken);
      token = tokens.accessToken;

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

test("a wrong password and an unknown email get the same answer", async () => {
  const auth = gatewayClient(AuthService, mesh.gateway.url, "connect-json");
  const email = uniqueEmail();
  await auth.signUp({ email, password: "correct horse battery", displayName: "Bea" });
  const wrong = await auth.signIn({ email, password: "wrong horse battery" }).catch((e) => e);
  const unknown = await auth
    .signIn({ email: uniqueEmail("nobody"), password: "correct horse battery" })
    .catch((e) => e);
  for (const err of [wrong, unknown]) {
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.Unauthenticated);
    assert.equal(err.rawMessage, "wrong email or password");
  }
});
