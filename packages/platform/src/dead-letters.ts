import { type JetStreamClient, type JetStreamManager, headers as natsHeaders } from "nats";
import { DEAD_LETTER_HEADERS, EVENT_ID_HEADER, EVENT_TYPE_HEADER } from "./events.ts";

/** A dead letter: an event a consumer gave up on, and where the event itself still is. */
export interface DeadLetter {
  /** The dead-letter stream and sequence, e.g. AUTH_DLQ 3: what `replay` takes. */
  stream: string;
  seq: number;
  time: Date;
  consumer: string;
  eventId: string;
  eventType: string;
  subject: string;
  error: string;
  original: { stream: string; seq: number };
}

/** Every dead letter in every dead-letter stream (or in one), oldest first. */
export async function listDeadLetters(jsm: JetStreamManager, only?: string): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  for await (const info of jsm.streams.list()) {
    const name = info.config.name;
    if (!name.endsWith("_DLQ") || (only && name !== only)) continue;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(name, { seq }).catch(() => undefined);
      if (!m) continue; // deleted (replayed) or expired
      const h = (k: string) => m.header.get(k) ?? "";
      out.push({
        stream: name,
        seq,
        time: m.time,
        consumer: h(DEAD_LETTER_HEADERS.consumer),
        eventId: h(EVENT_ID_HEADER),
        eventType: h(EVENT_TYPE_HEADER),
        subject: h(DEAD_LETTER_HEADERS.subject),
        error: h(DEAD_LETTER_HEADERS.error),
        original: { stream: h(DEAD_LETTER_HEADERS.stream), seq: Number(h(DEAD_LETTER_HEADERS.seq)) },
      });
    }
  }
  return out;
}

/**
 * Publishes the event a dead letter points at again on its subject, then removes the dead
 * letter. Every consumer of the subject receives it; those that handled it already skip it by
 * its event id. Fails when the event has left its stream (its retention passed).
 */
export async function replayDeadLetter(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  seq: number,
): Promise<DeadLetter> {
  const letter = (await listDeadLetters(jsm, stream)).find((d) => d.seq === seq);
  if (!letter) throw new Error(`no dead letter ${stream} ${seq}`);
  const event = await jsm.streams
    .getMessage(letter.original.stream, { seq: letter.original.seq })
    .catch(() => {
      throw new Error(
        `event ${letter.eventId} is no longer in ${letter.original.stream} (its retention passed); it cannot be replayed`,
      );
    });
  const h = natsHeaders();
  h.set(EVENT_ID_HEADER, letter.eventId);
  h.set(EVENT_TYPE_HEADER, letter.eventType);
  // No Nats-Msg-Id: a replay inside the duplicate window must not be dropped as a duplicate.
  await js.publish(event.subject, event.data, { headers: h });
  await jsm.streams.deleteMessage(stream, seq);
  return letter;
}
