// `npm test`: everything CI checks, in order of speed. Contracts (buf lint, generated code
// fresh), typecheck, lint, then every test against real PostgreSQL and NATS that the tests
// start themselves. Extra arguments are passed to node --test (e.g. a single file).
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { ensureCommand } from "@protomesh/devkit";

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
step("tests", process.execPath, [
  "--import",
  "tsx",
  "--test",
  "--test-timeout=120000",
  ...(only.length ? only : testFiles()),
]);
