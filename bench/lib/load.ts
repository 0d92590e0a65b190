import { performance } from "node:perf_hooks";

/** Options for one closed-loop load run; both `durationMs` and `maxRequests` bound it. */
export interface LoadOptions {
  name: string;
  concurrency: number;
  durationMs: number;
  maxRequests: number;
  warmupMs?: number;
  /** How long to wait for calls still in flight after `durationMs` before giving up on them. */
  drainMs?: number;
  /** One call; `worker` (0 … concurrency-1) lets a worker keep to its own account or product. */
  call: (worker: number) => Promise<unknown>;
}

/** How long and how much every run of a bench lasts at most. */
export interface LoadBudget {
  durationMs: number;
  warmupMs: number;
  maxRequests: number;
}

/** What every part of a bench run shares. */
export interface BenchRun {
  load: LoadBudget;
  /** How often each comparison is repeated. */
  rounds: number;
  /** Makes this run's accounts, products and databases unique. */
  runId: string;
  /** The password of every account the run signs up. */
  password: string;
  /** Registers a cleanup for the end of the run. */
  onClose(close: () => unknown): void;
}

/** What one load run measured; latencies cover successful calls only, `rps` counts successes per second. */
export interface LoadResult {
  name: string;
  requests: number;
  errors: number;
  firstError?: string;
  seconds: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Every successful call's latency, ascending: lets runs be pooled (`pooled`). */
  latencies: Float64Array;
}

const DEFAULT_DRAIN_MS = 5_000;

/** Runs `concurrency` workers that each await `call()` back to back until the time or request budget is spent. */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  if (opts.concurrency < 1 || opts.maxRequests < 1 || opts.durationMs <= 0) {
    throw new Error(`runLoad(${opts.name}): concurrency, maxRequests and durationMs must be positive`);
  }
  const drainMs = opts.drainMs ?? DEFAULT_DRAIN_MS;

  // Warm-up uses the same loop (JIT, connection pools, TLS-less h2 sessions) but its numbers are dropped.
  if (opts.warmupMs && opts.warmupMs > 0) {
    await phase(opts, opts.warmupMs, drainMs, null);
  }

  // Preallocated so recording a latency never allocates or triggers GC during the measured phase.
  const latencies = new Float64Array(opts.maxRequests);
  const stats = await phase(opts, opts.durationMs, drainMs, latencies);

  return summarize(opts.name, latencies.slice(0, stats.successes), stats);
}

/**
 * Several runs of one measurement as one: their calls and seconds add up, and the quantiles are
 * taken over every latency, so interleaved rounds (rest, storm, rest, storm…) give one figure
 * that drifts less with whatever else the machine is doing.
 */
export function pooled(name: string, runs: LoadResult[]): LoadResult {
  const all = new Float64Array(runs.reduce((n, r) => n + r.latencies.length, 0));
  let at = 0;
  for (const r of runs) {
    all.set(r.latencies, at);
    at += r.latencies.length;
  }
  const firstError = runs.find((r) => r.firstError !== undefined)?.firstError;
  return summarize(name, all, {
    successes: all.length,
    errors: runs.reduce((n, r) => n + r.errors, 0),
    seconds: runs.reduce((n, r) => n + r.seconds, 0),
    ...(firstError === undefined ? {} : { firstError }),
  });
}

/** One measurement that `interleaved` repeats. */
export interface Measure {
  name: string;
  run(): Promise<LoadResult>;
}

/**
 * Runs every measure `rounds` times, the order reversed every other round (A B, B A, A B…), so
 * a change in the machine's load or a warming cache falls on all of them alike, and pools each
 * measure's rounds under its name.
 */
export async function interleaved(rounds: number, measures: Measure[]): Promise<LoadResult[]> {
  const runs = measures.map(() => [] as LoadResult[]);
  for (let round = 0; round < rounds; round++) {
    const order = measures.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      runs[i]?.push(await (measures[i] as Measure).run());
      console.error(`measured: ${measures[i]?.name} (round ${round + 1} of ${rounds})`);
    }
  }
  return measures.map((m, i) => pooled(m.name, runs[i] ?? []));
}

