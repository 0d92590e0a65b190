// PostgreSQL is the slow part to start, so a test run shares one: `npm test` starts it once
// and passes its URL in PROTOMESH_TEST_PG_URL; a file run on its own starts one for the
// process, stopped when the last mesh using it stops. Every mesh gets databases of its own.
import { randomBytes } from "node:crypto";
import { createDatabase, type Postgres, startPostgres } from "@protomesh/devkit";

export const SHARED_PG_ENV = "PROTOMESH_TEST_PG_URL";

/** A PostgreSQL server that makes fresh databases for one mesh. */
export interface TestDatabases {
  /** Creates a database with a unique name and returns its URL. */
  create(name: string): Promise<string>;
  release(): Promise<void>;
}

let own: { pg: Promise<Postgres>; users: number } | undefined;

/** Databases for one mesh, on the run's shared server (started here when there is none). */
export async function testDatabases(): Promise<TestDatabases> {
  const prefix = `t${randomBytes(4).toString("hex")}`;
  const shared = process.env[SHARED_PG_ENV];
  if (shared) {
    return { create: (name) => createDatabase(shared, `${prefix}_${name}`), release: async () => {} };
  }
  own ??= { pg: startPostgres(), users: 0 };
  own.users++;
  const current = own;
  let server: Postgres;
  try {
    server = await current.pg;
  } catch (err) {
    own = undefined;
    throw err;
  }
  let released = false;
  return {
    create: (name) => createDatabase(server.adminUrl, `${prefix}_${name}`),
    async release() {
      if (released) return;
      released = true;
      if (--current.users === 0) {
        if (own === current) own = undefined;
        await server.stop();
      }
    },
  };
}
