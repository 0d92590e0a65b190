import { runMain } from "@protomesh/platform";
import { otpModule } from "./app.ts";

await runMain(otpModule);
