import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from "node:crypto";
import {
  ACCESS_TOKEN_ALG,
  ACCESS_TOKEN_TYPE,
  type AccessTokenVerifier,
  createAccessTokenVerifier,
  type Logger,
  type RevocationList,
} from "@protomesh/platform";
import { exportJWK, generateKeyPair, importJWK, type JSONWebKeySet, type JWK, SignJWT } from "jose";
import type { AuthStore, StoredKey } from "./pg-auth-store.ts";

/** Encrypts with AES-256-GCM; the output is iv (12) | tag (16) | ciphertext. */
export function seal(key: Buffer, plain: string): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const body = Buffer.concat([cipher.update(plain, "utf8"), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

/** Decrypts what seal made; throws if it was tampered with or sealed with another key. */
export function open(key: Buffer, sealed: Buffer): string {
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, 12));
  decipher.setAuthTag(sealed.subarray(12, 28));
  return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]).toString("utf8");
}

/** What an access token says about its holder. */
export interface AccessClaims {
  userId: string;
  sessionId: string;
  roles: string[];
  /** The account's email, so a service can write to the buyer without asking user. */
  email: string;
  emailVerified: boolean;
}

type SigningKey = { kid: string; privateKey: CryptoKey | Uint8Array };

/**
 * The keys that sign access tokens. A new key is made when the newest is older than the
 * rotation period; the previous one stays in the JWKS, so tokens it signed keep verifying
 * until they expire and rotation signs nobody out. Keys live in the database so that every
 * replica signs with the same key.
 */
export function createKeyRing(opts: {
  store: AuthStore;
  encryptionKey: Buffer;
  rotationS: number;
  accessTokenTtlS: number;
  issuer: string;
  audience: string;
  log: Logger;
}) {
  let current: SigningKey | undefined;
  let published: StoredKey[] = [];
  let loadedAt = 0;

  const load = async () => {
    let keys = await opts.store.listKeys(2);
    const newest = keys[0];
    if (!newest || Date.now() - newest.createdAt.getTime() > opts.rotationS * 1000) {
      const { publicKey, privateKey } = await generateKeyPair(ACCESS_TOKEN_ALG, {
        crv: "Ed25519",
        extractable: true,
      });
      const kid = randomUUID();
      const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: ACCESS_TOKEN_ALG, use: "sig" };
      const privateJwk = await exportJWK(privateKey);
      // Replicas racing here each add a key; the newest simply wins, older ones stay published.
      await opts.store.addKey(kid, publicJwk, seal(opts.encryptionKey, JSON.stringify(privateJwk)));
      opts.log.info({ kid }, "created a new signing key");
      keys = await opts.store.listKeys(2);
    }
    const signing = keys[0];
    if (!signing) throw new Error("no signing key");
    if (current?.kid !== signing.kid) {
      const jwk = JSON.parse(open(opts.encryptionKey, signing.privateJwkEnc)) as JWK;
      current = {
        kid: signing.kid,
        privateKey: await importJWK(jwk, ACCESS_TOKEN_ALG),
      };
    }
    published = keys;
    loadedAt = Date.now();
  };

  const fresh = async () => {
    // Re-read now and then so a key another replica rotated in is picked up.
    if (!current || Date.now() - loadedAt > 60_000) await load();
    return current as SigningKey;
  };

  const jwks = async (): Promise<JSONWebKeySet> => {
    await fresh();
    return { keys: published.map((k) => k.publicJwk) };
  };

  return {
    load,
    jwks,
    /** Verifies exactly as every other service does, against our own JWKS. */
    verifier: (revoked?: RevocationList): AccessTokenVerifier =>
      createAccessTokenVerifier({
        fetchJwks: jwks,
        issuer: opts.issuer,
        audience: opts.audience,
        ...(revoked ? { revoked } : {}),
      }),
    /** Signs an access token; returns it with its expiry. */
    async sign(claims: AccessClaims) {
      const key = await fresh();
      const expiresAt = new Date((Math.floor(Date.now() / 1000) + opts.accessTokenTtlS) * 1000);
      const token = await new SignJWT({
        sid: claims.sessionId,
        roles: claims.roles,
        email: claims.email,
        email_verified: claims.emailVerified,
      })
        .setProtectedHeader({ alg: ACCESS_TOKEN_ALG, kid: key.kid, typ: ACCESS_TOKEN_TYPE })
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setSubject(claims.userId)
        .setJti(randomUUID())
        .setIssuedAt()
        .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
        .sign(key.privateKey);
      return { token, expiresAt };
    },
  };
}

export type KeyRing = ReturnType<typeof createKeyRing>;
