// user over the gateway: profiles, what others may see of them, validation, and the
// UserUpdated event every change writes.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { failure, type Mesh, startMesh, waitUntil } from "@protomesh/testkit";
import { signedIn as signedInTo, updatesOf as updatesIn } from "./helpers.ts";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({ services: ["auth", "user"] });
});
after(() => mesh?.stop());

const signedIn = (displayName: string) => signedInTo(mesh, displayName);
const updatesOf = (userId: string) => updatesIn(mesh, userId);

test("GetUser shows another user's public profile only: no email, phone, locale or roles", async () => {
  const other = await signedIn("Olu");
  await other.users.updateMe({
    profile: { bio: "Hi", phone: "+4915123456789", locale: "de" },
    updateMask: { paths: ["bio", "phone", "locale"] },
  });
  const me = await signedIn("Mo");
  const res = await fetch(`${mesh.url}/protomesh.user.v1.UserService/GetUser`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${me.token}` },
    body: JSON.stringify({ userId: other.userId }),
  });
  assert.equal(res.status, 200);
  const body = (await res.json()) as { profile: Record<string, unknown> };
  assert.deepEqual(body, { profile: { id: other.userId, displayName: "Olu", bio: "Hi" } });
  assert.doesNotMatch(JSON.stringify(body), new RegExp(`${other.email}|4915123456789`));

  const missing = await failure(me.users.getUser({ userId: crypto.randomUUID() }));
  assert.equal(missing.code, Code.NotFound);
});

test("UpdateMe changes only the masked fields and writes UserUpdated with them", async () => {
  const { userId, users } = await signedIn("Ada");
  const updated = await users.updateMe({
    profile: { displayName: "Ada L.", bio: "Counts things", locale: "en-GB" },
    updateMask: { paths: ["display_name", "bio"] },
  });
  assert.equal(updated.user?.displayName, "Ada L.");
  assert.equal(updated.user?.locale, "", "a field outside the mask is left alone");

  const [event, ...more] = await waitUntil(
    async () => {
      const events = await updatesOf(userId);
      return events.length > 0 ? events : undefined;
    },
    10_000,
    "UserUpdated in the USER stream",
  );
  assert.equal(more.length, 0, "one change, one event");
  assert.ok(event);
  assert.deepEqual(event.changedFields, ["display_name", "bio"]);
  assert.equal(event.user?.displayName, "Ada L.");
  assert.equal(event.user?.bio, "Counts things");
  assert.ok(event.occurTime);
});

test("UpdateMe refuses paths outside the profile, bad values and an empty display name, changing nothing", async () => {
  const { userId, users } = await signedIn("Cy");
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
  // Events are published in order: once a later change's event is there, any from the refused
  // calls would be too.
  await users.updateMe({ profile: { bio: "later" }, updateMask: { paths: ["bio"] } });
  const events = await waitUntil(
    async () => {
      const e = await updatesOf(userId);
      return e.length > 0 ? e : undefined;
    },
    10_000,
    "the later change's event",
  );
  assert.deepEqual(
    events.map((e) => e.changedFields),
    [["bio"]],
    "the refused calls wrote no event",
  );
});

test("UpdateMe accepts only https: avatar URLs, refusing javascript:, http: and data: naming the field", async () => {
  const { users } = await signedIn("Av");
  for (const avatarUrl of [
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "http://x",
    "http://example.com/a.png",
    "data:image/svg+xml;base64,PHN2Zy8+",
    "//example.com/a.png",
  ]) {
    const err = await failure(
      users.updateMe({ profile: { avatarUrl }, updateMask: { paths: ["avatar_url"] } }),
    );
    assert.equal(err.code, Code.InvalidArgument, avatarUrl);
    assert.match(err.rawMessage, /^profile\.avatar_url: /, avatarUrl);
  }
  assert.equal((await users.getMe({})).user?.avatarUrl, "", "nothing was stored");

  const ok = await users.updateMe({
    profile: { avatarUrl: "https://example.com/a.png" },
    updateMask: { paths: ["avatar_url"] },
  });
  assert.equal(ok.user?.avatarUrl, "https://example.com/a.png");
  const cleared = await users.updateMe({ profile: { avatarUrl: "" }, updateMask: { paths: ["avatar_url"] } });
  assert.equal(cleared.user?.avatarUrl, "", "an empty value clears it");
});
