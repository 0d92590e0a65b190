// A database that cannot take a call now (every connection busy past the acquire timeout, as
// when thousands of clients reconnect at once) is UNAVAILABLE to the caller, who retries; not
// INTERNAL, which says the call hit a bug.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { Code, createLogger, createPool, createServiceClient, type Pool } from "@protomesh/platform";
import { assertCode, testDatabases } from "@protomesh/testkit";
import { fake, serve } from "./serve.ts";

const log = createLogger("test", "silent");
let dbs: Awaited<ReturnType<typeof testDatabases>>;
let pool: Pool;

before(async () => {
  dbs = await testDatabases();
  pool = createPool(await dbs.create("busy"), log, 1, 200);
});
after(async () => {
  await pool?.end();
  await dbs?.release();
});

test("a call that waits past the pool's acquire timeout is UNAVAILABLE, and works again once a connection frees", async (t) => {
  const server = await serve([
    fake(UserService, {
      async getMe(_req, ctx) {
        const { rows } = await pool.query<{ id: string }>("SELECT $1::text AS id", [ctx.user?.userId]);
        return { user: { id: rows[0]?.id ?? "" } };
      },
    }),
  ]);
  t.after(() => server.stop());
  const client = createServiceClient(UserService, server.address);
  t.after(() => client.close());
  const held = await pool.connect();
  try {
    await assertCode(client.getMe({}, { accessToken: "someone" }), Code.Unavailable);
  } finally {
    held.release();
  }
  const { user } = await client.getMe({}, { accessToken: "someone" });
  assert.equal(user?.id, "someone", "the call works again");
});
