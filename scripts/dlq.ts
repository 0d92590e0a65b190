// `npm run dlq -- list [STREAM_DLQ]` lists dead letters; `npm run dlq -- replay STREAM_DLQ SEQ`
// (or `replay --all`) publishes the events they point at again. NATS_URL picks the server
// (default nats://127.0.0.1:4222, what `npm start` runs).
import { listDeadLetters, replayDeadLetter } from "@protomesh/platform";
import { connect } from "nats";

const [command, ...args] = process.argv.slice(2);
const usage = "usage: npm run dlq -- list [STREAM_DLQ] | replay STREAM_DLQ SEQ | replay --all";
if (command !== "list" && command !== "replay") {
  console.error(usage);
  process.exit(2);
}
const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
let failed = false;
try {
  const jsm = await nc.jetstreamManager();
  if (command === "list") {
    const letters = await listDeadLetters(jsm, args[0]);
    for (const d of letters) {
      console.log(
        `${d.stream} ${d.seq}  ${d.time.toISOString()}  ${d.consumer}  ${d.eventType} ${d.eventId}  (${d.original.stream} #${d.original.seq})\n    ${d.error}`,
      );
    }
    console.log(`${letters.length} dead letter(s)`);
  } else {
    const targets =
      args[0] === "--all"
        ? (await listDeadLetters(jsm)).map((d) => [d.stream, d.seq] as const)
        : [[args[0] ?? "", Number(args[1])] as const];
    if (targets.some(([s, n]) => !s || !Number.isInteger(n))) throw new Error(usage);
    for (const [stream, seq] of targets) {
      try {
        const d = await replayDeadLetter(nc.jetstream(), jsm, stream, seq);
        console.log(`replayed ${stream} ${seq}: ${d.eventType} ${d.eventId} on ${d.subject}`);
      } catch (err) {
        failed = true;
        console.error(`${stream} ${seq}: ${(err as Error).message}`);
      }
    }
  }
} catch (err) {
  failed = true;
  console.error((err as Error).message);
} finally {
  await nc.close();
}
process.exit(failed ? 1 : 0);
