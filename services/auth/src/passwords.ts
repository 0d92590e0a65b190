import { Code, ConnectError } from "@protomesh/platform";
import { Piscina } from "piscina";
import type { PasswordTask } from "./password-worker.ts";

/** bcrypt in worker threads, with a bounded queue so a flood sheds load instead of piling up. */
export function createPasswordHasher(opts: { cost: number; threads: number; maxQueue?: number }) {
  const pool = new Piscina({
    filename: new URL("./password-worker.ts", import.meta.url).href,
    minThreads: opts.threads,
    maxThreads: opts.threads,
    maxQueue: opts.maxQueue ?? 256,
    idleTimeout: Number.POSITIVE_INFINITY,
  });
  const run = async <T>(task: PasswordTask): Promise<T> => {
    try {
      return (await pool.run(task)) as T;
    } catch (err) {
      if ((err as Error).message?.includes("queue is at limit")) {
        throw new ConnectError(
          "too many sign-in attempts right now; try again shortly",
          Code.ResourceExhausted,
        );
      }
      throw err;
    }
  };
  // Compared against when the email is unknown, so that case costs the same time as a wrong password.
  const dummy = run<string>({ op: "hash", password: "not-a-real-password", cost: opts.cost });
  return {
    hash: (password: string) => run<string>({ op: "hash", password, cost: opts.cost }),
    /** Verifies against the hash, or against a dummy of equal cost when there is none. */
    verify: async (password: string, hash: string | undefined) => {
      const ok = await run<boolean>({ op: "verify", password, hash: hash ?? (await dummy) });
      return ok && hash !== undefined;
    },
    close: () => pool.destroy(),
  };
}

export type PasswordHasher = ReturnType<typeof createPasswordHasher>;
