import { randomUUID } from "node:crypto";
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { EVENT_ID_HEADER, EVENT_TYPE_HEADER, subjectOf } from "@protomesh/platform";
import { connect, headers } from "nats";
import pg from "pg";

/** Publishes an event as a service's outbox relay would (id and type headers); returns its id. */
export async function publishEvent<D extends DescMessage>(
  natsUrl: string,
  schema: D,
  init: MessageInitShape<D>,
): Promise<string> {
  const nc = await connect({ servers: natsUrl });
  try {
    const id = randomUUID();
    const h = headers();
    h.set(EVENT_ID_HEADER, id);
    h.set(EVENT_TYPE_HEADER, schema.typeName);
    await nc
      .jetstream()
      .publish(subjectOf(schema), toBinary(schema, create(schema, init)), { msgID: id, headers: h });
    return id;
  } finally {
    await nc.close();
  }
}

/** One query against a service's database on a short-lived connection. */
export async function query<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}
