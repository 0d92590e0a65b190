import { createLogger } from "@protomesh/platform";
import { startGateway } from "./app.ts";
import { readGatewayConfig } from "./config.ts";
import { upstreamServices } from "./upstreams.ts";

let config: ReturnType<typeof readGatewayConfig>;
try {
  config = readGatewayConfig(upstreamServices);
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}
const log = createLogger("gateway", config.logLevel);
const gateway = await startGateway(config, log);
const stop = () => void gateway.stop().then(() => process.exit(0));
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
