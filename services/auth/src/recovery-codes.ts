// One-time recovery codes: the way back in when the phone or the mailbox is lost.
import { createHash, randomInt } from "node:crypto";

/** How many codes an account gets when its first factor is turned on. */
export const RECOVERY_CODE_COUNT = 10;

// No 0/o, 1/l/i: codes are read off paper and typed by hand.
const ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz";
const GROUPS = 3;
const GROUP_LEN = 4;

/** Ten fresh codes like "4f9k-2m7x-q8td" (about 59 bits each, from the CSPRNG). */
export function newRecoveryCodes(): string[] {
  return Array.from({ length: RECOVERY_CODE_COUNT }, () =>
    Array.from({ length: GROUPS }, () =>
      Array.from({ length: GROUP_LEN }, () => ALPHABET[randomInt(ALPHABET.length)]).join(""),
    ).join("-"),
  );
}

/**
 * The stored form of a code: SHA-256 of it without case, spaces or dashes, so "4F9K 2M7X Q8TD"
 * matches too. A plain hash suffices because the codes are random, not chosen by people.
 */
export function hashRecoveryCode(code: string): Buffer {
  const plain = code.toLowerCase().replace(/[\s-]/g, "");
  return createHash("sha256").update(plain).digest();
}