/** Latencies (milliseconds, any order) and counts as a LoadResult. */
export function summarize(name: string, latencies: Float64Array, stats: PhaseStats): LoadResult {
  const ok = latencies.sort();
  const result: LoadResult = {
    name,
    requests: stats.successes,
    errors: stats.errors,
    seconds: stats.seconds,
    rps: stats.seconds > 0 ? stats.successes / stats.seconds : 0,
    p50Ms: quantile(ok, 0.5),
    p90Ms: quantile(ok, 0.9),
    p99Ms: quantile(ok, 0.99),
    maxMs: ok.length > 0 ? (ok[ok.length - 1] ?? 0) : 0,
    latencies: ok,
  };
  if (stats.firstError !== undefined) result.firstError = stats.firstError;
  return result;
}

/** Counts of one run. */
export interface PhaseStats {
  successes: number;
  errors: number;
  firstError?: string;
  seconds: number;
}

async function phase(
  opts: LoadOptions,
  durationMs: number,
  drainMs: number,
  latencies: Float64Array | null,
): Promise<PhaseStats> {
  const stats: PhaseStats = { successes: 0, errors: 0, seconds: 0 };
  let issued = 0;
  let inFlight = 0;
  const start = performance.now();
  const deadline = start + durationMs;

  const worker = async (index: number): Promise<void> => {
    while (issued < opts.maxRequests && performance.now() < deadline) {
      issued++;
      inFlight++;
      const t0 = performance.now();
      try {
        await opts.call(index);
        const elapsed = performance.now() - t0;
        if (latencies) latencies[stats.successes] = elapsed;
        stats.successes++;
      } catch (err) {
        stats.errors++;
        stats.firstError ??= err instanceof Error ? err.message : String(err);
      } finally {
        inFlight--;
      }
    }
  };

  const workers = Promise.all(Array.from({ length: opts.concurrency }, (_, i) => worker(i)));
  // A call that never settles must not hang the run: give in-flight calls `drainMs`, then report them as errors.
  let timer: NodeJS.Timeout | undefined;
  const hardStop = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), durationMs + drainMs);
  });
  const outcome = await Promise.race([workers.then(() => "done" as const), hardStop]);
  clearTimeout(timer);
  stats.seconds = (performance.now() - start) / 1000;
  if (outcome === "timeout" && inFlight > 0) {
    stats.errors += inFlight;
    stats.firstError ??= `${inFlight} call(s) still in flight ${drainMs} ms after the run ended`;
  }
  return stats;
}

// Nearest-rank quantile on an ascending array; exact because every latency is kept.
function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? 0;
}

/** Renders results as a markdown table whose ratio column is rps relative to `baselineName` (default: the first row). */
export function formatTable(results: LoadResult[], baselineName?: string): string {
  const baseline = baselineName === undefined ? results[0] : results.find((r) => r.name === baselineName);
  const header = "| name | requests | errors | seconds | rps | ratio | p50 ms | p90 ms | p99 ms | max ms |";
  const rule = "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|";
  const rows = results.map((r) => {
    const ratio = baseline && baseline.rps > 0 ? `${(r.rps / baseline.rps).toFixed(3)}x` : "n/a";
    return `| ${r.name} | ${r.requests} | ${r.errors} | ${r.seconds.toFixed(2)} | ${r.rps.toFixed(0)} | ${ratio} | ${ms(r.p50Ms)} | ${ms(r.p90Ms)} | ${ms(r.p99Ms)} | ${ms(r.maxMs)} |`;
  });
  const notes = results
    .filter((r) => r.firstError !== undefined)
    .map((r) => `- ${r.name}: first error: ${r.firstError}`);
  if (baselineName !== undefined && !baseline) notes.push(`- baseline "${baselineName}" not found`);
  return [header, rule, ...rows, ...(notes.length > 0 ? ["", ...notes] : [])].join("\n");
}

function ms(v: number): string {
  return v.toFixed(v < 10 ? 2 : 1);
}
