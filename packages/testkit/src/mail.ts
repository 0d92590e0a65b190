// Reading what the mesh's SMTP server received: the subjects notify sends, and the codes in them.
import assert from "node:assert/strict";
import type { ReceivedMail } from "@protomesh/devkit";
import { rememberSecrets } from "./logs.ts";
import type { Mesh } from "./mesh.ts";

/** Subjects of the emails notify sends (services/notify/src/templates.ts). */
export const MAIL = {
  verify: "Confirm your email address",
  signIn: "Your sign-in code",
  reset: "Reset your password",
  enableMfa: "Turn on two-step sign-in",
  stepUp: "Confirm it's you",
  welcome: "Welcome to Protomesh",
  newDevice: "New sign-in to your Protomesh account",
  passwordChanged: "Your password was changed",
  passwordReset: "Your password was reset",
  mfaOn: "Two-step sign-in turned on",
  deleted: "Your Protomesh account was deleted",
} as const;

/** Waits for a mail to `to` with this subject (already here or still to come). */
export const mailTo = (mesh: Mesh, to: string, subject: string) =>
  mesh.smtp.waitFor((m) => m.to.includes(to) && m.subject === subject);

/** The mails to `to` with this subject received so far. */
export const mailsTo = (mesh: Mesh, to: string, subject: string) =>
  mesh.smtp.messages.filter((m) => m.to.includes(to) && m.subject === subject);

/** The 6-digit code in a mail's text, remembered so the log check can find it if it leaks. */
export function codeIn(mail: ReceivedMail): string {
  const code = /\b(\d{6})\b/.exec(mail.text)?.[1];
  assert.ok(code, `no code in "${mail.subject}"`);
  rememberSecrets(code);
  return code;
}

/**
 * Runs action and returns the 6-digit code of the next mail to `to` with this subject that
 * arrives after the action started.
 */
export async function codeAfter(mesh: Mesh, to: string, subject: string, action: () => Promise<unknown>) {
  const seen = new Set(mesh.smtp.messages);
  await action();
  const mail = await mesh.smtp.waitFor((m) => !seen.has(m) && m.to.includes(to) && m.subject === subject);
  return codeIn(mail);
}
