// Access tokens with the header and claims auth's have (but no email), for tests of whatever
// checks them without auth.
import { randomUUID } from "node:crypto";
import { ACCESS_TOKEN_ALG, ACCESS_TOKEN_TYPE } from "@protomesh/platform";
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";

/**
 * A new signing key: its public half as a JWK (a key set is `{ keys: [jwk] }`), and `sign`,
 * which makes an access token of a new session, issued now for 15 minutes; `claims` (times in
 * seconds since the epoch) override any of that.
 */
export async function accessTokenSigner() {
  const { publicKey, privateKey } = await generateKeyPair(ACCESS_TOKEN_ALG, { crv: "Ed25519" });
  const kid = randomUUID();
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: ACCESS_TOKEN_ALG, use: "sig" };
  const sign = (claims: JWTPayload = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({
      iss: "protomesh",
      aud: "protomesh",
      sub: randomUUID(),
      sid: randomUUID(),
      jti: randomUUID(),
      roles: ["user"],
      iat: now,
      exp: now + 15 * 60,
      ...claims,
    })
      .setProtectedHeader({ alg: ACCESS_TOKEN_ALG, typ: ACCESS_TOKEN_TYPE, kid })
      .sign(privateKey);
  };
  return { jwk, sign };
}
