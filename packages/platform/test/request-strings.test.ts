// A NUL (U+0000) cannot be stored in PostgreSQL text: a request carrying one anywhere must be
// refused as the caller's mistake, naming the field, before any handler runs.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { FieldMaskSchema, StructSchema } from "@bufbuild/protobuf/wkt";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { Code, ConnectError, createServiceClient } from "@protomesh/platform";
import { assertCode } from "@protomesh/testkit";
import { validateRequest } from "../src/validation.ts";
import { fake, serve } from "./serve.ts";

let handled = 0;
let server: Awaited<ReturnType<typeof serve>>;
let auth: ReturnType<typeof createServiceClient<typeof AuthService>>;
let user: ReturnType<typeof createServiceClient<typeof UserService>>;
before(async () => {
  server = await serve([
    fake(AuthService, {
      async signUp() {
        handled++;
        return {};
      },
    }),
    fake(UserService, {
      async updateMe() {
        handled++;
        return {};
      },
      async setRoles() {
        handled++;
        return {};
      },
    }),
  ]);
  auth = createServiceClient(AuthService, server.address);
  user = createServiceClient(UserService, server.address);
});
after(() => {
  auth?.close();
  user?.close();
  server?.stop();
});

const password = "correct horse battery";

test("a NUL in a top-level string is INVALID_ARGUMENT naming the field, and the handler never runs", async () => {
  const before = handled;
  await auth.signUp({ email: "ok@example.com", password, displayName: "Ada" });
  assert.equal(handled, before + 1, "the control request reaches the handler");
  const err = await assertCode(
    auth.signUp({ email: "a\0@example.com", password, displayName: "Ada" }),
    Code.InvalidArgument,
  );
  assert.equal(err.rawMessage, "email: must not contain NUL characters");
  const nuls = await assertCode(
    auth.signUp({ email: "ok@example.com", password: "\0".repeat(8), displayName: "Ada" }),
    Code.InvalidArgument,
  );
  assert.equal(nuls.rawMessage, "password: must not contain NUL characters");
  assert.equal(handled, before + 1);
});

test("a NUL in a nested message's string names the path to it", async () => {
  const before = handled;
  const err = await assertCode(
    user.updateMe(
      { profile: { bio: "hello\0world" }, updateMask: { paths: ["bio"] } },
      { accessToken: "user-1" },
    ),
    Code.InvalidArgument,
  );
  assert.equal(err.rawMessage, "profile.bio: must not contain NUL characters");
  assert.equal(handled, before);
});

test("a NUL in a repeated string names its index", async () => {
  const before = handled;
  const admin = { accessToken: "admin-1" };
  const err = await assertCode(
    user.setRoles({ userId: crypto.randomUUID(), roles: ["user", "admin\0"] }, admin),
    Code.InvalidArgument,
  );
  assert.equal(err.rawMessage, "roles[1]: must not contain NUL characters");
  const mask = await assertCode(
    user.updateMe({ profile: { bio: "hi" }, updateMask: { paths: ["bio", "\0"] } }, { accessToken: "u" }),
    Code.InvalidArgument,
  );
  assert.equal(mask.rawMessage, "update_mask.paths[1]: must not contain NUL characters");
  assert.equal(handled, before);
});

test("map keys, map values and oneof members are checked too, and every bad field is named", () => {
  const structOf = (json: JsonObject) => fromJson(StructSchema, json);
  assert.throws(
    () => validateRequest(StructSchema, structOf({ a: "x\0", b: { c: ["ok", "y\0"] } })),
    (err) =>
      err instanceof ConnectError &&
      err.code === Code.InvalidArgument &&
      err.rawMessage ===
        'fields["a"].string_value: must not contain NUL characters; ' +
          'fields["b"].struct_value.fields["c"].list_value.values[1].string_value: must not contain NUL characters',
  );
  // A bad key is named by its map, so the NUL itself never travels back in the message.
  assert.throws(
    () => validateRequest(StructSchema, structOf({ "k\0": "v" })),
    (err) => err instanceof ConnectError && err.rawMessage === "fields: must not contain NUL characters",
  );
  validateRequest(StructSchema, structOf({ a: "fine", b: { c: ["ok"] } }));
  validateRequest(FieldMaskSchema, create(FieldMaskSchema, { paths: ["a.b"] }));
});
