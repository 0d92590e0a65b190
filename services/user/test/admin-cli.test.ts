// The operator's first-admin command (scripts/admin.ts), run as a child process the way an
// operator runs it, against a running mesh.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Mesh, startMesh } from "@protomesh/testkit";
import { meshUsers, signedIn } from "./helpers.ts";

const root = join(import.meta.dirname, "../../..");

let mesh: Mesh;
let users: ReturnType<typeof meshUsers>;
before(async () => {
  mesh = await startMesh({ services: ["auth", "user"] });
  users = meshUsers(mesh);
});
after(async () => {
  users?.close();
  await mesh?.stop();
});

/** Runs `npm run admin -- …` (its script) with exactly the given settings. */
function admin(args: string[], env: Record<string, string>) {
  const inherited = { ...process.env };
  for (const name of ["MESH_SECRET", "USER_ADDR", "PORT_BASE", "PROTOMESH_DATA_DIR"]) delete inherited[name];
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "scripts/admin.ts", ...args],
      { cwd: root, env: { ...inherited, ...env }, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const meshEnv = () => ({ USER_ADDR: mesh.addr("user"), MESH_SECRET: mesh.env.user.MESH_SECRET ?? "" });
const rolesOf = async (userId: string) => (await users.getRoles({ userId })).roles;

test("grant-admin makes an account an admin, list-admins shows it, revoke-admin takes it back", async () => {
  const ada = await signedIn(mesh, "Ada");
  const granted = await admin(["grant-admin", ada.email.toUpperCase()], meshEnv());
  assert.equal(granted.code, 0, granted.stderr);
  assert.match(granted.stdout, /is now an admin .*next sign-in or token refresh/);
  assert.deepEqual(await rolesOf(ada.userId), ["user", "admin"]);

  const again = await admin(["grant-admin", ada.email], meshEnv());
  assert.equal(again.code, 0);
  assert.match(again.stdout, /already an admin/);
  assert.deepEqual(await rolesOf(ada.userId), ["user", "admin"], "granted once");

  const listed = await admin(["list-admins"], meshEnv());
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, new RegExp(`^${ada.email}\\t${ada.userId}\\tAda$`, "m"));

  const revoked = await admin(["revoke-admin", ada.email], meshEnv());
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stdout, /no longer an admin/);
  assert.deepEqual(await rolesOf(ada.userId), ["user"]);
  assert.doesNotMatch((await admin(["list-admins"], meshEnv())).stdout, new RegExp(ada.email));
});

test("without MESH_SECRET it uses the secret npm start keeps in its data directory", async () => {
  const data = await mkdtemp(join(tmpdir(), "protomesh-admin-"));
  try {
    await writeFile(join(data, "secrets.json"), JSON.stringify({ MESH_SECRET: mesh.env.user.MESH_SECRET }));
    const bo = await signedIn(mesh, "Bo");
    const res = await admin(["grant-admin", bo.email], {
      USER_ADDR: mesh.addr("user"),
      PROTOMESH_DATA_DIR: data,
    });
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(await rolesOf(bo.userId), ["user", "admin"]);

    const empty = await mkdtemp(join(tmpdir(), "protomesh-admin-"));
    const missing = await admin(["list-admins"], { USER_ADDR: mesh.addr("user"), PROTOMESH_DATA_DIR: empty });
    await rm(empty, { recursive: true });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /MESH_SECRET is not set/);
  } finally {
    await rm(data, { recursive: true, force: true });
  }
});

test("it explains an unknown email, a wrong secret, an unreachable service and bad usage", async () => {
  const unknown = await admin(["grant-admin", "nobody-here@example.com"], meshEnv());
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no account with the email nobody-here@example.com/);

  const wrong = await admin(["list-admins"], { ...meshEnv(), MESH_SECRET: "x".repeat(44) });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /refused our credentials/);

  const down = await admin(["list-admins"], { ...meshEnv(), USER_ADDR: "127.0.0.1:1" });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach user at 127\.0\.0\.1:1/);

  const invalid = await admin(["grant-admin", "not-an-email"], meshEnv());
  assert.equal(invalid.code, 1);
  assert.match(invalid.stderr, /^email: /);

  for (const args of [[], ["grant-admin"], ["make-admin", "a@example.com"], ["list-admins", "extra"]]) {
    const usage = await admin(args, meshEnv());
    assert.equal(usage.code, 2, args.join(" "));
    assert.match(usage.stderr, /usage: npm run admin -- grant-admin EMAIL/);
  }
});
