import { runMain } from "@protomesh/platform";
import { userModule } from "./app.ts";

await runMain(userModule);
