import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import pg from "pg";
import type { Logger } from "./logger.ts";

export type Pool = pg.Pool;
export type Tx = pg.PoolClient;

/**
 * A connection pool whose idle-client errors are logged instead of crashing the process. A call
 * that waits `acquireTimeoutMs` for a connection fails (UNAVAILABLE, see toPublicError).
 */
export function createPool(url: string, log: Logger, max = 10, acquireTimeoutMs = 5_000): Pool {
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: acquireTimeoutMs });
  pool.on("error", (err) => log.warn({ err }, "idle database client failed"));
  return pool;
}

/** Runs fn in a transaction: committed if it resolves, rolled back if it throws. */
export async function withTransaction<T>(pool: Pool, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

/** True when the database answers a trivial query. */
export async function pingDatabase(pool: Pool): Promise<boolean> {
  try {
    await pool.query("SELECT 1");
    return true;
  } catch {
    return false;
  }
}

/** The platform's own tables (outbox, processed events), applied before a service's own. */
export const platformMigrations = join(import.meta.dirname, "../migrations");

/**
 * Applies the `*.sql` files of each directory in name order, each once and in its own
 * transaction. An advisory lock makes concurrent replicas wait instead of racing.
 */
export async function migrate(pool: Pool, dirs: string[], log: Logger): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock(7460012)");
    await client.query(
      "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    const done = new Set(
      (await client.query<{ name: string }>("SELECT name FROM schema_migrations")).rows.map((r) => r.name),
    );
    for (const dir of dirs) {
      const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
      for (const file of files) {
        const name = `${dir.split("/").slice(-2).join("/")}/${file}`;
        if (done.has(name)) continue;
        const sql = await readFile(join(dir, file), "utf8");
        await client.query("BEGIN");
        try {
          await client.query(sql);
          await client.query("INSERT INTO schema_migrations (name) VALUES ($1)", [name]);
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK");
          throw new Error(`migration ${name} failed: ${(err as Error).message}`);
        }
        log.info({ migration: name }, "applied migration");
      }
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock(7460012)").catch(() => {});
    client.release();
  }
}
