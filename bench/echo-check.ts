// Temporary smoke run of the harness: bare grpc-js echo vs the naive Connect forwarder.
// Run: node --import tsx bench/echo-check.ts
import { connectJsonClient, type GetMeCall, grpcJsClient } from "./lib/clients.ts";
import { formatTable, type LoadResult, runLoad } from "./lib/load.ts";
import { type StartedProcess, startProcess } from "./lib/procs.ts";

const DURATION_MS = 3_000;
const WARMUP_MS = 500;
const MAX_REQUESTS = 200_000;
const CONCURRENCY = 32;

const procs: StartedProcess[] = [];
const clients: GetMeCall[] = [];
try {
  const echo = await startProcess("bench/servers/echo.ts", {});
  procs.push(echo);
  const forwarder = await startProcess("bench/servers/naive-forwarder.ts", {
    ECHO_URL: `http://127.0.0.1:${echo.port}`,
  });
  procs.push(forwarder);

  const direct = grpcJsClient(`127.0.0.1:${echo.port}`);
  const viaForwarder = connectJsonClient(`http://127.0.0.1:${forwarder.port}`, {
    headers: { authorization: "Bearer bench-token" },
  });
  clients.push(direct, viaForwarder);

  const results: LoadResult[] = [];
  for (const [name, call] of [
    ["grpc-js → echo", direct],
    ["connect json → naive forwarder → echo", viaForwarder],
  ] as const) {
    results.push(
      await runLoad({
        name,
        concurrency: CONCURRENCY,
        durationMs: DURATION_MS,
        warmupMs: WARMUP_MS,
        maxRequests: MAX_REQUESTS,
        call,
      }),
    );
  }
  console.log(formatTable(results, "grpc-js → echo"));
} finally {
  for (const client of clients) client.close();
  await Promise.all(procs.map((p) => p.stop()));
}
