import { Code, fail, retryLater } from "@protomesh/platform";
import type { SignInThrottleConfig } from "./config.ts";
import type { ThrottleStore } from "./pg-throttle-store.ts";

/** The one answer for an unknown email, a wrong password and a locked account. */
export const BAD_CREDENTIALS = "wrong email or password";

const accountKey = (email: string) => `account:${email}`;
const ipKey = (ip: string) => `ip:${ip}`;

/** A counted sign-in attempt: report how it ended. */
export interface SignInAttempt {
  /** The password was right: the account's count starts over. */
  succeeded(): Promise<void>;
  /** The password was never checked (queue full, caller gone): the attempt does not count. */
  abandoned(): Promise<void>;
}

/**
 * Throttles failed sign-ins per account (keyed by the normalised email, so unknown emails
 * behave exactly like real ones) and per client address, as NIST 800-63B asks: a growing
 * back-off after a few consecutive failures, and a lock at a hard limit, during which even the
 * right password gets the answer a wrong one gets.
 */
export function createSignInThrottle(store: ThrottleStore, config: SignInThrottleConfig) {
  return {
    /** Counts an attempt before the password is checked; throws if the account or address must wait. */
    async attempt(email: string, ip: string): Promise<SignInAttempt> {
      const account = accountKey(email);
      const address = ipKey(ip);
      const blocked = await store.attempt([
        { key: account, free: config.accountFreeFailures, max: config.accountMaxFailures },
        { key: address, free: config.ipFreeFailures, max: config.ipMaxFailures },
      ]);
      if (blocked?.key === account) {
        if (blocked.locked) throw fail(Code.Unauthenticated, BAD_CREDENTIALS);
        throw retryLater("too many failed sign-ins; try again later", blocked.retryMs);
      }
      if (blocked)
        throw retryLater("too many failed sign-ins from this address; try again later", blocked.retryMs);
      return {
        succeeded: async () => {
          await store.clear(account);
          await store.takeBack(address);
        },
        abandoned: async () => {
          await store.takeBack(account);
          await store.takeBack(address);
        },
      };
    },

    /** Forgets an account's failed sign-ins: call after a successful password reset. */
    clearFailures: (email: string) => store.clear(accountKey(email)),
  };
}

export type SignInThrottle = ReturnType<typeof createSignInThrottle>;
