// The identity figures of `npm run bench` (issue 6): the hashing limit, sign-in throughput against
// it, and how long the mails that carry codes take to reach the SMTP server.
import { performance } from "node:perf_hooks";
import type { Client } from "@connectrpc/connect";
import type { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import type { ReceivedMail, Smtp } from "@protomesh/devkit";
import { MAIL } from "@protomesh/testkit";
import pg from "pg";
import { Piscina } from "piscina";
import type { PasswordTask } from "../../services/auth/src/password-worker.ts";
import { type BenchRun, formatTable, type LoadResult, pooled, runLoad } from "./load.ts";

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

/** What the identity part needs from the run that started the mesh. */
export interface IdentityContext extends BenchRun {
  /** AuthService through the gateway. */
  auth: Client<typeof AuthService>;
  smtp: Smtp;
  /** One signed-in user's GetMe through the gateway (Connect JSON). */
  getMe: () => Promise<unknown>;
  /** auth's Prometheus endpoint (event-loop lag). */
  authMetricsUrl: string;
  /** auth's database (its outbox tells when a storm's events are all out). */
  authDatabaseUrl: string;
  cores: number;
  bcryptCost: number;
  /** Accounts signed up (one verification and one reset mail each); at least one per storm worker. */
  mailSamples: number;
}

// Sign-in storm: enough sign-ins in flight to keep every hashing thread busy.
const STORM_CONCURRENCY = 8;
const GETME_CONCURRENCY = 4;
const BCRYPT_SAMPLES = 10; // per round
// The storm starts with its own warm-up, whose queued sign-ins drain before it measures: GetMe
// starts measuring this much later, and the storm goes on this much longer, so that GetMe's
// whole window falls inside a full storm.
const STORM_SETTLE_MS = 1_500;
const STORM_WARMUP_MS = 3_000;

/** Reads one gauge from a Prometheus text endpoint. */
async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(url)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return Number(line?.split(" ").pop() ?? Number.NaN);
}

/**
 * Mail latency of sign-up and reset, then sign-in throughput against the hashing limit and
 * GetMe's latency at rest and during a sign-in storm; prints their tables.
 */
