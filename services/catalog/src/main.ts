import { runMain } from "@protomesh/platform";
import { catalogModule } from "./app.ts";

await runMain(catalogModule);
