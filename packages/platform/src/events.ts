import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import {
  create,
  type DescMessage,
  fromBinary,
  getOption,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { event_subject } from "@protomesh/contracts/options/v1/options_pb";
import {
  AckPolicy,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  headers as natsHeaders,
} from "nats";
import { type Pool, type Tx, withTransaction } from "./db.ts";
import type { Logger } from "./logger.ts";
import { eventsHandled, outboxFailures, outboxPublished } from "./metrics.ts";
import { deadLetterSubject, sleep } from "./nats.ts";

export const EVENT_TYPE_HEADER = "Protomesh-Event-Type";
/** The event id; also Nats-Msg-Id, except on a replay, which must not be dropped as a duplicate. */
export const EVENT_ID_HEADER = "Protomesh-Event-Id";
/** Headers of a dead letter: where the event is and why it failed. */
export const DEAD_LETTER_HEADERS = {
  stream: "Protomesh-Original-Stream",
  seq: "Protomesh-Original-Seq",
  subject: "Protomesh-Original-Subject",
  consumer: "Protomesh-Consumer",
  error: "Protomesh-Error",
} as const;

/** The subject an event message declares in its contract. */
export function subjectOf(schema: DescMessage): string {
  const subject = getOption(schema, event_subject);
  if (!subject) throw new Error(`${schema.typeName} is not an event (no event_subject option)`);
  return subject;
}

/**
 * Writes an event to the outbox inside the caller's transaction, so it is published if and
 * only if the state change commits. Returns the event id.
 */
export async function addEvent<D extends DescMessage>(
  tx: Tx,
  schema: D,
  init: MessageInitShape<D>,
): Promise<string> {
  const id = randomUUID();
  // One round trip: the NOTIFY (sent at commit) rides on the insert.
  await tx.query({
    name: "outbox-add",
    text: "WITH e AS (INSERT INTO outbox (id, subject, type, payload) VALUES ($1, $2, $3, $4)) SELECT pg_notify('outbox', '')",
    values: [id, subjectOf(schema), schema.typeName, Buffer.from(toBinary(schema, create(schema, init)))],
  });
  return id;
}

interface OutboxRow {
  id: string;
  subject: string;
  type: string;
  payload: Buffer;
}

/**
 * Publishes outbox rows to JetStream with the event id as Nats-Msg-Id, then deletes them.
 * Woken by NOTIFY on commit, with a poll as fallback; SKIP LOCKED lets replicas share the work.
 * A row published but not yet deleted (crash) is published again and dropped by JetStream's
 * duplicate window.
 */
export function createOutboxRelay(opts: {
  pool: Pool;
  js: JetStreamClient;
  log: Logger;
  pollMs?: number;
  batch?: number;
}) {
  const { pool, js, log } = opts;
  const pollMs = opts.pollMs ?? 1_000;
  const batch = opts.batch ?? 200;
  let running = false;
  let wake: (() => void) | undefined;
  // A NOTIFY that arrives while a batch is publishing: the rows it announces may have committed
  // after that batch's SELECT, so the relay goes round again instead of sleeping a poll through.
  let notified = false;
  let loop: Promise<void> | undefined;
  let listener: Tx | undefined;

  /** Publishes one batch; returns how many rows it published. */
  const publishBatch = () =>
    withTransaction(pool, async (tx) => {
      const { rows } = await tx.query<OutboxRow>(
        "SELECT id, subject, type, payload FROM outbox ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
        [batch],
      );
      if (rows.length === 0) return 0;
      // Sent concurrently but written to the socket in order, so per-subject order holds.
      const results = await Promise.allSettled(
        rows.map((r) => {
          const h = natsHeaders();
          h.set(EVENT_TYPE_HEADER, r.type);
          h.set(EVENT_ID_HEADER, r.id);
          return js.publish(r.subject, r.payload, { msgID: r.id, headers: h, timeout: 5_000 });
        }),
      );
      const published = rows.filter((_, i) => results[i]?.status === "fulfilled").map((r) => r.id);
      outboxPublished.inc(published.length);
      if (published.length > 0) await tx.query("DELETE FROM outbox WHERE id = ANY($1)", [published]);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) {
        outboxFailures.inc(rows.length - published.length);
        await tx.query("UPDATE outbox SET attempts = attempts + 1 WHERE id = ANY($1)", [
          rows.map((r) => r.id).filter((id) => !published.includes(id)),
        ]);
        log.warn(
          { err: failed.reason, pending: rows.length - published.length },
          "outbox publish failed; will retry",
        );
        return -1;
      }
      return rows.length;
    });

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        wake = undefined;
        notified = false;
        resolve();
      }
      wake = done;
    });

  const run = async () => {
    let backoff = 100;
    while (running) {
      let n: number;
      try {
        n = await publishBatch();
      } catch (err) {
        log.warn({ err }, "outbox relay failed; will retry");
        n = -1;
      }
      if (!running) break;
      if (n === batch) continue;
      if (n < 0) {
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 2_000);
      } else {
        backoff = 100;
        if (notified) notified = false;
        else await sleep(pollMs);
      }
    }
  };

  return {
    async start() {
      running = true;
      const client = await pool.connect();
      client.on("notification", () => {
        notified = true;
        wake?.();
      });
      client.on("error", (err: Error) => log.warn({ err }, "outbox listener failed"));
      await client.query("LISTEN outbox");
      listener = client;
      loop = run();
    },
    /** Stops at once without publishing anything more, as a crash would. */
    abort() {
      running = false;
      wake?.();
      listener?.release(true);
      listener = undefined;
    },
    /** Stops the loop, then publishes what is left (bounded by the timeout). */
    async stop(flushTimeoutMs = 5_000) {
      running = false;
      wake?.();
      await loop;
      listener?.release(true);
      listener = undefined;
      const until = Date.now() + flushTimeoutMs;
      while (Date.now() < until) {
        const n = await publishBatch().catch(() => -1);
        if (n === 0) return;
        if (n < 0) break;
      }
      log.warn("outbox not fully flushed at shutdown; the next start publishes the rest");
    },
  };
}

