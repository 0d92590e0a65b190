// `npm test`: everything CI checks, in order of speed. Contracts (buf lint, generated code
// fresh), typecheck, lint, then every test against real PostgreSQL and NATS that the tests
// start themselves: one PostgreSQL for the whole run (each mesh makes databases of its own on
// it), NATS and SMTP per mesh. Extra arguments are passed to node --test (e.g. a single file).
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { ensureCommand, startPostgres } from "@protomesh/devkit";
import { SHARED_PG_ENV, TEST_LOG_DIR_ENV } from "@protomesh/testkit";
import { findLeaks } from "./check-logs.ts";

const root = join(import.meta.dirname, "..");
const bin = join(root, "node_modules/.bin");

function step(name: string, command: string, args: string[]): void {
  console.log(`\n▶ ${name}`);
  const { status } = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  if (status !== 0) {
    console.error(`✖ ${name} failed`);
    process.exit(status ?? 1);
  }
}

/** Test files: *.test.ts under test/, services/, gateway/ and packages/, outside node_modules. */
function testFiles(): string[] {
  const found: string[] = [];
  for (const dir of ["test", "services", "gateway", "packages"]) {
    for (const e of readdirSync(join(root, dir), { recursive: true, withFileTypes: true })) {
      const path = join(e.parentPath, e.name);
      if (e.isFile() && e.name.endsWith(".test.ts") && !path.includes("node_modules"))
        found.push(relative(root, path));
    }
  }
  return found.sort();
}

ensureCommand("nats-server", "nats-server");
// gateway/test/browser.test.ts drives the official browser client in Debian's Chromium.
ensureCommand("chromium", "chromium");
const only = process.argv.slice(2);
if (only.length === 0) {
  step("contracts: buf lint and generated code is fresh", process.execPath, [
    "--import",
    "tsx",
    "scripts/generate.ts",
    "--check",
  ]);
  step("typecheck", join(bin, "tsc"), ["-p", "tsconfig.json", "--noEmit"]);
  step("lint", join(bin, "biome"), ["check", "."]);
}
console.log("\n▶ tests");
// Every service log of the run lands here, to be searched for secrets afterwards.
const logDir = join(root, "build/test-logs");
rmSync(logDir, { recursive: true, force: true });
const pg = await startPostgres();
// Two files at a time (node's default here is one): most of a test waits on sockets, timers and
// bcrypt's threads. Runs with two kept 1.6 of 2 cores busy and took 6–10 minutes; with
// three, one file's mesh got so little CPU that it ran past its timeout, which is generous for
// that reason.
const status = await new Promise<number>((resolve) => {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "--test",
      "--test-timeout=300000",
      "--test-concurrency=2",
      ...(only.length ? only : testFiles()),
    ],
    {
      cwd: root,
      stdio: "inherit",
      env: { ...process.env, [SHARED_PG_ENV]: pg.adminUrl, [TEST_LOG_DIR_ENV]: logDir },
    },
  );
  // Ctrl-C reaches the runner too (same process group); wait for it, then stop PostgreSQL.
  process.on("SIGINT", () => {});
  child.once("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0)));
});
await pg.stop();
if (status !== 0) {
  console.error("✖ tests failed");
  process.exit(status);
}
console.log("\n▶ no password, code, token or hash in any log line");
const leaks = findLeaks(logDir);
for (const leak of leaks.slice(0, 50)) console.error(`  ${leak}`);
if (leaks.length > 0) {
  console.error(`✖ ${leaks.length} log lines under ${logDir} hold secrets`);
  process.exit(1);
}
console.log("  clean");
