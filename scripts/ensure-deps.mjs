// Runs before `npm start` and `npm test` (plain JS: nothing is installed yet on a fresh clone).
// Installs dependencies when node_modules is missing or older than the lockfile. `npm install`
// rather than `npm ci`: registries that serve only this platform's optional binaries (biome,
// buf) leave a lockfile that `npm ci` rejects as incomplete.
import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const marker = join(root, "node_modules/.package-lock.json");
const lock = join(root, "package-lock.json");
const stale = !existsSync(marker) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(marker).mtimeMs);
if (stale) {
  console.log("installing dependencies (npm install)…");
  execFileSync("npm", ["install", "--no-audit", "--no-fund"], { cwd: root, stdio: "inherit" });
}
