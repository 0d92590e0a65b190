// Live feeds over real NATS core: a notice published on one replica's feed reaches the
// listeners of its key on every replica, from the moment listen() resolves, and a replica stops
// hearing a key once its last listener is gone.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Nats, startNats } from "@protomesh/devkit";
import { createLiveFeed } from "@protomesh/platform";
import { within } from "@protomesh/testkit";
import { connect, type NatsConnection } from "nats";

let nats: Nats;
const conns: NatsConnection[] = [];

before(async () => {
  nats = await startNats();
});
after(async () => {
  for (const nc of conns) await nc.close();
  await nats?.stop();
});

/** A feed attached to a connection of its own, as one replica has. */
async function replica(subject: string) {
  const nc = await connect({ servers: nats.url });
  conns.push(nc);
  const feed = createLiveFeed({ subject });
  await feed.attach(nc);
  return { feed, nc };
}

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

test("a notice published on one replica reaches the key's listeners on another, and only them", async () => {
  const subject = `live.${crypto.randomUUID().slice(0, 8)}`;
  const a = await replica(subject);
  const b = await replica(subject);
  const stop = new AbortController();
  const forAda = await b.feed.listen("ada", stop.signal);
  const forBob = await b.feed.listen("bob", stop.signal);
  // Sent right after listen() resolved: the subscription is known to NATS by then.
  a.feed.publish("ada", bytes("one"));
  a.feed.publish("ada", bytes("two"));
  a.feed.publish("bob", bytes("three"));
  const first = await within(forAda.next(), 5_000, "ada's first notice");
  const second = await within(forAda.next(), 5_000, "ada's second notice");
  const bobs = await within(forBob.next(), 5_000, "bob's notice");
  assert.deepEqual(
    [first.value, second.value, bobs.value].map((v) => text(v as Uint8Array)),
    ["one", "two", "three"],
  );
  stop.abort();
});

test("a replica unsubscribes from a key when its last listener ends", async () => {
  const subject = `live.${crypto.randomUUID().slice(0, 8)}`;
  const b = await replica(subject);
  const one = new AbortController();
  const two = new AbortController();
  await b.feed.listen("ada", one.signal);
  await b.feed.listen("ada", two.signal);
  const interest = async () => {
    await b.nc.flush();
    const probe = await connect({ servers: nats.url, noEcho: true });
    try {
      // A request to the key's subject fails at once with "no responders" without interest;
      // with interest it times out (our feed never replies).
      await probe.request(`${subject}.ada`, bytes("?"), { timeout: 300 });
      return true;
    } catch (err) {
      return !String((err as Error).message).includes("503");
    } finally {
      await probe.close();
    }
  };
  assert.equal(await interest(), true);
  one.abort();
  assert.equal(await interest(), true, "still one listener");
  two.abort();
  assert.equal(await interest(), false, "no listener, no subscription");
  assert.equal(b.feed.listeners, 0);
});
