// The one password policy of SignUp, ChangePassword and ResetPassword (NIST 800-63B: a length
// range, a blocklist, nothing about character classes).

import { Code, fail } from "@protomesh/platform";
import { dictionary } from "@zxcvbn-ts/language-common";

/** bcrypt reads at most 72 bytes: a longer password is refused rather than silently cut. */
export const MAX_PASSWORD_BYTES = 72;
export const MIN_PASSWORD_CHARS = 8;

// zxcvbn-ts's list of common passwords (about 49,000, most common first), loaded once. Entries
// are lower case, so a password is compared lower-cased: "Password1" is as guessable as "password1".
const COMMON = new Set(dictionary["passwords-common"]);

// Control characters (NUL included) are not typed by people, and C libraries stop at a NUL.
const CONTROL = /\p{Cc}/u;
const lettersAndDigits = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}]/gu, "");
const lettersOnly = (s: string) => s.toLowerCase().replace(/[^\p{L}]/gu, "");

/**
 * Passwords are compared as typed in NFC, so the same password entered on a keyboard that
 * composes "é" and on one that sends "e" + U+0301 is the same password.
 */
export const normalizePassword = (password: string) => password.normalize("NFC");

/**
 * Checks a new password against the policy and returns it NFC-normalised, ready to hash.
 * Throws INVALID_ARGUMENT naming `field` when it breaks a rule.
 */
export function checkNewPassword(password: string, email: string, field = "password"): string {
  const pw = normalizePassword(password);
  const refuse = (why: string) => fail(Code.InvalidArgument, `${field}: ${why}`);
  if ([...pw].length < MIN_PASSWORD_CHARS) throw refuse(`must be at least ${MIN_PASSWORD_CHARS} characters`);
  if (Buffer.byteLength(pw, "utf8") > MAX_PASSWORD_BYTES) {
    throw refuse(`must be at most ${MAX_PASSWORD_BYTES} bytes (UTF-8)`);
  }
  if (CONTROL.test(pw)) throw refuse("must not contain control characters");
  if (new Set(pw).size === 1) throw refuse("must not repeat a single character");
  if (COMMON.has(pw.toLowerCase()) || COMMON.has(pw.trim().toLowerCase())) {
    throw refuse("is too common; choose a less guessable password");
  }
  if (resemblesEmail(pw, email)) throw refuse("must not contain the email address");
  return pw;
}

/** The email itself, or its local part with only digits or symbols added ("alice1990!"). */
function resemblesEmail(pw: string, email: string): boolean {
  const address = email.trim().toLowerCase();
  const local = address.split("@")[0] ?? "";
  if (address && pw.toLowerCase().includes(address)) return true;
  const localKey = lettersAndDigits(local);
  if (localKey.length >= 5 && lettersAndDigits(pw).includes(localKey)) return true;
  const localLetters = lettersOnly(local);
  return localLetters.length > 0 && lettersOnly(pw) === localLetters;
}
