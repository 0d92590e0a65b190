// The hub that fans live values out to a replica's open streams.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError, createHub } from "@protomesh/platform";

test("an abort ends a listener's pending next() without a rejection, and removes the listener", async () => {
  const hub = createHub<string>();
  const stop = new AbortController();
  const values = hub.listen("ada", stop.signal);
  hub.publish("ada", "first");
  assert.deepEqual(await values.next(), { value: "first", done: false });
  // Held, as a stream holds it while its client is slow to read; a rejection here would be
  // unhandled and end the process.
  const pending = values.next();
  stop.abort(new ConnectError("stopping", Code.Unavailable));
  assert.deepEqual(await pending, { value: undefined, done: true });
  assert.equal(hub.has("ada"), false);
});

test("a listener that falls behind its queue limit fails with RESOURCE_EXHAUSTED", async () => {
  const hub = createHub<number>({ queueLimit: 2 });
  const values = hub.listen("bo", new AbortController().signal);
  for (let i = 0; i < 3; i++) hub.publish("bo", i);
  await assert.rejects(values.next(), (err: ConnectError) => err.code === Code.ResourceExhausted);
  assert.equal(hub.has("bo"), false);
});
