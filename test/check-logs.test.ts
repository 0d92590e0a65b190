// The leak check that ends `npm test` finds what it must and nothing else.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { findLeaks } from "../scripts/check-logs.ts";

function logs(files: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), "logs-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return { dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) };
}

test("a remembered password, code or token in a log line is found, with where but not what", () => {
  using l = logs({
    "secrets-1.txt": "correct horse battery staple\n493817\nrefreshABCdef123\n",
    "1.ndjson": [
      '{"msg":"ok","ms":493.8}',
      '{"msg":"login","body":"pw=correct horse battery staple"}',
      '{"msg":"sent","text":"your code is 493817."}',
      '{"msg":"x","refresh":"refreshABCdef123"}',
    ].join("\n"),
  });
  const leaks = findLeaks(l.dir);
  assert.deepEqual(
    leaks.map((x) => x.split(":").slice(0, 2).join(":")),
    ["1.ndjson:2", "1.ndjson:3", "1.ndjson:4"],
  );
  assert.ok(leaks.every((x) => !x.includes("493817") && !x.includes("horse")));
});

test("anything shaped like a JWT or a bcrypt hash is a leak even if no test remembered it", () => {
  using l = logs({
    "2.ndjson": [
      '{"msg":"t","v":"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlc2ln"}',
      `{"msg":"h","v":"$2b$10$${"a".repeat(53)}"}`,
      '{"msg":"clean","n":1234567}',
    ].join("\n"),
  });
  assert.deepEqual(findLeaks(l.dir), ["2.ndjson:1: a JWT", "2.ndjson:2: a bcrypt hash"]);
});
