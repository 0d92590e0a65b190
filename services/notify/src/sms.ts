// Text messages through a provider chosen by SMS_PROVIDER. No provider logs a message's text:
// it may hold a one-time code.
import type { NotifyConfig } from "./config.ts";

/** Sends one text message; rejects when the provider did not take it (the caller retries). */
export interface SmsProvider {
  /** `id` lets a provider drop a duplicate of the same message. */
  send(to: string, text: string, id: string): Promise<void>;
}

/** Thrown when no SMS provider is configured (SMS_PROVIDER=none). */
export class SmsNotConfiguredError extends Error {
  constructor() {
    super("no SMS provider is configured (SMS_PROVIDER=none)");
  }
}

/** The provider SMS_PROVIDER names. */
export function createSmsProvider(
  config: Pick<NotifyConfig, "smsProvider" | "smsWebhookUrl" | "smsTimeoutMs">,
  out: (line: string) => void = (line) => process.stdout.write(line),
): SmsProvider {
  switch (config.smsProvider) {
    case "console":
      return createConsoleSms(out);
    case "webhook":
      return createWebhookSms(config.smsWebhookUrl, config.smsTimeoutMs);
    case "none":
      return {
        send: async () => {
          throw new SmsNotConfiguredError();
        },
      };
  }
}

/**
 * Development sink: prints the message for the person at the keyboard, in a block that no log
 * collector would take for a JSON log line (`npm start` shows it as `[notify] SMS to …`).
 */
export function createConsoleSms(out: (line: string) => void): SmsProvider {
  return {
    async send(to, text) {
      out(`SMS to ${to}:\n${text.replace(/^/gm, "    ")}\n`);
    },
  };
}

/** POSTs JSON {to, text, id} to a provider's (or a relay's) webhook; any non-2xx answer is a failure. */
export function createWebhookSms(url: string, timeoutMs: number): SmsProvider {
  return {
    async send(to, text, id) {
      let res: Response;
      try {
        res = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ to, text, id }),
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (err) {
        // The message says where it failed, never what was sent.
        throw new Error(`SMS webhook unreachable: ${(err as Error).cause ?? (err as Error).name}`);
      }
      await res.body?.cancel();
      if (!res.ok) throw new Error(`SMS webhook answered ${res.status}`);
    },
  };
}
