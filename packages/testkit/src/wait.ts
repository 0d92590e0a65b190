import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";

/** Polls fn every 50 ms until it returns a truthy value; fails after timeoutMs. */
export async function waitUntil<T>(
  fn: () => Promise<T> | T,
  timeoutMs = 15_000,
  what = "condition",
): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) {
      throw new Error(`waitUntil: ${what} not reached within ${timeoutMs} ms${last ? `: ${last}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves as the promise does, or fails after timeoutMs. */
export async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The ConnectError a call failed with; fails the test if it succeeded or failed otherwise. */
export async function failure(call: Promise<unknown> | AsyncIterable<unknown>): Promise<ConnectError> {
  let err: unknown;
  try {
    if (Symbol.asyncIterator in call) for await (const _ of call);
    else await call;
  } catch (e) {
    err = e;
  }
  if (err === undefined) assert.fail("expected the call to fail");
  assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
  return err;
}

/** Fails unless the call fails with this code. */
export async function assertCode(
  call: Promise<unknown> | AsyncIterable<unknown>,
  code: Code,
  where = "call",
) {
  const err = await failure(call);
  assert.equal(err.code, code, `${where}: expected ${Code[code]}, got ${Code[err.code]} (${err.rawMessage})`);
  return err;
}

/** The next item of a stream that matches, skipping the others; fails after timeoutMs. */
export function nextWhere<T>(
  stream: AsyncIterator<T>,
  match: (item: T) => boolean,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const find = async () => {
    for (;;) {
      const r = await stream.next();
      if (r.done) throw new Error(`the stream ended before ${what}`);
      if (match(r.value)) return r.value;
    }
  };
  return within(find(), timeoutMs, what);
}
