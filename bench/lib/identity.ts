// The identity figures of `npm run bench` (issue 6): the hashing limit, sign-in throughput against
// it, and how long the mails that carry codes take to reach the SMTP server.
import { performance } from "node:perf_hooks";
import type { Client } from "@connectrpc/connect";
import type { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import type { ReceivedMail, Smtp } from "@protomesh/devkit";
import { Piscina } from "piscina";
import type { PasswordTask } from "../../services/auth/src/password-worker.ts";

// auth's own bcrypt worker: the same library, call and lowered thread priority as a sign-in's
// compare, so on a machine shared with other work the limit sees the share auth's threads get.
const AUTH_PASSWORD_WORKER = new URL("../../services/auth/src/password-worker.ts", import.meta.url).href;

/**
 * Times bcrypt compares at `cost` in auth's own password worker (milliseconds each): `samples`
 * one after another, then `threads` × `samples` on `threads` threads at once. On an otherwise idle
 * mesh, `cores` ÷ the median one-at-a-time compare is the most sign-ins per second the machine
 * can hash; the rate at once shows how much of that the machine gave while it was measured.
 */
export async function bcryptCompares(
  cost: number,
  samples: number,
  threads: number,
): Promise<{ timesMs: number[]; parallel: { compares: number; seconds: number } }> {
  const pool = new Piscina<PasswordTask, string | boolean>({
    filename: AUTH_PASSWORD_WORKER,
    minThreads: threads,
    maxThreads: threads,
  });
  try {
    const password = "correct horse battery";
    const hash = (await pool.run({ op: "hash", password, cost })) as string;
    const compare = async () => {
      if (!(await pool.run({ op: "verify", password, hash })))
        throw new Error("bcrypt: a right password failed");
    };
    await Promise.all(Array.from({ length: threads }, compare)); // every thread warm, not counted
    const timesMs: number[] = [];
    for (let i = 0; i < samples; i++) {
      const t0 = performance.now();
      await compare();
      timesMs.push(performance.now() - t0);
    }
    const t0 = performance.now();
    await Promise.all(Array.from({ length: threads * samples }, compare));
    return { timesMs, parallel: { compares: threads * samples, seconds: (performance.now() - t0) / 1000 } };
  } finally {
    await pool.destroy();
  }
}

/** Latencies of one kind of mail: the time from an RPC's answer to the mail's arrival. */
export interface MailLatency {
  name: string;
  samples: number[];
  errors: number;
  firstError?: string;
}

/**
 * Times `count` mails one at a time (so each measures the path, not a queue): `call(i)` is
 * answered, then the mail `expect(i)` must reach the SMTP server within `timeoutMs`. The wait is
 * set up before the call, so a mail that arrives before the answer is read still counts right.
 */
export async function mailLatency(
  name: string,
  smtp: Smtp,
  count: number,
  call: (i: number) => Promise<unknown>,
  expect: (i: number) => (mail: ReceivedMail) => boolean,
  timeoutMs = 10_000,
): Promise<MailLatency> {
  const result: MailLatency = { name, samples: [], errors: 0 };
  for (let i = 0; i < count; i++) {
    const arrived = smtp.waitFor(expect(i), timeoutMs).then(() => performance.now());
    try {
      await call(i);
      const answered = performance.now();
      result.samples.push((await arrived) - answered);
    } catch (err) {
      arrived.catch(() => {}); // the call failed: its mail's timeout is not a second failure
      result.errors++;
      result.firstError ??= err instanceof Error ? err.message : String(err);
    }
  }
  return result;
}

/** Renders mail latencies as a markdown table. */
export function formatMailTable(rows: MailLatency[]): string {
  const lines = ["| mail | samples | errors | p50 ms | p90 ms | max ms |", "|---|--:|--:|--:|--:|--:|"];
  for (const r of rows) {
    const sorted = [...r.samples].sort((a, b) => a - b);
    const q = (p: number) =>
      sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;
    lines.push(
      `| ${r.name} | ${sorted.length} | ${r.errors} | ${q(0.5).toFixed(1)} | ${q(0.9).toFixed(1)} | ${(sorted.at(-1) ?? Number.NaN).toFixed(1)} |`,
    );
  }
  const notes = rows.filter((r) => r.firstError).map((r) => `- ${r.name}: first error: ${r.firstError}`);
  return [...lines, ...(notes.length > 0 ? ["", ...notes] : [])].join("\n");
}

/** Signs `email` in and returns its access token; the bench's accounts have no MFA. */
export async function signIn(
  auth: Client<typeof AuthService>,
  email: string,
  password: string,
): Promise<string> {
  const { result } = await auth.signIn({ email, password });
  if (result.case !== "tokens") throw new Error(`${email} must sign in without MFA`);
  return result.value.accessToken;
}

/** The middle value (the lower one of an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
}
