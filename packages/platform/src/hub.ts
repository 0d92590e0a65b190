import { Code, ConnectError } from "./errors.ts";

/**
 * Fans values out to the streams open on this replica, by key (e.g. a user id). Each listener
 * has a bounded queue: a client too slow to keep up is ended with RESOURCE_EXHAUSTED rather
 * than holding memory without limit. Fed by a subscription, so every replica sees every value.
 */
export function createHub<T>(opts: { queueLimit?: number } = {}) {
  const queueLimit = opts.queueLimit ?? 256;
  type Listener = { queue: T[]; wake: (() => void) | undefined; overflowed: boolean };
  const byKey = new Map<string, Set<Listener>>();

  const remove = (key: string, l: Listener) => {
    const set = byKey.get(key);
    set?.delete(l);
    if (set?.size === 0) byKey.delete(key);
  };

  async function* drain(key: string, l: Listener, signal: AbortSignal): AsyncGenerator<T> {
    const onAbort = () => l.wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      // An abort ends the iteration instead of failing it: a stream's status comes from its
      // signal, and a rejected next() that its caller holds while it waits for the client to
      // read would be an unhandled rejection, which ends the process.
      while (!signal.aborted) {
        if (l.overflowed)
          throw new ConnectError("the stream fell too far behind; reconnect", Code.ResourceExhausted);
        const next = l.queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => {
          l.wake = resolve;
        });
        l.wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      remove(key, l);
    }
  }

  return {
    /** Delivers to every listener of the key on this replica. */
    publish(key: string, value: T): void {
      for (const l of byKey.get(key) ?? []) {
        if (l.queue.length >= queueLimit) l.overflowed = true;
        else l.queue.push(value);
        l.wake?.();
      }
    },
    /**
     * Values published for the key from this call on (queued until iterated, so nothing is
     * missed while the caller catches up from elsewhere first), until the signal aborts.
     */
    listen(key: string, signal: AbortSignal): AsyncGenerator<T> {
      const l: Listener = { queue: [], wake: undefined, overflowed: false };
      const set = byKey.get(key) ?? new Set<Listener>();
      byKey.set(key, set);
      set.add(l);
      // A generator never iterated never runs its finally: the abort removes it instead.
      signal.addEventListener("abort", () => remove(key, l), { once: true });
      return drain(key, l, signal);
    },
    /** Whether any stream on this replica listens to the key. */
    has: (key: string): boolean => byKey.has(key),
    /** Keys with listeners on this replica. */
    keys: (): IterableIterator<string> => byKey.keys(),
    /** Open listeners on this replica. */
    get listeners(): number {
      let n = 0;
      for (const s of byKey.values()) n += s.size;
      return n;
    },
  };
}

export type Hub<T> = ReturnType<typeof createHub<T>>;
