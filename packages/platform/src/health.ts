import type * as grpc from "@grpc/grpc-js";
import { Health, HealthCheckResponse_ServingStatus } from "@protomesh/contracts/grpc/health/v1/health_pb";
import { HealthImplementation } from "grpc-health-check";
import { createServiceClient } from "./client.ts";
import { Code, type ConnectError } from "./errors.ts";
import type { Logger } from "./logger.ts";

/** A named dependency check; true when the dependency answers. */
export type HealthCheck = { name: string; check: () => Promise<boolean> };

/** Health names besides "" and the service names. */
export const HEALTH = {
  /** Always SERVING while the process runs: what liveness and startup probes ask. */
  liveness: "liveness",
  /** NATS and every consumer and subscription bound: the event-driven parts, apart from readiness. */
  events: "events",
} as const;

/**
 * grpc.health.v1 for a server, re-evaluated on an interval so probes and balancers see a change
 * within seconds. "" and the service names (readiness) are SERVING while the service can serve
 * its calls: the `ready` checks (its database). A NATS outage does not make it unready, since the
 * outbox absorbs it: it shows under "events", in metrics and in logs.
 */
export function createHealth(
  serviceNames: string[],
  checks: { ready: HealthCheck[]; events: () => HealthCheck[] },
  log: Logger,
  intervalMs = 2_000,
) {
  const impl = new HealthImplementation({ "": "NOT_SERVING", [HEALTH.liveness]: "SERVING" });
  let timer: NodeJS.Timeout | undefined;
  let draining = false;
  const last: Record<string, boolean | undefined> = {};
  const run = async (group: string, list: HealthCheck[]) => {
    const results = await Promise.all(list.map((c) => c.check().catch(() => false)));
    const ok = results.every(Boolean);
    if (ok !== last[group]) {
      const failing = list.filter((_, i) => !results[i]).map((c) => c.name);
      if (ok) log.info({ health: group }, "serving");
      // At start, listeners are still binding: that is expected, not a warning.
      else if (last[group] === undefined) log.info({ health: group, failing }, "not serving yet");
      else log.warn({ health: group, failing }, "not serving");
      last[group] = ok;
    }
    return ok ? "SERVING" : "NOT_SERVING";
  };
  const evaluate = async () => {
    const [ready, events] = await Promise.all([run("ready", checks.ready), run("events", checks.events())]);
    if (draining) return;
    for (const name of ["", ...serviceNames]) impl.setStatus(name, ready);
    impl.setStatus(HEALTH.events, events);
  };
  return {
    addTo(server: grpc.Server) {
      impl.addToServer(server);
    },
    /** Evaluates now, then on the interval. */
    async start() {
      await evaluate();
      timer = setInterval(() => void evaluate(), intervalMs);
      timer.unref();
    },
    /** NOT_SERVING for good: the first step of a graceful shutdown. */
    drain() {
      draining = true;
      clearInterval(timer);
      for (const name of ["", ...serviceNames, HEALTH.events]) impl.setStatus(name, "NOT_SERVING");
    },
  };
}

/** A grpc.health.v1 client, for readiness checks across the mesh and for tests. */
export function createHealthClient(target: string) {
  const client = createServiceClient(Health, target);
  return {
    /** The status of `service` ("" for the whole server), or "UNREACHABLE" when it does not answer in time. */
    check: (service = "", timeoutMs = 1_000) =>
      client.check({ service }, { timeoutMs }).then(
        (res) => HealthCheckResponse_ServingStatus[res.status],
        (err: ConnectError) => (err.code === Code.NotFound ? "SERVICE_UNKNOWN" : "UNREACHABLE"),
      ),
    close: () => client.close(),
  };
}
