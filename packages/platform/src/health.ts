import type * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "./logger.ts";

/** A named dependency check; true when the dependency answers. */
export type HealthCheck = { name: string; check: () => Promise<boolean> };

/**
 * grpc.health.v1 for a server: SERVING only while every dependency check passes, re-evaluated
 * on an interval so that probes and balancers see an outage within seconds.
 */
export function createHealth(serviceNames: string[], checks: HealthCheck[], log: Logger, intervalMs = 2_000) {
  // "liveness" answers SERVING while the process runs: Kubernetes liveness probes ask for it, so
  // a database outage makes pods unready (""), never restarts them.
  const impl = new HealthImplementation({ "": "NOT_SERVING", liveness: "SERVING" });
  let timer: NodeJS.Timeout | undefined;
  let draining = false;
  let last: boolean | undefined;
  const set = (status: "SERVING" | "NOT_SERVING") => {
    for (const name of ["", ...serviceNames]) impl.setStatus(name, status);
  };
  const evaluate = async () => {
    const results = await Promise.all(checks.map((c) => c.check().catch(() => false)));
    const healthy = results.every(Boolean);
    if (draining) return;
    if (healthy !== last) {
      const failing = checks.filter((_, i) => !results[i]).map((c) => c.name);
      if (healthy) log.info("serving");
      else log.warn({ failing }, "not serving");
      last = healthy;
    }
    set(healthy ? "SERVING" : "NOT_SERVING");
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
      set("NOT_SERVING");
    },
  };
}
