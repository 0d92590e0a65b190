import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import pg from "pg";
import { startPostgres } from "./postgres.ts";

async function query(url: string, sql: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } finally {
    await client.end();
  }
}

test("a temp cluster creates databases idempotently and is removed on stop", async (t) => {
  const postgres = await startPostgres();
  t.after(() => postgres.stop());

  const url = await postgres.createDatabase("devkit_orders");
  assert.equal(await postgres.createDatabase("devkit_orders"), url);
  assert.equal(url, postgres.url("devkit_orders"));
  await query(url, "CREATE TABLE orders (id int PRIMARY KEY, note text)");
  await query(url, "INSERT INTO orders VALUES (1, 'Café')");
  assert.deepEqual(await query(url, "SELECT note, upper(note) AS shout FROM orders"), [
    { note: "Café", shout: "CAFÉ" },
  ]);
  await assert.rejects(postgres.createDatabase("Robert'); DROP"), /invalid database name/);

  assert.ok(existsSync(postgres.dataDir));
  await postgres.stop();
  await postgres.stop();
  assert.equal(existsSync(postgres.dataDir), false);
  await assert.rejects(query(postgres.adminUrl, "SELECT 1"));
});

test("a persistent cluster keeps its data across restarts", async (t) => {
  const parent = await mkdtemp(join(tmpdir(), "devkit-test-"));
  t.after(() => rm(parent, { recursive: true, force: true }));
  // mkdtemp makes a 0700 dir, which the postgres user (when we run as root) could not enter.
  await chmod(parent, 0o755);
  const dataDir = join(parent, "pg");

  const first = await startPostgres({ dataDir, persistent: true });
  try {
    const url = await first.createDatabase("devkit_keep");
    await query(url, "CREATE TABLE kept (value text)");
    await query(url, "INSERT INTO kept VALUES ('still here')");
  } finally {
    await first.stop();
  }
  assert.ok(existsSync(join(dataDir, "PG_VERSION")));

  const second = await startPostgres({ dataDir, persistent: true });
  try {
    const url = await second.createDatabase("devkit_keep");
    assert.deepEqual(await query(url, "SELECT value FROM kept"), [{ value: "still here" }]);
  } finally {
    await second.stop();
  }
  assert.ok(existsSync(join(dataDir, "PG_VERSION")));
});
