import { runMain } from "@protomesh/platform";
import { ordersModule } from "./app.ts";

await runMain(ordersModule);
