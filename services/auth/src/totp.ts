// Authenticator-app codes (RFC 6238: SHA-1, 6 digits, 30 s, what every app supports) through the
// otpauth library. Secrets are sealed at rest with key-ring.ts's seal/open.
import { Secret, TOTP } from "otpauth";

const ISSUER = "Protomesh";
const PERIOD_S = 30;

const totpFor = (secret: string, email = "") =>
  new TOTP({
    issuer: ISSUER,
    label: email,
    secret: Secret.fromBase32(secret),
    algorithm: "SHA1",
    digits: 6,
    period: PERIOD_S,
  });

/** A new 160-bit secret (RFC 4226's recommended size), base32 as apps expect it. */
export const newTotpSecret = (): string => new Secret({ size: 20 }).base32;

/** The otpauth://totp/Protomesh:<email>?secret=…&issuer=Protomesh URI an app scans as a QR code. */
export const totpUri = (secret: string, email: string): string => totpFor(secret, email).toString();

/**
 * The time step a code is valid for, allowing one step of clock drift either way; undefined
 * for a wrong code. The caller must accept each step at most once (replay protection).
 * otpauth compares in constant time.
 */
export function totpStep(secret: string, code: string, now = Date.now()): number | undefined {
  const delta = totpFor(secret).validate({ token: code, timestamp: now, window: 1 });
  return delta === null ? undefined : Math.floor(now / 1000 / PERIOD_S) + delta;
}
