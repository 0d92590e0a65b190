import { createServer, type Server } from "node:http";
import { status as grpcStatus } from "@grpc/grpc-js";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** One registry per process: default Node metrics (event-loop lag included) plus ours. */
export const metrics = new Registry();
collectDefaultMetrics({ register: metrics });

export const rpcHandled = new Counter({
  name: "grpc_server_handled_total",
  help: "RPCs completed, by method and status code.",
  labelNames: ["service", "method", "code"],
  registers: [metrics],
});

export const rpcSeconds = new Histogram({
  name: "grpc_server_handling_seconds",
  help: "Time to handle an RPC.",
  labelNames: ["service", "method"],
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [metrics],
});

export const natsConnected = new Gauge({
  name: "protomesh_nats_connected",
  help: "1 while this process is connected to NATS; an outage is absorbed by the outbox.",
  registers: [metrics],
});

export const outboxPublished = new Counter({
  name: "protomesh_outbox_published_total",
  help: "Events the outbox relay published to JetStream.",
  registers: [metrics],
});

export const outboxFailures = new Counter({
  name: "protomesh_outbox_publish_failures_total",
  help: "Outbox publish attempts that failed (NATS unreachable); the events stay and are retried.",
  registers: [metrics],
});

export const eventsHandled = new Counter({
  name: "protomesh_events_handled_total",
  help: "Events handled by consumers and subscriptions, by outcome (ok, retry, dead_letter, duplicate).",
  labelNames: ["consumer", "outcome"],
  registers: [metrics],
});

/**
 * The one spelling of a status code in logs and metrics: gRPC's canonical names
 * (OK, INVALID_ARGUMENT, …), whichever protocol the call came in on.
 */
export function statusName(code: number): string {
  return grpcStatus[code] ?? String(code);
}

/** Serves GET /metrics in the Prometheus text format; resolves with the bound port. */
export async function startMetricsServer(
  host: string,
  port: number,
): Promise<{ port: number; server: Server }> {
  const server = createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    metrics.metrics().then(
      (body) => res.writeHead(200, { "content-type": metrics.contentType }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  return { port: typeof address === "object" && address ? address.port : port, server };
}
