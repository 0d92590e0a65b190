// The gateway's word for the client address it forwards. Services believe `x-forwarded-for` only
// from a caller that proves it is the gateway (or a mesh service); anyone else could claim any
// address and dodge auth's per-address throttling or forge the IPs its sessions record.
import { createHs256Credentials, createHs256Verifier } from "./caller.ts";

/** Metadata that carries the gateway credential (a JWT keyed by GATEWAY_SECRET). */
export const GATEWAY_TOKEN_HEADER = "x-gateway-token";

// Distinct from the mesh token's audience and type, so neither can pass for the other even if an
// operator gave both secrets the same value.
const GATEWAY_AUDIENCE = "protomesh-gateway";
const GATEWAY_TOKEN_TYPE = "gateway+jwt";
/** The longest a gateway credential lives; verifiers refuse anything issued for longer. */
export const GATEWAY_TOKEN_TTL_S = 300;

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
 * no longer than GATEWAY_TOKEN_TTL_S, and not expired.
 */
export function createGatewayVerifier(secret: string): (token: string) => Promise<unknown> {
  return createHs256Verifier({
    secret,
    audience: GATEWAY_AUDIENCE,
    type: GATEWAY_TOKEN_TYPE,
    ttlS: GATEWAY_TOKEN_TTL_S,
    refusal: "invalid gateway credentials",
  });
}
