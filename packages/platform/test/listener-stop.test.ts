// A stop must end a listener whatever it is doing. nats.js settles a pull consumer's close()
// only as its messages are read, so a stop that waited for messages nobody read never ended
// (npm start's Ctrl-C right after start-up, and a mesh stopped just after a service restarted,
// each had a service stuck in its stop).
import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "@protomesh/platform";
import { runListener } from "../src/events.ts";

type Messages = ReturnType<typeof messagesClosedOnlyWhenRead>;

/**
 * Messages whose close() settles only once the iterator is read after it, as nats.js's do;
 * `ended`: they end by themselves at once (the consumer went away), and a close never settles.
 */
function messagesClosedOnlyWhenRead(ended = false) {
  let closing = false;
  let wake: (() => void) | undefined;
  let settle = () => {};
  const closed = new Promise<void>((resolve) => {
    settle = resolve;
  });
  return {
    close() {
      closing = true;
      wake?.();
      return closed;
    },
    async *[Symbol.asyncIterator]() {
      if (ended) return;
      while (!closing) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
      settle();
    },
  };
}

/** A listener whose binds are answered by the test: `binding()` resolves once one is asked for. */
function listenerWithBinds() {
  const asked: Array<(messages: Messages) => void> = [];
  let notify = () => {};
  const listener = runListener(
    "stop-test",
    "test.event",
    { jsm: { streams: { find: async () => "TEST" } }, js: {}, log: createLogger("test", "silent") } as never,
    () =>
      new Promise<Messages>((resolve) => {
        asked.push(resolve);
        notify();
      }),
    async () => {},
  );
  const binding = async () => {
    while (asked.length === 0) {
      await new Promise<void>((resolve) => {
        notify = resolve;
      });
    }
    return asked.shift() as (messages: Messages) => void;
  };
  return { listener, binding };
}

test("a listener stopped while it binds stops, though its messages close only when read", async () => {
  const { listener, binding } = listenerWithBinds();
  const bind = await binding();
  const stopped = listener.stop();
  bind(messagesClosedOnlyWhenRead());
  await stopped;
  assert.equal(listener.bound(), false);
});

test("a listener stopped between binds stops, though the messages it read last never close", async () => {
  const { listener, binding } = listenerWithBinds();
  (await binding())(messagesClosedOnlyWhenRead(true));
  // They ended: the listener comes round to bind again.
  const bind = await binding();
  const stopped = listener.stop();
  bind(messagesClosedOnlyWhenRead());
  await stopped;
  assert.equal(listener.bound(), false);
});