/** Delivery details a handler may use. */
export interface EventMeta {
  eventId: string;
  subject: string;
  deliveryCount: number;
  /** When JetStream stored the event. */
  time: Date;
}

/** A durable, at-least-once consumer whose handler runs once per event id. */
export interface ConsumerSpec<D extends DescMessage = DescMessage> {
  /** Durable name, named for its purpose, e.g. "notify-welcome-emails". */
  durable: string;
  event: D;
  /** Runs inside the transaction that records the event as processed. */
  handle: (event: MessageShape<D>, meta: EventMeta, tx: Tx) => Promise<void>;
  /**
   * How many events this replica handles at once (default 8). Enough messages are pulled to
   * keep them all busy; each holds a database connection while it runs, so keep it well under
   * the pool size.
   */
  concurrency?: number;
  /**
   * Events with the same key (e.g. the user id) are handled one at a time, in the order this
   * replica received them; different keys run in parallel. A failed event is retried in place
   * (after its backoff, up to maxDeliver) before the next one of its key runs, so a retry never
   * overtakes nor is overtaken; other keys go on meanwhile. Without it, events run in any order.
   * The order holds per replica: with several replicas, JetStream spreads one key's events
   * among them.
   */
  orderKey?: (event: MessageShape<D>) => string;
  maxDeliver?: number;
  backoffMs?: number[];
  ackWaitMs?: number;
  /**
   * Handle each event no sooner than this long after it was stored (e.g. to let a quick reader
   * mark a message read before deciding to email about it). The event is held meanwhile, kept
   * from redelivery, and counts as neither an attempt nor a failure.
   */
  delayMs?: number;
}

/** Events a delayed consumer may hold at once (a few MB): a replica's rate is this per delay. */
const DELAYED_HOLD_LIMIT = 10_000;

/** Pairs an event schema with a handler whose types it checks. */
export function consumer<D extends DescMessage>(spec: ConsumerSpec<D>): ConsumerSpec {
  return spec as unknown as ConsumerSpec;
}

