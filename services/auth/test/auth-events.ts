// Reads what auth published to its JetStream stream, for tests that check events.
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { subjectOf } from "@protomesh/platform";
import { connect } from "nats";

/** Every event of this type on the AUTH stream so far (test streams are small: read them whole). */
export async function authEvents<D extends DescMessage>(
  natsUrl: string,
  schema: D,
): Promise<MessageShape<D>[]> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await nc.jetstreamManager();
    const subject = subjectOf(schema);
    const { state } = await jsm.streams.info("AUTH");
    const out: MessageShape<D>[] = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage("AUTH", { seq }).catch(() => undefined);
      if (m?.subject === subject) out.push(fromBinary(schema, m.data));
    }
    return out;
  } finally {
    await nc.close();
  }
}
