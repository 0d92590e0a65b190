// Reads what services published to their JetStream streams, for tests that check events.
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { subjectOf } from "@protomesh/platform";
import { connect } from "nats";

/** Every event of this type on a stream so far (test streams are small: read them whole). */
export async function streamEvents<D extends DescMessage>(
  natsUrl: string,
  stream: string,
  schema: D,
): Promise<MessageShape<D>[]> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await nc.jetstreamManager();
    const subject = subjectOf(schema);
    const { state } = await jsm.streams.info(stream);
    const out: MessageShape<D>[] = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq }).catch(() => undefined);
      if (m?.subject === subject) out.push(fromBinary(schema, m.data));
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** Every event of this type on the AUTH stream so far. */
export const authEvents = <D extends DescMessage>(natsUrl: string, schema: D) =>
  streamEvents(natsUrl, "AUTH", schema);