/**
 * A per-replica, non-durable subscription: every replica sees every event (fan-out to open
 * streams, cache invalidation, denylists). Nothing is acked or retried; a handler error is
 * logged. A replica that starts late replays the last `sinceMs` of events first.
 */
export interface SubscriptionSpec<D extends DescMessage = DescMessage> {
  /** For logs and metrics, e.g. "notify-inbox-fanout". */
  name: string;
  event: D;
  handle: (event: MessageShape<D>, meta: EventMeta) => void | Promise<void>;
  sinceMs?: number;
  /** Called once every event that was in the stream when it bound has been handled. */
  onCaughtUp?: () => void;
}

/** Pairs an event schema with a handler whose types it checks. */
export function subscription<D extends DescMessage>(spec: SubscriptionSpec<D>): SubscriptionSpec {
  return spec as unknown as SubscriptionSpec;
}

/** A consumer or subscription running in the background; bound once its stream exists. */
export interface RunningListener {
  name: string;
  /** True once bound to its stream (the producer declares streams; we only look them up). */
  bound(): boolean;
  stop(): Promise<void>;
}

type Deps = { js: JetStreamClient; jsm: JetStreamManager; log: Logger };

const eventIdOf = (m: JsMsg) =>
  m.headers?.get(EVENT_ID_HEADER) || m.headers?.get("Nats-Msg-Id") || `${m.info.stream}:${m.seq}`;

const metaOf = (m: JsMsg): EventMeta => ({
  eventId: eventIdOf(m),
  subject: m.subject,
  deliveryCount: m.info.deliveryCount,
  time: new Date(Math.floor(m.info.timestampNanos / 1e6)),
});

/**
 * Keeps a listener bound to the stream that holds its subject: waits for the owner to create
 * the stream, binds, consumes until stopped, and binds again after anything goes wrong.
 */
export function runListener(
  name: string,
  subject: string,
  deps: Deps,
  bind: (stream: string) => Promise<AsyncIterable<JsMsg> & { close(): Promise<unknown> }>,
  handle: (m: JsMsg) => Promise<void>,
): RunningListener {
  const log = deps.log.child({ listener: name });
  const stopping = new AbortController();
  // The messages being read; set exactly while bound.
  let messages: { close(): Promise<unknown> } | undefined;
  let warned = false;
  const loop = (async () => {
    let delay = 200;
    while (!stopping.signal.aborted) {
      try {
        const stream = await deps.jsm.streams.find(subject);
        const iter = await bind(stream);
        if (stopping.signal.aborted) {
          // Stopped while binding: its subscription ends at once, and whatever it had pulled is
          // redelivered.
          iter.close().catch(() => {});
          break;
        }
        messages = iter;
        warned = false;
        delay = 200;
        log.debug({ stream, subject }, "bound");
        for await (const m of iter) {
          await handle(m).catch((err) => log.error({ err }, "failed to settle a message"));
        }
      } catch (err) {
        if (stopping.signal.aborted) break;
        // Usually the producer has not declared its stream yet: normal while a mesh starts.
        if (!warned) log.warn({ err: (err as Error).message, subject }, "not bound; retrying");
        warned = true;
      } finally {
        // A stop closes only messages being read: nats.js settles their close() as they are.
        messages = undefined;
      }
      if (stopping.signal.aborted) break;
      await sleep(delay, stopping.signal);
      delay = Math.min(delay * 2, 5_000);
    }
  })();
  return {
    name,
    bound: () => messages !== undefined,
    async stop() {
      stopping.abort();
      await messages?.close().catch(() => {});
      await loop;
    },
  };
}

/**
 * A pool's connections for consumer transactions: at most all but two, shared by every consumer
 * of the pool, so that parallel handlers neither starve the calls the service serves nor fail on
 * the pool's connect timeout while others hold the connections.
 */
const consumerSlots = new WeakMap<Pool, { free: number; waiters: Array<() => void> }>();

