import { metrics } from "@protomesh/platform";
import { Counter } from "prom-client";

/** Issues by purpose and outcome: a rise in "refused" is someone asking for codes too often. */
export const otpIssues = new Counter({
  name: "protomesh_otp_issues_total",
  help: "Issue calls by purpose and outcome (issued, refused by the cooldown or hourly cap).",
  labelNames: ["purpose", "outcome"],
  registers: [metrics],
});

/** Verifies by purpose and result: a rise in wrong-code and locked is someone guessing. */
export const otpVerifies = new Counter({
  name: "protomesh_otp_verifies_total",
  help: "Verify calls by purpose and result (verified, wrong-code, no-code, locked).",
  labelNames: ["purpose", "result"],
  registers: [metrics],
});
