import { meshServices } from "@protomesh/mesh";
import { createLogger } from "@protomesh/platform";
import { startGateway } from "./app.ts";
import { readGatewayConfig } from "./config.ts";

let config: ReturnType<typeof readGatewayConfig>;
try {
  config = readGatewayConfig(meshServices);
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}
const log = createLogger("gateway", config.logLevel);
const gateway = await startGateway(config, log);
const stop = () =>
  void gateway.stop().then(
    () => process.exit(0),
    (err: unknown) => {
      log.error({ err }, "shutdown failed");
      process.exit(1);
    },
  );
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
