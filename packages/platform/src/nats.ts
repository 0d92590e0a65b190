import { setTimeout as delayFor } from "node:timers/promises";
import {
  connect,
  type JetStreamManager,
  type NatsConnection,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "nats";
import type { Logger } from "./logger.ts";
import { natsConnected } from "./metrics.ts";

/** Waits ms, or less if the signal aborts first; never rejects. */
export const sleep = (ms: number, signal?: AbortSignal) =>
  delayFor(ms, undefined, signal ? { signal } : {}).catch(() => {});

/**
 * A NATS connection that reconnects forever and knows whether it is connected right now. The
 * first connection is retried too (NATS may be down while a pod starts), until `signal` aborts.
 */
export async function connectNats(url: string, name: string, log: Logger, signal?: AbortSignal) {
  let nc: NatsConnection | undefined;
  let delay = 250;
  let warned = false;
  while (!nc) {
    signal?.throwIfAborted();
    try {
      // A short connect timeout: a stop must not wait 20 s for a host that drops packets.
      nc = await connect({
        servers: url,
        name,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        timeout: 2_000,
      });
    } catch (err) {
      if (!warned) log.warn({ err: (err as Error).message, url }, "nats unreachable; retrying");
      warned = true;
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 5_000);
    }
  }
  const conn = nc;
  let connected = true;
  void (async () => {
    for await (const s of conn.status()) {
      if (s.type === "disconnect") {
        connected = false;
        natsConnected.set(0);
        log.warn("nats disconnected");
      } else if (s.type === "reconnect") {
        connected = true;
        natsConnected.set(1);
        log.info("nats reconnected");
      }
    }
  })();
  natsConnected.set(1);
  if (warned) log.info("nats connected");
  return { nc: conn, isConnected: () => connected && !conn.isClosed() };
}

/**
 * A JetStream stream as its owner declares it. The owning service creates it at start and
 * updates it when the declaration changes; consumers only look streams up, never create them.
 */
export interface StreamSpec {
  /** e.g. "AUTH". */
  name: string;
  /** e.g. ["auth.>"]: every event the owner emits must fall under one of these. */
  subjects: string[];
  /** How long an event is kept. Events that carry secrets (codes) must not outlive them. */
  maxAgeMs: number;
  /** Replicas in a NATS cluster; the deployment's NATS_STREAM_REPLICAS when unset. */
  replicas?: number;
  /** Window in which a republished event id is dropped as a duplicate (default 2 min, at most maxAgeMs). */
  duplicateWindowMs?: number;
}

const MS = 1e6; // JetStream durations are nanoseconds.

/** Checks a declaration once, where it is written. */
export function defineStream(spec: StreamSpec): StreamSpec {
  if (!/^[A-Z][A-Z0-9_]*$/.test(spec.name)) throw new Error(`stream name "${spec.name}" must be UPPER_SNAKE`);
  if (spec.subjects.length === 0) throw new Error(`stream ${spec.name} has no subjects`);
  if (!(spec.maxAgeMs > 0)) throw new Error(`stream ${spec.name} needs a positive maxAgeMs`);
  return spec;
}

/**
 * Dead letters of a stream live in a companion stream with the same retention and carry no
 * payload, only where the event is (stream and sequence) and why it failed: nothing in them
 * outlives the event, and a secret never lands in a second place.
 */
export const deadLetterStream = (stream: string) => `${stream}_DLQ`;
export const deadLetterSubject = (stream: string, durable: string) => `dlq.${stream}.${durable}`;

function streamConfig(spec: StreamSpec, defaultReplicas: number): Partial<StreamConfig> & { name: string } {
  const duplicateWindowMs = Math.min(spec.duplicateWindowMs ?? 120_000, spec.maxAgeMs);
  return {
    name: spec.name,
    subjects: spec.subjects,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    max_age: spec.maxAgeMs * MS,
    num_replicas: spec.replicas ?? defaultReplicas,
    duplicate_window: duplicateWindowMs * MS,
  };
}

/** Creates the stream, or updates it when its declaration changed (idempotent across replicas). */
async function ensureOne(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
  log: Logger,
) {
  let info: Awaited<ReturnType<JetStreamManager["streams"]["info"]>> | undefined;
  try {
    info = await jsm.streams.info(config.name);
  } catch {
    try {
      await jsm.streams.add(config);
      log.info({ stream: config.name }, "created stream");
      return;
    } catch (err) {
      // Another replica may have created it between our two calls.
      info = await jsm.streams.info(config.name).catch(() => {
        throw err;
      });
    }
  }
  const current = info.config;
  // JetStream cannot change these in place: say so rather than fail obscurely or ignore it.
  for (const k of ["storage", "retention"] as const) {
    if (current[k] !== config[k]) {
      throw new Error(
        `stream ${config.name} has ${k} "${current[k]}" but is declared "${config[k]}"; JetStream cannot change that in place: remove the stream (nats stream rm ${config.name}) and start again`,
      );
    }
  }
  const changed: string[] = (["max_age", "num_replicas", "duplicate_window"] as const).filter(
    (k) => current[k] !== config[k],
  );
  if (JSON.stringify([...current.subjects].sort()) !== JSON.stringify([...(config.subjects ?? [])].sort())) {
    changed.push("subjects");
  }
  if (changed.length === 0) return;
  await jsm.streams.update(config.name, {
    ...current,
    subjects: config.subjects ?? current.subjects,
    max_age: config.max_age ?? current.max_age,
    num_replicas: config.num_replicas ?? current.num_replicas,
    duplicate_window: config.duplicate_window ?? current.duplicate_window,
  });
  log.info({ stream: config.name, changed }, "updated stream to its declaration");
}

/**
 * Before streams were declared, one stream "DLQ" on `dlq.>` kept full copies of failed events
 * for 30 days. Its subjects overlap the dead-letter streams of today, and the copies may hold
 * secrets: it goes.
 */
async function removeLegacyDeadLetters(jsm: JetStreamManager, log: Logger) {
  const legacy = await jsm.streams.info("DLQ").catch(() => undefined);
  if (!legacy?.config.subjects.includes("dlq.>")) return;
  await jsm.streams.delete("DLQ").catch(() => {});
  log.warn({ messages: legacy.state.messages }, "removed the legacy DLQ stream (full event copies)");
}

/** Creates or updates a service's declared streams, each with its dead-letter companion. */
export async function ensureStreams(
  jsm: JetStreamManager,
  specs: StreamSpec[],
  log: Logger,
  defaultReplicas = 1,
) {
  if (specs.length > 0) await removeLegacyDeadLetters(jsm, log);
  for (const spec of specs) {
    await ensureOne(jsm, streamConfig(spec, defaultReplicas), log);
    const deadLetters = { name: deadLetterStream(spec.name), subjects: [deadLetterSubject(spec.name, ">")] };
    await ensureOne(jsm, streamConfig({ ...spec, ...deadLetters }, defaultReplicas), log);
  }
}

/** True when a NATS subject matches a pattern with `*` (one token) and `>` (the rest). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

export type { NatsConnection };
