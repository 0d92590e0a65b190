// After `npm test`: searches every log line the run wrote for the secrets tests remembered
// (passwords, one-time codes, tokens) and for anything shaped like a JWT or a bcrypt hash.
// Reports where, never what.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const SHAPES: [string, RegExp][] = [
  ["a JWT", /eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}/],
  ["a bcrypt hash", /\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}/],
];
const WORD = /[\w-]+/g;

/** Returns one line per leak found in the logs under dir (empty when clean). */
export function findLeaks(dir: string): string[] {
  const files = existsSync(dir) ? readdirSync(dir) : [];
  const secrets = new Set<string>();
  for (const f of files.filter((f) => f.startsWith("secrets-"))) {
    for (const s of readFileSync(join(dir, f), "utf8").split("\n")) if (s) secrets.add(s);
  }
  // Secrets made of one "word" are found by lookup; the rest (passphrases) by substring.
  const phrases = [...secrets].filter((s) => s.match(WORD)?.[0] !== s);
  const leaks: string[] = [];
  for (const f of files.filter((f) => f.endsWith(".ndjson"))) {
    readFileSync(join(dir, f), "utf8")
      .split("\n")
      .forEach((line, i) => {
        const where = `${f}:${i + 1}`;
        for (const [what, shape] of SHAPES) if (shape.test(line)) leaks.push(`${where}: ${what}`);
        if (line.match(WORD)?.some((w) => secrets.has(w)) || phrases.some((p) => line.includes(p))) {
          leaks.push(`${where}: a secret a test used (password, code or token)`);
        }
      });
  }
  return leaks;
}
