import { runMain } from "@protomesh/platform";
import { authModule } from "./app.ts";

await runMain(authModule);
