import { runMain } from "@protomesh/platform";
import { chatModule } from "./app.ts";

await runMain(chatModule);
