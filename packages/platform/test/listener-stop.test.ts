// A stop that lands while a listener binds to its stream: nats.js settles a pull consumer's
// close() only as its messages are read, so a stop that waited for it there never ended (npm
// start's Ctrl-C, right after start-up, had a service killed for it).
import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "@protomesh/platform";
import { runListener } from "../src/events.ts";

/** Messages whose close() settles only once the iterator is read after it, as nats.js's do. */
function closedOnlyWhenRead() {
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
      while (!closing) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
      settle();
    },
  };
}

test("a listener stopped while it binds stops, though its messages close only when read", async () => {
  let bindStarted = () => {};
  const binding = new Promise<void>((resolve) => {
    bindStarted = resolve;
  });
  let finishBind: (messages: ReturnType<typeof closedOnlyWhenRead>) => void = () => {};
  const listener = runListener(
    "stop-while-binding",
    "test.event",
    { jsm: { streams: { find: async () => "TEST" } }, js: {}, log: createLogger("test", "silent") } as never,
    () => {
      bindStarted();
      return new Promise((resolve) => {
        finishBind = resolve;
      });
    },
    async () => {},
  );
  await binding;
  const stopped = listener.stop();
  finishBind(closedOnlyWhenRead());
  await stopped;
  assert.equal(listener.bound(), false);
});