async function withConsumerSlot<T>(pool: Pool, fn: () => Promise<T>): Promise<T> {
  let slots = consumerSlots.get(pool);
  if (!slots) {
    slots = { free: Math.max(1, (pool.options.max ?? 10) - 2), waiters: [] };
    consumerSlots.set(pool, slots);
  }
  const s = slots;
  if (s.free > 0) s.free--;
  else await new Promise<void>((resolve) => s.waiters.push(resolve));
  try {
    return await fn();
  } finally {
    // The slot passes straight to the next waiter, or back to the pool of free ones.
    const next = s.waiters.shift();
    if (next) next();
    else s.free++;
  }
}

/**
 * Runs a durable JetStream consumer: explicit acks, idempotent by event id (a processed_events
 * row written in the handler's transaction), retries with backoff, and after maxDeliver
 * failures a dead letter pointing at the event. Up to `concurrency` events run at once, one at
 * a time per `orderKey`; a stop waits for the handlers running and hands the rest back.
 */
export function startConsumer(
  spec: ConsumerSpec,
  deps: Deps & { pool: Pool; beforeAck?: (eventId: string) => Promise<void> },
): RunningListener {
  const { js, jsm, pool } = deps;
  const log = deps.log.child({ consumer: spec.durable });
  const subject = subjectOf(spec.event);
  const maxDeliver = spec.maxDeliver ?? 5;
  const backoffMs = spec.backoffMs ?? [1_000, 5_000, 30_000, 60_000];
  const concurrency = spec.concurrency ?? 8;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) {
    throw new Error(`${spec.durable}: concurrency must be an integer from 1 to 256`);
  }
  // Messages held at once (running, waiting for their key or a slot): more than the slots, so
  // that one slow key does not keep the others from being pulled. A delayed consumer holds
  // everything that arrives within its delay: a bound of a few dozen would let it handle no
  // more than that per delay (32 chat emails decided per 30 s, the rest redelivered).
  const holdLimit = spec.delayMs ? DELAYED_HOLD_LIMIT : Math.max(32, concurrency * 4);
  const ackWaitMs = spec.ackWaitMs ?? 30_000;
  const config = {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: subject,
    ack_wait: ackWaitMs * 1e6,
    // The server's own bound, in case the process dies on every attempt (a poison message).
    max_deliver: maxDeliver + 1,
  };
  const counted = (outcome: string) => eventsHandled.inc({ consumer: spec.durable, outcome });

  const deadLetter = async (m: JsMsg, eventId: string, reason: string) => {
    const h = natsHeaders();
    h.set(EVENT_ID_HEADER, eventId);
    h.set(EVENT_TYPE_HEADER, m.headers?.get(EVENT_TYPE_HEADER) ?? spec.event.typeName);
    h.set(DEAD_LETTER_HEADERS.stream, m.info.stream);
    h.set(DEAD_LETTER_HEADERS.seq, String(m.seq));
    h.set(DEAD_LETTER_HEADERS.subject, m.subject);
    h.set(DEAD_LETTER_HEADERS.consumer, spec.durable);
    h.set(DEAD_LETTER_HEADERS.error, reason.replace(/[\r\n]+/g, " ").slice(0, 500));
    await js.publish(deadLetterSubject(m.info.stream, spec.durable), new Uint8Array(), {
      headers: h,
      // One dead letter per delivery of a stream message: a replayed event that fails again is a
      // new message, so it gets a dead letter of its own instead of being dropped as a duplicate.
      msgID: `${spec.durable}:${m.info.stream}:${m.seq}`,
    });
    m.term();
    counted("dead_letter");
    log.error({ eventId, reason }, "event dead-lettered");
  };

  /** An event held by this replica until it is acked, naked or dead-lettered. */
  interface Job {
    m: JsMsg;
    event: MessageShape<DescMessage>;
    key: string | undefined;
    /** Failed attempts retried in place (keyed events), on top of JetStream's deliveries. */
    retried: number;
  }

  /** Handles one attempt; returns the delay before retrying in place, if it should be. */
  const attempt = async (job: Job): Promise<number | undefined> => {
    const { m, event } = job;
    const meta = { ...metaOf(m), deliveryCount: m.info.deliveryCount + job.retried };
    let fresh = true;
    try {
      await withConsumerSlot(pool, () =>
        withTransaction(pool, async (tx) => {
          const row = await tx.query(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [spec.durable, meta.eventId],
          );
          fresh = row.rowCount !== 0;
          if (fresh) await spec.handle(event, meta, tx);
        }),
      );
    } catch (err) {
      if (meta.deliveryCount >= maxDeliver) {
        await deadLetter(m, meta.eventId, (err as Error).message ?? String(err));
        return undefined;
      }
      const delay = backoffMs[Math.min(meta.deliveryCount - 1, backoffMs.length - 1)] ?? 1_000;
      log.warn(
        { err, eventId: meta.eventId, attempt: meta.deliveryCount },
        "event handling failed; will retry",
      );
      counted("retry");
      // A keyed event keeps its place: a redelivery would come after the key's later events.
      if (job.key !== undefined) return delay;
      m.nak(delay);
      return undefined;
    }
    await deps.beforeAck?.(meta.eventId);
    m.ack();
    counted(fresh ? "ok" : "duplicate");
    return undefined;
  };

  // After a kill the connection is closed: what cannot be handed back is redelivered after ack_wait.
  const handBack = (m: JsMsg) => {
    try {
      m.nak();
    } catch {}
  };
  const stopping = new AbortController();
  // Every held event may wait on it (a delay, a retry's backoff): not a leak.
  setMaxListeners(holdLimit + concurrency + 8, stopping.signal);
  let running = 0;
  let held = 0;
  const runnable: Job[] = [];
  /** Keys with an event running or retrying, and the events of that key waiting behind it. */
  const busyKeys = new Map<string, Job[]>();
  /** Held but not running: kept alive with in-progress acks so JetStream does not redeliver them. */
  const waiting = new Set<JsMsg>();
  let wakeAdmit: (() => void) | undefined;
  const idleWaiters: Array<() => void> = [];

  const enqueue = (job: Job) => {
    waiting.add(job.m);
    runnable.push(job);
    pump();
  };
  /** Frees a held event's place. */
  const unhold = (m: JsMsg) => {
    held--;
    waiting.delete(m);
    wakeAdmit?.();
    if (held === 0) for (const wake of idleWaiters.splice(0)) wake();
  };
  /** Releases a settled event: the next of its key becomes runnable, and the slot is free. */
  const release = (job: Job) => {
    if (job.key !== undefined) {
      const next = busyKeys.get(job.key)?.shift();
      if (next) enqueue(next);
      else busyKeys.delete(job.key);
    }
    unhold(job.m);
  };
  const execute = async (job: Job) => {
    let retryIn: number | undefined;
    try {
      retryIn = await attempt(job);
    } catch (err) {
      log.error({ err }, "failed to settle a message");
    }
    running--;
    if (retryIn !== undefined && !stopping.signal.aborted) {
      job.retried++;
      waiting.add(job.m);
      pump();
      await sleep(retryIn, stopping.signal);
      if (!stopping.signal.aborted) {
        enqueue(job);
        return;
      }
    }
    if (retryIn !== undefined) handBack(job.m);
    release(job);
    pump();
  };
  function pump() {
    while (running < concurrency && runnable.length > 0 && !stopping.signal.aborted) {
      const job = runnable.shift() as Job;
      waiting.delete(job.m);
      running++;
      void execute(job);
    }
  }

  /** Takes a delivered message in once there is room; it runs when a slot and its key are free. */
  const admit = async (m: JsMsg) => {
    while (held >= holdLimit && !stopping.signal.aborted) {
      await new Promise<void>((resolve) => {
        wakeAdmit = resolve;
      });
    }
    wakeAdmit = undefined;
    if (stopping.signal.aborted) return handBack(m);
    let event: MessageShape<DescMessage>;
    let key: string | undefined;
    try {
      event = fromBinary(spec.event, m.data);
    } catch (err) {
      await deadLetter(m, eventIdOf(m), `undecodable: ${(err as Error).message}`);
      return;
    }
    try {
      key = spec.orderKey?.(event);
    } catch (err) {
      await deadLetter(m, eventIdOf(m), `no order key: ${(err as Error).message}`);
      return;
    }
    held++;
    const job: Job = { m, event, key, retried: 0 };
    const lineUp = () => {
      if (key === undefined) return enqueue(job);
      const behind = busyKeys.get(key);
      if (behind) {
        behind.push(job);
        waiting.add(m);
      } else {
        busyKeys.set(key, []);
        enqueue(job);
      }
    };
    const due = spec.delayMs ? metaOf(m).time.getTime() + spec.delayMs - Date.now() : 0;
    if (due <= 0) return lineUp();
    // Timers fire in the order they were set, so events of one key keep their order.
    waiting.add(m);
    void sleep(due, stopping.signal).then(() => {
      waiting.delete(m);
      if (!stopping.signal.aborted) return lineUp();
      handBack(m);
      unhold(m);
    });
  };

  const heartbeat = setInterval(() => {
    try {
      for (const m of waiting) m.working();
    } catch {
      // Disconnected: JetStream redelivers after ack_wait, and the dedupe makes that harmless.
    }
  }, ackWaitMs / 3);
  heartbeat.unref();

  const listener = runListener(
    spec.durable,
    subject,
    deps,
    async (stream) => {
      try {
        await jsm.consumers.info(stream, spec.durable);
        await jsm.consumers.update(stream, spec.durable, {
          ack_wait: config.ack_wait,
          max_deliver: config.max_deliver,
        });
      } catch {
        await jsm.consumers.add(stream, config);
      }
      return (await js.consumers.get(stream, spec.durable)).consume({ max_messages: holdLimit });
    },
    admit,
  );
  return {
    ...listener,
    async stop() {
      stopping.abort();
      wakeAdmit?.();
      await listener.stop();
      // What has not started goes back to JetStream at once, for this or another replica.
      const unstarted = [...runnable.splice(0), ...[...busyKeys.values()].flatMap((q) => q.splice(0))];
      for (const job of unstarted) {
        handBack(job.m);
        release(job);
      }
      if (held > 0) await new Promise<void>((resolve) => idleWaiters.push(resolve));
      clearInterval(heartbeat);
    },
  };
}

