import { randomUUID } from "node:crypto";
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
  await tx.query("INSERT INTO outbox (id, subject, type, payload) VALUES ($1, $2, $3, $4)", [
    id,
    subjectOf(schema),
    schema.typeName,
    Buffer.from(toBinary(schema, create(schema, init))),
  ]);
  await tx.query("SELECT pg_notify('outbox', '')");
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
        await sleep(pollMs);
      }
    }
  };

  return {
    async start() {
      running = true;
      const client = await pool.connect();
      client.on("notification", () => wake?.());
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
  maxDeliver?: number;
  backoffMs?: number[];
  ackWaitMs?: number;
}

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
function runListener(
  name: string,
  subject: string,
  deps: Deps,
  bind: (stream: string) => Promise<AsyncIterable<JsMsg> & { close(): Promise<unknown> }>,
  handle: (m: JsMsg) => Promise<void>,
): RunningListener {
  const log = deps.log.child({ listener: name });
  const stopping = new AbortController();
  let messages: { close(): Promise<unknown> } | undefined;
  let bound = false;
  let warned = false;
  const loop = (async () => {
    let delay = 200;
    while (!stopping.signal.aborted) {
      try {
        const stream = await deps.jsm.streams.find(subject);
        const iter = await bind(stream);
        messages = iter;
        if (stopping.signal.aborted) await iter.close();
        bound = true;
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
      }
      bound = false;
      if (stopping.signal.aborted) break;
      await sleep(delay, stopping.signal);
      delay = Math.min(delay * 2, 5_000);
    }
  })();
  return {
    name,
    bound: () => bound,
    async stop() {
      stopping.abort();
      await messages?.close().catch(() => {});
      await loop;
    },
  };
}

/**
 * Runs a durable JetStream consumer: explicit acks, idempotent by event id (a processed_events
 * row written in the handler's transaction), retries with backoff, and after maxDeliver
 * failures a dead letter pointing at the event.
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
  const config = {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: subject,
    ack_wait: (spec.ackWaitMs ?? 30_000) * 1e6,
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

  const handleOne = async (m: JsMsg) => {
    const meta = metaOf(m);
    let event: MessageShape<DescMessage>;
    try {
      event = fromBinary(spec.event, m.data);
    } catch (err) {
      await deadLetter(m, meta.eventId, `undecodable: ${(err as Error).message}`);
      return;
    }
    let fresh = true;
    try {
      await withTransaction(pool, async (tx) => {
        const row = await tx.query(
          "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
          [spec.durable, meta.eventId],
        );
        fresh = row.rowCount !== 0;
        if (fresh) await spec.handle(event, meta, tx);
      });
    } catch (err) {
      if (m.info.deliveryCount >= maxDeliver) {
        await deadLetter(m, meta.eventId, (err as Error).message ?? String(err));
      } else {
        const delay = backoffMs[Math.min(m.info.deliveryCount - 1, backoffMs.length - 1)] ?? 1_000;
        log.warn(
          { err, eventId: meta.eventId, attempt: m.info.deliveryCount },
          "event handling failed; will retry",
        );
        counted("retry");
        m.nak(delay);
      }
      return;
    }
    await deps.beforeAck?.(meta.eventId);
    m.ack();
    counted(fresh ? "ok" : "duplicate");
  };

  return runListener(
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
      return (await js.consumers.get(stream, spec.durable)).consume({ max_messages: 32 });
    },
    handleOne,
  );
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
