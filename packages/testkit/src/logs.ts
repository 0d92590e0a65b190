// Every log line a test run writes is kept, so the run can prove that no password, code or
// token ever reached a log: `npm test` sets PROTOMESH_TEST_LOG_DIR, the loggers of every mesh
// write there at debug level, tests remember the secrets they handle, and scripts/test.ts
// searches the logs for them when the tests are done.
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createLogger, type Logger } from "@protomesh/platform";
import { pino } from "pino";

export const TEST_LOG_DIR_ENV = "PROTOMESH_TEST_LOG_DIR";

const dir = process.env[TEST_LOG_DIR_ENV];
let destination: pino.DestinationStream | undefined;

/** The level loggers run at: debug while capturing (everything is searched), else TEST_LOG_LEVEL. */
export const testLogLevel = dir ? "debug" : (process.env.TEST_LOG_LEVEL ?? "silent");

/** A logger for a service or gateway started by a test. */
export function testLogger(name: string): Logger {
  if (!dir) return createLogger(name, testLogLevel);
  if (!destination) {
    mkdirSync(dir, { recursive: true });
    const file = pino.destination({ dest: join(dir, `${process.pid}.ndjson`), sync: false });
    process.once("exit", () => file.flushSync());
    destination = file;
  }
  return createLogger(name, testLogLevel, destination);
}

/** Records secrets a test handled (passwords, codes, tokens): none may appear in any log. */
export function rememberSecrets(...values: string[]): void {
  if (!dir) return;
  const lines = values.filter((v) => v.length >= 6 && !v.includes("\n")).map((v) => `${v}\n`);
  if (lines.length > 0) appendFileSync(join(dir, `secrets-${process.pid}.txt`), lines.join(""));
}
