import { runMain, startService } from "@protomesh/platform";
import { authService } from "./app.ts";
import { readAuthConfig } from "./config.ts";

await runMain(() => startService(authService(readAuthConfig())));
