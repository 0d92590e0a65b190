// The gateway's word for the client address it forwards. Services believe `x-forwarded-for` only
// from a caller that proves it is the gateway (or a mesh service); anyone else could claim any
// address and dodge auth's per-address throttling or forge the IPs its sessions record.
import { jwtVerify } from "jose";
import { createHs256Credentials, issuedWithin } from "./caller.ts";
import { Code, ConnectError } from "./errors.ts";

/** Metadata that carries the gateway credential (a JWT keyed by GATEWAY_SECRET). */
export const GATEWAY_TOKEN_HEADER = "x-gateway-token";

// Distinct from the mesh token's audience and type, so neither can pass for the other even if an
// operator gave both secrets the same value.
const GATEWAY_AUDIENCE = "protomesh-gateway";
const GATEWAY_TOKEN_TYPE = "gateway+jwt";
/** The longest a gateway credential lives; verifiers refuse anything issued for longer. */
export const GATEWAY_TOKEN_TTL_S = 300;
// Clocks of two pods differ a little; more than this is a token minted in the future.
const CLOCK_SKEW_S = 5;
const VERIFIED_CACHE_SIZE = 64;
const encoder = new TextEncoder();

/**
 * The credential the gateway sends with every call: a short-lived HS256 JWT keyed by
 * GATEWAY_SECRET. It proves only that the forwarded client address is the gateway's; it grants
 * no access (services never treat it as a mesh caller).
 */
export function createGatewayCredentials(secret: string): { token(): Promise<string> } {
  return createHs256Credentials({
    secret,
    subject: "gateway",
    audience: GATEWAY_AUDIENCE,
    type: GATEWAY_TOKEN_TYPE,
    ttlS: GATEWAY_TOKEN_TTL_S,
  });
}

/**
 * Checks a gateway credential; throws UNAUTHENTICATED unless it is one the gateway issued, for
 * no longer than GATEWAY_TOKEN_TTL_S, and not expired. Verified tokens are remembered until
 * they expire: every call through the gateway carries one of a handful of tokens.
 */
export function createGatewayVerifier(secret: string): (token: string) => Promise<void> {
  const key = encoder.encode(secret);
  const verified = new Map<string, number>();
  return async (token) => {
    const until = verified.get(token);
    if (until !== undefined && until > Date.now()) return;
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ["HS256"],
        audience: GATEWAY_AUDIENCE,
        typ: GATEWAY_TOKEN_TYPE,
        requiredClaims: ["sub", "iat", "exp"],
        maxTokenAge: GATEWAY_TOKEN_TTL_S + CLOCK_SKEW_S,
        clockTolerance: CLOCK_SKEW_S,
      });
      if (!issuedWithin(payload, GATEWAY_TOKEN_TTL_S)) throw new Error("lifetime");
      const exp = payload.exp ?? 0;
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.clear();
      verified.set(token, exp * 1000);
    } catch {
      throw new ConnectError("invalid gateway credentials", Code.Unauthenticated);
    }
  };
}
