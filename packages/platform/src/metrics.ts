import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";

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
