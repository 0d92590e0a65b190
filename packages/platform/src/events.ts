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
import { DEAD_LETTER_STREAM, ensureStream, streamOf } from "./nats.ts";

export const EVENT_TYPE_HEADER = "Protomesh-Event-Type";

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
          return js.publish(r.subject, r.payload, { msgID: r.id, headers: h, timeout: 5_000 });
        }),
      );
      const published = rows.filter((_, i) => results[i]?.status === "fulfilled").map((r) => r.id);
      if (published.length > 0) await tx.query("DELETE FROM outbox WHERE id = ANY($1)", [published]);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) {
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

/** Delivery details a consumer handler may use. */
export interface EventMeta {
  eventId: string;
  subject: string;
  deliveryCount: number;
}

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
 * Runs a durable JetStream consumer: explicit acks, idempotent by event id (a processed_events
 * row written in the handler's transaction), retries with backoff, and after maxDeliver
 * failures the message goes to the dead-letter stream.
 */
export async function startConsumer(
  spec: ConsumerSpec,
  deps: {
    js: JetStreamClient;
    jsm: JetStreamManager;
    pool: Pool;
    log: Logger;
    beforeAck?: (eventId: string) => Promise<void>;
  },
) {
  const { js, jsm, pool } = deps;
  const log = deps.log.child({ consumer: spec.durable });
  const subject = subjectOf(spec.event);
  const stream = streamOf(subject);
  const maxDeliver = spec.maxDeliver ?? 5;
  const backoffMs = spec.backoffMs ?? [1_000, 5_000, 30_000, 60_000];
  await ensureStream(jsm, stream, [`${stream.toLowerCase()}.>`]);
  await ensureStream(jsm, DEAD_LETTER_STREAM, ["dlq.>"]);
  const config = {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: subject,
    ack_wait: (spec.ackWaitMs ?? 30_000) * 1e6,
    // The server's own bound, in case the process dies on every attempt (a poison message).
    max_deliver: maxDeliver + 1,
  };
  try {
    await jsm.consumers.info(stream, spec.durable);
    await jsm.consumers.update(stream, spec.durable, {
      ack_wait: config.ack_wait,
      max_deliver: config.max_deliver,
    });
  } catch {
    await jsm.consumers.add(stream, config);
  }
  const c = await js.consumers.get(stream, spec.durable);
  const messages = await c.consume({ max_messages: 32 });

  const deadLetter = async (m: JsMsg, eventId: string, reason: string) => {
    const h = natsHeaders();
    for (const [k, v] of m.headers ?? []) for (const value of v) if (k !== "Nats-Msg-Id") h.append(k, value);
    h.set("Protomesh-Original-Subject", m.subject);
    h.set("Protomesh-Error", reason.slice(0, 500));
    await js.publish(`dlq.${spec.durable}`, m.data, { headers: h, msgID: `${spec.durable}:${eventId}` });
    m.term();
    log.error({ eventId, reason }, "event dead-lettered");
  };

  const handleOne = async (m: JsMsg) => {
    const eventId = m.headers?.get("Nats-Msg-Id") || `${stream}:${m.seq}`;
    let event: MessageShape<DescMessage>;
    try {
      event = fromBinary(spec.event, m.data);
    } catch (err) {
      await deadLetter(m, eventId, `undecodable: ${(err as Error).message}`);
      return;
    }
    try {
      await withTransaction(pool, async (tx) => {
        const fresh = await tx.query(
          "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
          [spec.durable, eventId],
        );
        if (fresh.rowCount === 0) return;
        await spec.handle(event, { eventId, subject: m.subject, deliveryCount: m.info.deliveryCount }, tx);
      });
    } catch (err) {
      if (m.info.deliveryCount >= maxDeliver) {
        await deadLetter(m, eventId, (err as Error).message ?? String(err));
      } else {
        const delay = backoffMs[Math.min(m.info.deliveryCount - 1, backoffMs.length - 1)] ?? 1_000;
        log.warn({ err, eventId, attempt: m.info.deliveryCount }, "event handling failed; will retry");
        m.nak(delay);
      }
      return;
    }
    await deps.beforeAck?.(eventId);
    m.ack();
  };

  const loop = (async () => {
    for await (const m of messages) {
      await handleOne(m).catch((err) => log.error({ err }, "consumer failed to settle a message"));
    }
  })();

  return {
    async stop() {
      await messages.close();
      await loop;
    },
  };
}
