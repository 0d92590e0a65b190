import { runMain, startService } from "@protomesh/platform";
import { readUserConfig, userService } from "./app.ts";

await runMain(() => startService(userService(readUserConfig())));
