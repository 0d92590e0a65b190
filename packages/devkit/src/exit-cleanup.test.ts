import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { connect } from "nats";

// Starts both servers, says where they are, then waits to be killed.
const script = `
import { startNats, startPostgres } from ${JSON.stringify(join(import.meta.dirname, "index.ts"))};
const [postgres, nats] = await Promise.all([startPostgres(), startNats()]);
console.log(JSON.stringify({ dataDir: postgres.dataDir, natsUrl: nats.url }));
setInterval(() => {}, 1_000);
`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is dead, just not reaped yet (an orphan's reaper, init, may take its time).
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  test(`PostgreSQL and NATS, in their own process groups, still go when their owner dies of ${signal}`, async (t) => {
    const owner = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "--eval", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise((resolve) => owner.once("exit", resolve));
    t.after(() => owner.kill("SIGKILL"));
    const line = await new Promise<string>((resolve, reject) => {
      owner.stdout.once("data", (chunk: Buffer) => resolve(chunk.toString("utf8")));
      owner.once("exit", (code) => reject(new Error(`the owner exited with code ${code} before it started`)));
    });
    const { dataDir, natsUrl } = JSON.parse(line) as { dataDir: string; natsUrl: string };
    const postmaster = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    const nats = await connect({ servers: natsUrl, reconnect: false });
    const natsGone = nats.closed();

    owner.kill(signal);
    assert.equal(await exited, null);

    await natsGone;
    assert.equal(existsSync(dataDir), false);
    // The kill was sent before the owner exited; the kernel takes a moment to carry it out.
    const deadline = Date.now() + 5_000;
    while (alive(postmaster) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(alive(postmaster), false, "the postmaster outlived its owner");
  });
}
