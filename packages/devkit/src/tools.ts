import { execFileSync, spawnSync } from "node:child_process";

/** Whether a command is on PATH. */
export function hasCommand(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" }).status === 0;
}

/**
 * Makes sure a command from a Debian package is on PATH, installing the package with apt-get
 * when we are root (a fresh machine or CI); otherwise fails with what to install.
 */
export function ensureCommand(command: string, aptPackage: string): void {
  if (hasCommand(command)) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`${command} is not on PATH: install the Debian package "${aptPackage}"`);
  }
  console.error(`installing ${aptPackage} with apt-get…`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () =>
    execFileSync("apt-get", ["install", "-y", "-qq", aptPackage], { stdio: "inherit", env });
  // The package lists are refreshed only when they do not know the package (a fresh machine) or
  // name a version the mirror no longer has: one update per missing tool would cost minutes.
  try {
    install();
  } catch {
    execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
    install();
  }
  if (!hasCommand(command)) throw new Error(`${command} is still missing after installing ${aptPackage}`);
}