export async function identityBench(ctx: IdentityContext): Promise<void> {
  if (ctx.mailSamples < STORM_CONCURRENCY)
    throw new Error(`mailSamples must be at least ${STORM_CONCURRENCY}`);
  // Mail latency first, on a mesh with nothing else to do: each sample is one account signing up
  // (verification code) and then asking for a password reset (reset code), one at a time.
  const accountEmail = (i: number) => `bench-${ctx.runId}-${i}@example.com`;
  const mailTo = (subject: string) => (i: number) => (mail: ReceivedMail) =>
    mail.to.includes(accountEmail(i)) && mail.subject === subject;
  const mails = [
    await mailLatency(
      "SignUp answered → verification email",
      ctx.smtp,
      ctx.mailSamples,
      (i) => ctx.auth.signUp({ email: accountEmail(i), password: ctx.password, displayName: `Bench ${i}` }),
      mailTo(MAIL.verify),
    ),
    await mailLatency(
      "RequestPasswordReset answered → reset email",
      ctx.smtp,
      ctx.mailSamples,
      (i) => ctx.auth.requestPasswordReset({ email: accountEmail(i) }),
      mailTo(MAIL.reset),
    ),
  ];
  console.log(`\n## Mail latency: through the gateway to the SMTP server, one at a time\n`);
  console.log(formatMailTable(mails));
  const medianMs = (i: number) => `${median(mails[i]?.samples ?? []).toFixed(1)} ms`;
  console.log(
    `\nmedian SignUp → verification email: ${medianMs(0)}; RequestPasswordReset → reset email: ${medianMs(1)}`,
  );

  // GetMe latency at rest and during a sign-in storm, at fixed concurrencies, in alternating
  // rounds pooled together, so that a neighbour's load on the machine falls on both sides. Each
  // storm worker signs in its own account: the auth throttle counts sign-ins in flight per
  // account, and real storms come from many accounts.
  const { getMe } = ctx;
  const lag = () => gauge(ctx.authMetricsUrl, "nodejs_eventloop_lag_p99_seconds");
  const rests: LoadResult[] = [];
  const durings: LoadResult[] = [];
  const storms: LoadResult[] = [];
  const alones: LoadResult[] = [];
  const lags = { rest: 0, storm: 0 };
  const compares: number[] = [];
  const parallel = { compares: 0, seconds: 0 };
  // The previous storm's events (SignedIn, one per sign-in) are still being relayed and mailed
  // for a moment: "at rest" starts once auth's outbox is empty (or after 10 s).
  const authDb = new pg.Client({ connectionString: ctx.authDatabaseUrl });
  await authDb.connect();
  ctx.onClose(() => authDb.end());
  const outboxDrained = async () => {
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      const { rows } = await authDb.query<{ n: number }>("SELECT count(*)::int AS n FROM outbox");
      if (rows[0]?.n === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const signInOwn = (worker: number) =>
    ctx.auth.signIn({ email: accountEmail(worker), password: ctx.password });
  // A storm that is not counted: the sign-in path (auth, user's GetRoles, the gateway,
  // PostgreSQL's plans) has so far served a handful of calls, and the first counted storm would
  // pay for its warming alone.
  await runLoad({
    name: "SignIn warm-up",
    concurrency: STORM_CONCURRENCY,
    durationMs: STORM_WARMUP_MS,
    maxRequests: 10_000,
    call: signInOwn,
  });
  for (let round = 0; round < ctx.rounds; round++) {
    await outboxDrained();
    // The hashing limit, timed before each storm on the idle mesh, so that it sees the same
    // neighbours on the machine as the storm does.
    const bcrypt = await bcryptCompares(ctx.bcryptCost, BCRYPT_SAMPLES, ctx.cores);
    compares.push(...bcrypt.timesMs);
    parallel.compares += bcrypt.parallel.compares;
    parallel.seconds += bcrypt.parallel.seconds;
    await lag(); // prom-client resets the histogram on each read: start a fresh window
    rests.push(
      await runLoad({
        name: `GetMe at rest, round ${round + 1}`,
        concurrency: GETME_CONCURRENCY,
        call: getMe,
        ...ctx.load,
      }),
    );
    lags.rest = Math.max(lags.rest, await lag());
    // Throughput with nothing else asking for the CPU, then again with GetMe alongside for its
    // latency (closed-loop GetMe takes CPU from the lower-priority hashing threads by design).
    alones.push(
      await runLoad({
        name: `SignIn storm, round ${round + 1}`,
        concurrency: STORM_CONCURRENCY,
        durationMs: ctx.load.durationMs + STORM_SETTLE_MS,
        warmupMs: ctx.load.warmupMs,
        maxRequests: 50_000,
        call: signInOwn,
      }),
    );
    await outboxDrained();
    await lag();
    const [storm, during] = await Promise.all([
      runLoad({
        name: `SignIn storm beside GetMe, round ${round + 1}`,
        concurrency: STORM_CONCURRENCY,
        durationMs: ctx.load.durationMs + STORM_SETTLE_MS,
        warmupMs: ctx.load.warmupMs,
        maxRequests: 50_000,
        call: signInOwn,
      }),
      runLoad({
        name: `GetMe during the storm, round ${round + 1}`,
        concurrency: GETME_CONCURRENCY,
        durationMs: ctx.load.durationMs,
        warmupMs: ctx.load.warmupMs + STORM_SETTLE_MS,
        maxRequests: ctx.load.maxRequests,
        call: getMe,
      }),
    ]);
    lags.storm = Math.max(lags.storm, await lag());
    storms.push(storm);
    durings.push(during);
    console.error(`measured: sign-in storm round ${round + 1}`);
  }
  const compareMs = median(compares);
  const hashLimit = (ctx.cores * 1000) / compareMs;
  const rest = pooled(`GetMe at rest (gateway, Connect JSON, c=${GETME_CONCURRENCY})`, rests);
  const during = pooled(`GetMe during the storm (c=${GETME_CONCURRENCY})`, durings);
  const alone = pooled(`SignIn storm alone (c=${STORM_CONCURRENCY}, one account per worker)`, alones);
  const storm = pooled(`SignIn storm beside GetMe (c=${STORM_CONCURRENCY})`, storms);
  console.log(
    `\n## Sign-in storm: ${ctx.rounds} round(s) of GetMe at rest, the storm alone, the storm with GetMe (${ctx.load.durationMs / 1000} s each), pooled\n`,
  );
  console.log(formatTable([rest, during, alone, storm], rest.name));
  console.log(
    `\nhashing limit: ${ctx.cores} cores ÷ ${compareMs.toFixed(1)} ms per bcrypt compare at cost ${ctx.bcryptCost} ` +
      `(median of ${compares.length}) = ${hashLimit.toFixed(1)}/s; ` +
      `${ctx.cores} threads comparing at once managed ${(parallel.compares / parallel.seconds).toFixed(1)}/s`,
  );
  console.log(
    `SignIn throughput (storm alone): ${alone.rps.toFixed(1)}/s = ${(alone.rps / hashLimit).toFixed(2)}× the hashing limit ` +
      `(target ≥ 0.80; BCRYPT_THREADS=${ctx.cores}); beside GetMe: ${storm.rps.toFixed(1)}/s`,
  );
  const perRound = rests.map((r, i) => `${((durings[i]?.p99Ms ?? 0) / r.p99Ms).toFixed(2)}×`).join(", ");
  console.log(
    `GetMe p99 during storm / at rest: ${(during.p99Ms / rest.p99Ms).toFixed(2)}× (target ≤ 1.50; per round ${perRound}); ` +
      `auth event-loop lag p99 (worst window): ${(lags.rest * 1000).toFixed(1)} ms at rest, ${(lags.storm * 1000).toFixed(1)} ms during the storm`,
  );
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
