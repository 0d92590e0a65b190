// Domain ↔ protobuf for auth: the only place that builds auth's response messages.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type {
  ClaimsSchema,
  JwkSchema,
  SessionSchema,
  TokensSchema,
} from "@protomesh/contracts/auth/v1/auth_pb";
import type { UserIdentity } from "@protomesh/platform";
import type { JWK } from "jose";
import type { SessionInfo } from "./pg-auth-store.ts";

/** A signed access token and the refresh token of the same session. */
export function toTokens(
  access: { token: string; expiresAt: Date },
  refresh: { refreshToken: string; refreshExpiresAt: Date },
): MessageInitShape<typeof TokensSchema> {
  return {
    accessToken: access.token,
    accessTokenExpireTime: timestampFromDate(access.expiresAt),
    refreshToken: refresh.refreshToken,
    refreshTokenExpireTime: timestampFromDate(refresh.refreshExpiresAt),
  };
}

/** The verified claims of an access token. */
export function toClaims(
  id: UserIdentity,
  token: { issuer: string; audience: string },
): MessageInitShape<typeof ClaimsSchema> {
  return {
    userId: id.userId,
    sessionId: id.sessionId,
    roles: id.roles,
    issuer: token.issuer,
    audience: token.audience,
    tokenId: id.tokenId,
    issueTime: timestampFromDate(id.issuedAt),
    expireTime: timestampFromDate(id.expiresAt),
    // The platform's identity gains emailVerified with requireVerifiedEmail; until then, false.
    emailVerified: (id as UserIdentity & { emailVerified?: boolean }).emailVerified === true,
  };
}

/** A user's sessions, the one the call was made with marked current. */
export function toSessions(
  sessions: SessionInfo[],
  currentId: string,
): MessageInitShape<typeof SessionSchema>[] {
  return sessions.map((s) => ({
    id: s.sessionId,
    device: s.device,
    ip: s.ip,
    createTime: timestampFromDate(s.createdAt),
    lastUsedTime: timestampFromDate(s.lastUsedAt),
    current: s.sessionId === currentId,
  }));
}

/** A public signing key, with only the JWK members a verifier needs. */
export function toJwk(k: JWK): MessageInitShape<typeof JwkSchema> {
  return {
    kty: k.kty ?? "",
    crv: String(k.crv ?? ""),
    x: String(k.x ?? ""),
    kid: k.kid ?? "",
    alg: k.alg ?? "",
    use: k.use ?? "",
  };
}
