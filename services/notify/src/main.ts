import { runMain, startService } from "@protomesh/platform";
import { notifyService, readNotifyConfig } from "./app.ts";

await runMain(() => startService(notifyService(readNotifyConfig())));