/** Runs a per-replica subscription on an ordered, ephemeral JetStream consumer. */
export function startSubscription(spec: SubscriptionSpec, deps: Deps): RunningListener {
  const subject = subjectOf(spec.event);
  let caughtUp = false;
  const log = deps.log.child({ subscription: spec.name });
  return runListener(
    spec.name,
    subject,
    deps,
    async (stream) => {
      const c = await deps.js.consumers.get(stream, {
        filterSubjects: subject,
        ...(spec.sinceMs
          ? {
              deliver_policy: DeliverPolicy.StartTime,
              opt_start_time: new Date(Date.now() - spec.sinceMs).toISOString(),
            }
          : { deliver_policy: DeliverPolicy.New }),
      });
      // Before consume(): once messages are pulled into the client's buffer the server counts
      // them as delivered, and num_pending would say "caught up" before any was handled.
      const pending = (await c.info()).num_pending;
      const messages = await c.consume();
      if (!caughtUp && pending === 0) {
        caughtUp = true;
        spec.onCaughtUp?.();
      }
      return messages;
    },
    async (m) => {
      try {
        await spec.handle(fromBinary(spec.event, m.data), metaOf(m));
        eventsHandled.inc({ consumer: spec.name, outcome: "ok" });
      } catch (err) {
        eventsHandled.inc({ consumer: spec.name, outcome: "error" });
        log.error({ err, eventId: eventIdOf(m) }, "subscription handler failed");
      }
      if (!caughtUp && m.info.pending === 0) {
        caughtUp = true;
        spec.onCaughtUp?.();
      }
    },
  );
}
