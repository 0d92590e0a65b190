import { runMain } from "@protomesh/platform";
import { notifyModule } from "./app.ts";

await runMain(notifyModule);
